"""Variance-transfer rescaling (Yuan et al. 2023, as in GroMo) that keeps the function exact.

For each widened hidden space (one producer layer, one or more consumer layers, no residual
join) the teacher's producer weights are scaled by α and the consumers' by β:

| strategy | α (producer) | β (consumer) |
| --- | --- | --- |
| default_vt | 1 | √(h_t / h_{t+1}) |
| vt_constraint_old_shape | 1/√(fan_in₁ · Var W₁) | 1/√(h_t · k₂² · Var W₂) |
| vt_constraint_new_shape | 1/√(fan_in₁ · Var W₁) | 1/√(h_{t+1} · k₂² · Var W₂) |

so that Var(αW₁) = 1/fan_in₁ and Var(βW₂) = 1/(h·k₂²) with h the old (B) or new (C) width.
Var is the unbiased sample variance of the teacher's tensor. The consumer then sees its
input scaled by α and its weights by β, and the scale is compensated where it is exact:

- a batchnorm in the hidden space absorbs α in its statistics and 1/β in its affine output:
  for an input scaled by s, running_mean·s, running_var·s² and weight
  γ·√(s²v+ε)/(s·√(v+ε)) give exactly the old output (scaling the statistics alone would
  leave an ε error of relative size ~ε/v); weight and bias ·(1/β) then scale the output;
- ops between the scaled layers must be positively homogeneous (relu, leaky_relu, pooling,
  dropout, identity), so the scale passes through them unchanged;
- with no batchnorm in the hidden space, the consumer's output is scaled by c = αβ; a
  batchnorm right after the consumer absorbs it (the consumer's bias is scaled by c too);
- otherwise there is no exact compensation: refused, unless --allow-inexact, which applies
  α and β uncompensated (convert then reports the measured deviation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from morphspec.errors import Problem
from morphspec.growth.graph import ChannelSpace
from morphspec.growth.init import std_of
from morphspec.growth.kinds import rule_of
from morphspec.growth.options import RescaleMode
from morphspec.growth.plan import Plan

__all__ = ["RescaleMode", "Rescaler", "SpaceScale", "rescale"]

TensorGetter = Callable[[str], torch.Tensor]


def _homogeneous(kind: str) -> bool:
    rule = rule_of(kind)
    return rule is not None and rule.homogeneous


def _absorbs(kind: str) -> bool:
    """A batchnorm: running statistics that absorb an input scale exactly."""
    rule = rule_of(kind)
    return rule is not None and rule.absorbs_scale


def _plain_matrix(kind: str) -> bool:
    """A layer whose `weight` reads one space and writes another (linear, conv)."""
    rule = rule_of(kind)
    return rule is not None and rule.out_matrix() == "weight"


@dataclass
class SpaceScale:
    """The factors chosen for one hidden space (reported in the plan's JSON)."""

    space: str
    alpha: float
    beta: dict[str, float]
    compensation: str


@dataclass
class _BatchnormScale:
    s_in: float = 1.0
    s_out: float = 1.0


def rescale(
    plan: Plan, sizes: dict[int, int], mode: RescaleMode, get: TensorGetter | None = None,
    allow_inexact: bool = False,
) -> Rescaler:  # fmt: skip
    """The factors for `plan` (its spaces of teacher sizes `sizes`) and the problems found;
    `get` reads teacher tensors (the strategies measure their variance)."""
    r = Rescaler(plan, sizes, mode, get, allow_inexact)
    if mode == "none":
        return r
    if get is None:
        raise ValueError("rescaling needs the teacher's tensors")
    for space in plan.graph.spaces:
        if space.size > sizes[space.id] and sizes[space.id]:
            r._space(space)
    return r


@dataclass
class Rescaler:
    """Scales teacher tensors as the strategy says and compensates the scale exactly. Made by
    `rescale()`: plain data in (plan, sizes, mode, getter), factors and problems out."""

    plan: Plan
    sizes: dict[int, int]
    mode: RescaleMode = "none"
    get: TensorGetter | None = None
    allow_inexact: bool = False
    problems: list[Problem] = field(default_factory=list)
    factors: dict[str, float] = field(default_factory=dict)
    batchnorms: dict[str, _BatchnormScale] = field(default_factory=dict)
    scales: list[SpaceScale] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)

    # -- planning ---------------------------------------------------------------------------
    def _space(self, space: ChannelSpace) -> None:
        plan, mode = self.plan, self.mode
        producers = {r.node for r in space.producers()}
        consumers = {r.node for r in space.consumers()}
        nodes = [plan.student.node(p) for p in producers | consumers]
        t_shapes = plan.teacher.state_shapes()
        if (
            len(producers) != 1
            or len(consumers) != 1
            or len(space.edges) != 1
            or not all(_plain_matrix(n.kind) for n in nodes)
            or any(n.key("weight") not in t_shapes for n in nodes)
        ):
            # Not one layer feeding one layer (a residual stream, a stem read by a block and
            # its projection, an mlp): the strategies are defined for hidden layers only.
            why = "not a hidden layer between one producer and one consumer: left as is"
            self.scales.append(SpaceScale(space.label, 1.0, {}, why))
            return
        (producer,), (consumer,) = producers, consumers
        assert self.get is not None
        w1, w2 = self.get(f"{producer}.weight"), self.get(f"{consumer}.weight")
        h_t, h_new = self.sizes[space.id], space.size
        fan_in_1 = math.prod(w1.shape[1:])
        per_channel = math.prod(w2.shape[1:]) // h_t  # k² (or H·W after a flatten)
        var1, var2 = std_of(w1) ** 2, std_of(w2) ** 2
        if mode == "default_vt":
            alpha, beta = 1.0, math.sqrt(h_t / h_new)
        elif var1 == 0 or var2 == 0:
            why = "the teacher's weights have zero variance (one entry, or all equal): left as is"
            self.scales.append(SpaceScale(space.label, 1.0, {}, why))
            return
        else:
            alpha = 1.0 / math.sqrt(fan_in_1 * var1)
            h = h_t if mode == "vt_constraint_old_shape" else h_new
            beta = 1.0 / math.sqrt(h * per_channel * var2)
        betas = {consumer: beta}
        compensation = self._compensate(space, producer, alpha, betas)
        self.scales.append(SpaceScale(space.label, alpha, betas, compensation))

    def _compensate(
        self, space: ChannelSpace, producer: str, alpha: float, betas: dict[str, float]
    ) -> str:
        self._scale(f"{producer}.weight", alpha)
        self._scale(f"{producer}.bias", alpha)
        for node, beta in betas.items():
            self._scale(f"{node}.weight", beta)
        bns = [p for p, k in space.ops if _absorbs(k)]
        others = [(p, k) for p, k in space.ops if not _absorbs(k) and not _homogeneous(k)]
        if others:
            return self._no_exact(
                space, f"{others[0][1]} '{others[0][0]}' is not positively homogeneous"
            )
        if len(bns) == 1 and len(set(betas.values())) == 1:
            bn = self.batchnorms.setdefault(bns[0], _BatchnormScale())
            bn.s_in *= alpha
            bn.s_out /= next(iter(betas.values()))
            return f"batchnorm '{bns[0]}' absorbs α in its statistics and 1/β in its affine output"
        if bns:
            return self._no_exact(
                space, "it holds several batchnorms, or consumers with different β"
            )
        notes = []
        for node, beta in betas.items():
            c = alpha * beta
            if abs(c - 1.0) < 1e-12:
                continue
            after = self._batchnorm_after(node)
            if after is None:
                return self._no_exact(
                    space, f"no batchnorm in it or right after '{node}' to absorb c = αβ = {c:.4g}"
                )
            self._scale(f"{node}.bias", c)
            self.batchnorms.setdefault(after, _BatchnormScale()).s_in *= c
            notes.append(f"batchnorm '{after}' absorbs c = αβ after '{node}'")
        return "; ".join(notes) or "αβ = 1"

    def _batchnorm_after(self, node: str) -> str | None:
        """The batchnorm that follows `node` in its own list, through homogeneous ops only
        (the end of a residual body is a sum with an unscaled tensor: the search stops)."""
        for parent in self.plan.student.nodes():
            paths = [c.path for c in parent.children]
            if node in paths:
                for sibling in parent.children[paths.index(node) + 1 :]:
                    if _absorbs(sibling.kind):
                        return sibling.path
                    if not _homogeneous(sibling.kind):
                        return None
        return None

    def _no_exact(self, space: ChannelSpace, why: str) -> str:
        message = f"--rescale {self.mode}: no exact compensation for space '{space.label}': {why}"
        if self.allow_inexact:
            self.inexact.append(message)
            return "none (inexact, --allow-inexact)"
        self.problems.append(
            Problem(message + "; pass --allow-inexact to convert anyway and report the deviation")
        )
        return "refused"

    def _scale(self, key: str, factor: float) -> None:
        if key in self.plan.student.state_shapes():
            self.factors[key] = self.factors.get(key, 1.0) * factor

    # -- tensors ----------------------------------------------------------------------------
    def touches(self, key: str) -> bool:
        """Whether rescaling changes the teacher's `key`."""
        return key in self.factors or key.rpartition(".")[0] in self.batchnorms

    def teacher(self, key: str, t: torch.Tensor) -> torch.Tensor:
        """The teacher's tensor after rescaling and compensation (unchanged when none)."""
        node, _, local = key.rpartition(".")
        f = self.factors.get(key, 1.0)
        bn = self.batchnorms.get(node)
        if f == 1.0 and bn is None:
            return t
        x = t.double() * f
        if bn is not None:
            s_in, s_out = bn.s_in, bn.s_out
            if local == "running_mean":
                x = x * s_in
            elif local == "running_var":
                x = x * s_in**2
            elif local in ("weight", "bias") and self.get is not None:
                if local == "weight":
                    v = self.get(f"{node}.running_var").double()
                    eps = self.plan.student.node(node).args["eps"]
                    x = x * torch.sqrt(s_in**2 * v + eps) / (s_in * torch.sqrt(v + eps))
                x = x * s_out
        return x.to(t.dtype)
