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

`memory: recompute` wraps the whole unit in one autograd Function that saves only its final
state (hamiltonian: the output; two-step units: the output U[N] and U[N-1]) and, during the
backward pass, runs the steps backwards to rebuild each step's input, then differentiates
that single step. Memory is O(1) in `steps`, at the cost of one more forward per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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


class HamiltonianStep(nn.Module):
    """One Verlet step of the two-layer Hamiltonian network on (Y, Z)."""

    def __init__(self, half: int, hidden: int, kernel: int, h: float, act: str):
        super().__init__()
        fan_in = half * kernel * kernel
        self.k1, self.b1 = _Kernel(hidden, half, kernel), _bias(hidden, fan_in)
        self.k2, self.b2 = _Kernel(hidden, half, kernel), _bias(hidden, fan_in)
        self.h = h
        self.act = activation(act)

    def forward(self, state: State) -> State:
        y, z = state
        y = y + self.h * _force(z, self.k1, self.b1, self.act)
        z = z - self.h * _force(y, self.k2, self.b2, self.act)
        return y, z

    def inverse(self, state: State) -> State:
        y, z = state
        z = z + self.h * _force(y, self.k2, self.b2, self.act)
        y = y - self.h * _force(z, self.k1, self.b1, self.act)
        return y, z


class TwoStep(nn.Module):
    """One step of the midpoint or leapfrog scheme on (U[j-1], U[j]) -> (U[j], U[j+1])."""

    def __init__(self, scheme: str, first: bool, channels: int, hidden: int, kernel: int,
                 h: float, act: str):  # fmt: skip
        super().__init__()
        self.k, self.b = _Kernel(hidden, channels, kernel), _bias(hidden, channels * kernel**2)
        self.scheme, self.first, self.h = scheme, first, h
        self.act = activation(act)

    def forward(self, state: State) -> State:
        prev, cur = state
        f = _force(cur, self.k, self.b, self.act)
        h = self.h
        if self.scheme == "midpoint":
            nxt = cur - h * f if self.first else prev - 2 * h * f
        else:
            nxt = cur - (h * h / 2) * f if self.first else 2 * cur - prev - (h * h) * f
        return cur, nxt

    def inverse(self, state: State) -> State:
        cur, nxt = state
        if self.first:
            return cur, cur
        f = _force(cur, self.k, self.b, self.act)
        if self.scheme == "midpoint":
            return nxt + 2 * self.h * f, cur
        return 2 * cur - nxt - (self.h * self.h) * f, cur


class ReversibleUnit(nn.Module):
    """`steps` steps as children `0 … steps-1`; `recompute` backward rebuilds their inputs."""

    def __init__(self, kind: str, steps: Sequence[nn.Module], recompute: bool):
        super().__init__()
        self.kind = kind
        self.recompute = recompute
        for j, step in enumerate(steps):
            self.add_module(str(j), step)

    @property
    def steps(self) -> list[HamiltonianStep | TwoStep]:
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
        if unit.kind == "hamiltonian":
            state = unit.initial_state(saved[0])
            gy, gz = grad_out.chunk(2, dim=1)
            grads: State = (gy, gz)
        else:
            state = (saved[0], saved[1])
            grads = (torch.zeros_like(grad_out), grad_out)
        per_step: list[tuple[Tensor | None, ...]] = []
        for step in reversed(unit.steps):
            with torch.no_grad():
                prev = step.inverse(state)
            params = tuple(step.parameters())
            wanted = tuple(p for p in params if p.requires_grad)  # frozen ones get None
            with torch.enable_grad():
                inp = (prev[0].detach().requires_grad_(), prev[1].detach().requires_grad_())
                out = step(inp)
                got = torch.autograd.grad(out, (*inp, *wanted), grads, allow_unused=True)
            grads = (_or_zeros(got[0], inp[0]), _or_zeros(got[1], inp[1]))
            by_param = dict(zip(map(id, wanted), got[2:], strict=True))
            per_step.append(tuple(
                _or_zeros(by_param[id(p)], p) if p.requires_grad else None for p in params
            ))  # fmt: skip
            state = prev
        param_grads = [g for step_grads in reversed(per_step) for g in step_grads]
        needs_x = ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        return (None, unit.input_grad(grads) if needs_x else None, *param_grads)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    """An unused input (the first two-step step ignores U[-1]) has a zero gradient."""
    return grad if grad is not None else torch.zeros_like(like)


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


def build_unit(kind: str, args: dict[str, object], channels: int) -> ReversibleUnit:
    """The unit of a resolved node's `args` on `channels` input channels."""
    steps_n, hidden, kernel = int(args["steps"]), int(args["hidden"]), int(args["kernel"])  # type: ignore[call-overload]
    h, act = float(args["h"]), str(args["act"])  # type: ignore[arg-type]
    steps: list[nn.Module]
    if kind == "hamiltonian":
        steps = [HamiltonianStep(channels // 2, hidden, kernel, h, act) for _ in range(steps_n)]
    else:
        steps = [TwoStep(kind, j == 0, channels, hidden, kernel, h, act) for j in range(steps_n)]
    return ReversibleUnit(kind, steps, recompute=args["memory"] == "recompute")
