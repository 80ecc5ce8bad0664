"""ODE refinement (multi-level, Chang et al. 2018): the approximate way to deepen a
reversible unit. h is divided by r and the steps multiplied by r, so the unit integrates the
same time span; student step j copies teacher step j // r (the step it refines). A finer
discretisation of the same ODE computes nearly, not exactly, the same function: `convert`
measures and reports the deviation, like randpad. Widening under it is randpad's (random).
Applies to hamiltonian, midpoint and leapfrog (growth/segments.py)."""

from __future__ import annotations

from morphspec.growth.families.randpad import RandPad

__all__ = ["OdeRefine"]


class OdeRefine(RandPad):
    name = "ode-refine"
