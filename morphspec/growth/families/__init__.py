"""Growth families: each fills the student's tensors from the teacher's by its own rule."""

from __future__ import annotations

from morphspec.growth.families.r2r import R2R, GrowOptions
from morphspec.growth.plan import Plan

__all__ = ["FAMILIES", "R2R", "GrowOptions", "make_family"]

FAMILIES = {"r2r": R2R}


def make_family(name: str, plan: Plan, options: GrowOptions) -> R2R:
    """The family `name` for `plan`; its constructor refuses what it cannot do exactly."""
    return FAMILIES[name](plan, options)
