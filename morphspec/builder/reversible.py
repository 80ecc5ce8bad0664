"""Reversible ODE units (Chang et al. 2018) and the parameter-free `channel_pad`.

A unit runs `steps` steps of size `h`; step `j` is the child module `str(j)`, so its keys
are `<unit>.<j>.k1.weight`, `<unit>.<j>.b1`, ... (SPEC.md, docs/spec.md). Every step is an
exact bijection on the unit's *state*, which is a pair of tensors (Y, Z):

* `hamiltonian`: (Y, Z) are the two channel halves of the unit's input, and one step is
  the Verlet update `Y += h K1ᵀσ(K1 Z + b1)`, then `Z -= h K2ᵀσ(K2 Y + b2)` (the second
  uses the new Y). Inverse: `Z += h K2ᵀσ(K2 Y + b2)`, then `Y -= h K1ᵀσ(K1 Z + b1)`.
* `midpoint`, `leapfrog`: two-step schemes, so the state is the pair of the last two
  iterates, carried as (Y, Z) = (U[j-1], U[j]) over all channels; the unit's input is U[0]
  (the state starts as (U[0], U[0]); the special first step ignores the first component)
  and its output is U[N]. With f(U) = Kᵀσ(K U + b):
  - midpoint, F = -f: `U[j+1] = U[j-1] - 2h f(U[j])`, first step `U[1] = U[0] - h f(U[0])`.
    F is minus the gradient of Φ(U) = Σ S(K U + b) with S' = σ, so its Jacobian
    -Kᵀ diag(σ') K is symmetric negative semi-definite: the ODE is stable (report, eq. 2).
  - leapfrog: `U[j+1] = 2U[j] - U[j-1] - h² f(U[j])`, first step
    `U[1] = U[0] - h²/2 f(U[0])` (zero initial velocity: U[-1] = U[1]).
  Inverse of a regular step, from (U[j], U[j+1]): midpoint `U[j-1] = U[j+1] + 2h f(U[j])`,
  leapfrog `U[j-1] = 2U[j] - U[j+1] - h² f(U[j])`; the first step's inverse is (U[0], U[0]).

  SPEC.md's first steps need a single initial iterate, so the two-step units do not split
  their input's channels: splitting it into (U[j-1], U[j]) would leave the first step
  undefined. (The report's leapfrog first case, `2Y_1 - h²…`, is a slip: with zero initial
  velocity U[-1] = U[1], which gives SPEC.md's `U[0] - h²/2 f(U[0])`.)

`memory: recompute` wraps the whole unit in one autograd Function that saves only its final
state (hamiltonian: the output; two-step units: the output U[N] and U[N-1]) and, during the
backward pass, runs the steps backwards: each force f(source) evaluated to undo an update
also gives, through its graph, that update's vector-Jacobian product (`_Step.reverse`).
Memory is O(1) in `steps`, at the cost of one more evaluation of each force per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morphspec.builder.layers import activation

__all__ = [
    "ChannelPad",
    "HamiltonianStep",
    "ReversibleUnit",
    "TwoStep",
    "weight_smoothness",
]

State = tuple[Tensor, Tensor]


class ChannelPad(nn.Module):
    """Append zero channels (no parameters): the report's width doubling between units."""

    def __init__(self, out: int, channels_last: bool):
        super().__init__()
        self.out = out
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        dim = x.dim() - 1 if self.channels_last else 1
        extra = self.out - x.shape[dim]
        pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
        return F.pad(x, pad)


class _Kernel(nn.Module):
    """Holds one K (`weight`, shape [hidden, inner, k, k]) so its key reads `k1.weight`."""

    def __init__(self, hidden: int, inner: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden, inner, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as torch's Conv2d


def _bias(hidden: int, fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))


def _force(x: Tensor, kernel: _Kernel, bias: Tensor, act: nn.Module) -> Tensor:
    """Kᵀσ(K x + b); Kᵀ is the transposed conv with K's own weight, so the size is kept."""
    pad = (kernel.weight.shape[-1] - 1) // 2
    return F.conv_transpose2d(act(F.conv2d(x, kernel.weight, bias, padding=pad)), kernel.weight,
                              padding=pad)  # fmt: skip


@dataclass(frozen=True)
class _Update:
    """`state[target] = alpha·state[target] + beta·state[source] + gamma·f(state[source])`
    with f = Kᵀσ(K · + b) of kernel `k` and bias `b` (attribute names of the step).

    alpha = ±1 makes it invertible given the source, which it leaves unchanged:
    `old = alpha·(new - beta·source - gamma·f(source))`. alpha = 0 (the two-step units'
    first step, which ignores U[-1]) inverts to the placeholder the state starts with, the
    source itself. Its vector-Jacobian product: g_target_old = alpha·g_target,
    g_source += beta·g_target + (∂f/∂source)ᵀ(gamma·g_target).
    """

    target: int
    source: int
    alpha: float
    beta: float
    gamma: float
    k: str
    b: str


class _Step(nn.Module):
    """A step as a list of `_Update`s, then an optional swap of the two state slots."""

    updates: tuple[_Update, ...] = ()
    swap: bool = False

    def __init__(self, act: str):
        super().__init__()
        self.act = activation(act)

    def force(self, u: _Update, x: Tensor) -> Tensor:
        return _force(x, getattr(self, u.k), getattr(self, u.b), self.act)

    def forward(self, state: State) -> State:
        s = list(state)
        for u in self.updates:
            src = s[u.source]
            new = u.gamma * self.force(u, src)
            if u.beta:
                new = new + u.beta * src
            if u.alpha:
                new = new + u.alpha * s[u.target]
            s[u.target] = new
        return (s[1], s[0]) if self.swap else (s[0], s[1])

    def inverse(self, state: State) -> State:
        return self.reverse(state, None)[0]

    def reverse(
        self, state: State, grads: State | None
    ) -> tuple[State, State | None, dict[int, Tensor]]:
        """The step's input from its output and, when `grads` (of the output) are given, the
        gradients of its input and of its parameters (by id), from one evaluation of each f:
        the inverse needs f(source) anyway, so its graph also gives the vector-Jacobian product.
        """
        s = [state[1], state[0]] if self.swap else list(state)
        g = None if grads is None else ([grads[1], grads[0]] if self.swap else list(grads))
        param_grads: dict[int, Tensor] = {}
        for u in reversed(self.updates):
            src = s[u.source].detach()
            if g is None:
                f = self.force(u, src)
            else:
                params = [p for p in (getattr(self, u.k).weight, getattr(self, u.b))
                          if p.requires_grad]  # fmt: skip
                with torch.enable_grad():
                    leaf = src.requires_grad_()
                    f = self.force(u, leaf)
                    got = torch.autograd.grad(f, (leaf, *params), u.gamma * g[u.target])
                f = f.detach()
                g_target = g[u.target]
                g[u.source] = g[u.source] + got[0] + (u.beta * g_target if u.beta else 0)
                g[u.target] = u.alpha * g_target if u.alpha else torch.zeros_like(g_target)
                param_grads.update(zip(map(id, params), got[1:], strict=True))
            if u.alpha:
                old = s[u.target] - u.gamma * f
                if u.beta:
                    old = old - u.beta * src
                s[u.target] = u.alpha * old
            else:
                s[u.target] = src
        back = (s[0], s[1])
        return back, None if g is None else (g[0], g[1]), param_grads


class HamiltonianStep(_Step):
    """One Verlet step on (Y, Z): `Y += h K1ᵀσ(K1 Z + b1)`, then `Z -= h K2ᵀσ(K2 Y + b2)`."""

    def __init__(self, half: int, hidden: int, kernel: int, h: float, act: str):
        super().__init__(act)
        fan_in = half * kernel * kernel
        self.k1, self.b1 = _Kernel(hidden, half, kernel), _bias(hidden, fan_in)
        self.k2, self.b2 = _Kernel(hidden, half, kernel), _bias(hidden, fan_in)
        self.updates = (_Update(0, 1, 1.0, 0.0, h, "k1", "b1"),
                        _Update(1, 0, 1.0, 0.0, -h, "k2", "b2"))  # fmt: skip


class TwoStep(_Step):
    """One midpoint or leapfrog step, (U[j-1], U[j]) -> (U[j], U[j+1]): the new iterate is
    written over U[j-1]'s slot, then the slots are swapped. With f = Kᵀσ(K U + b):
    midpoint `U[j+1] = U[j-1] - 2h f(U[j])` (first: `U[0] - h f(U[0])`), leapfrog
    `U[j+1] = -U[j-1] + 2U[j] - h² f(U[j])` (first: `U[0] - h²/2 f(U[0])`)."""

    swap = True

    def __init__(self, scheme: str, first: bool, channels: int, hidden: int, kernel: int,
                 h: float, act: str):  # fmt: skip
        super().__init__(act)
        self.k, self.b = _Kernel(hidden, channels, kernel), _bias(hidden, channels * kernel**2)
        if scheme == "midpoint":
            coef = (0.0, 1.0, -h) if first else (1.0, 0.0, -2 * h)
        else:
            coef = (0.0, 1.0, -h * h / 2) if first else (-1.0, 2.0, -h * h)
        self.updates = (_Update(0, 1, *coef, "k", "b"),)


class ReversibleUnit(nn.Module):
    """`steps` steps as children `0 … steps-1`; `recompute` backward rebuilds their inputs."""

    stream_whole = True
    """Its steps read their kernels' weights directly (K and Kᵀ), so streamed verification
    (`morphspec.streamed`) loads the whole unit's tensors around the unit's forward."""

    def __init__(self, kind: str, steps: Sequence[_Step], recompute: bool):
        super().__init__()
        self.kind = kind
        self.recompute = recompute
        for j, step in enumerate(steps):
            self.add_module(str(j), step)

    @property
    def steps(self) -> list[_Step]:
        return list(self.children())  # type: ignore[arg-type]

    # (Y, Z) <-> tensors: see the module docstring
    def initial_state(self, x: Tensor) -> State:
        if self.kind == "hamiltonian":
            y, z = x.chunk(2, dim=1)
            return y, z
        return x, x

    def output(self, state: State) -> Tensor:
        return torch.cat(state, dim=1) if self.kind == "hamiltonian" else state[1]

    def input_grad(self, grads: State) -> Tensor:
        """Gradient of the input from the gradient of the initial state (the adjoint of
        `initial_state`: a split for hamiltonian, a copy into both slots otherwise)."""
        if self.kind == "hamiltonian":
            return torch.cat(grads, dim=1)
        return grads[0] + grads[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.recompute and torch.is_grad_enabled():
            out: Tensor = _Recompute.apply(self, x, *self.parameters())
            return out
        state = self.initial_state(x)
        for step in self.steps:
            state = step(state)
        return self.output(state)


class _Recompute(torch.autograd.Function):
    """One unit, saving only its final state; see the module docstring.

    Gradients are taken with `torch.autograd.grad` on freshly detached step inputs, never
    with `.backward()`, so nothing accumulates into `.grad` behind autograd's back: a leaf
    input gets exactly the one gradient this Function returns.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, unit: ReversibleUnit, x: Tensor,
                *params: Tensor) -> Tensor:  # fmt: skip
        state = unit.initial_state(x)
        for step in unit.steps:
            state = step(state)
        out = unit.output(state)
        ctx.unit = unit  # type: ignore[attr-defined]
        if unit.kind == "hamiltonian":
            ctx.save_for_backward(out)
        else:
            ctx.save_for_backward(state[0], out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[
        Tensor | None, ...
    ]:  # fmt: skip
        unit: ReversibleUnit = ctx.unit  # type: ignore[attr-defined]
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        grads: State
        if unit.kind == "hamiltonian":
            state = unit.initial_state(saved[0])
            gy, gz = grad_out.chunk(2, dim=1)
            grads = (gy, gz)
        else:
            state = (saved[0], saved[1])
            grads = (torch.zeros_like(grad_out), grad_out)
        by_param: dict[int, Tensor] = {}
        with torch.no_grad():
            for step in reversed(unit.steps):
                state, step_grads, got = step.reverse(state, grads)
                assert step_grads is not None
                grads = step_grads
                by_param.update(got)
        param_grads = [by_param.get(id(p)) for p in unit.parameters()]
        needs_x = ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        return (None, unit.input_grad(grads) if needs_x else None, *param_grads)


def weight_smoothness(model: nn.Module) -> Tensor:
    """Σ ‖W_j − W_{j−1}‖² over consecutive steps j of every reversible unit in `model`, all
    of a step's kernels and biases (Chang et al.'s weight-smoothness decay: it asks the
    parameters to vary smoothly in time, as an ODE's would). Add `λ · this` to the loss."""
    total: Tensor | None = None
    for unit in model.modules():
        if not isinstance(unit, ReversibleUnit):
            continue
        steps = unit.steps
        for before, after in itertools.pairwise(steps):
            for a, b in zip(before.parameters(), after.parameters(), strict=True):
                term = (b - a).pow(2).sum()
                total = term if total is None else total + term
    if total is None:
        first = next(model.parameters(), None)
        return torch.zeros((), dtype=first.dtype if first is not None else None)
    return total


def build_unit(kind: str, args: dict[str, Any], channels: int) -> ReversibleUnit:
    """The unit of a resolved node's `args` on `channels` input channels."""
    n, hidden, kernel = int(args["steps"]), int(args["hidden"]), int(args["kernel"])
    h, act = float(args["h"]), str(args["act"])
    steps: list[_Step]
    if kind == "hamiltonian":
        steps = [HamiltonianStep(channels // 2, hidden, kernel, h, act) for _ in range(n)]
    else:
        steps = [TwoStep(kind, j == 0, channels, hidden, kernel, h, act) for j in range(n)]
    return ReversibleUnit(kind, steps, recompute=args["memory"] == "recompute")
