"""Norm-preserving lifts: widening a stream that passes through layernorm or rmsnorm.

A norm's statistics mix the channels of its input, so R2R's (U, U) pairs, Net2Net's
random copies and NetMorph's zeros all change them. Three lifts keep them exactly, for a
space widened from n to n' channels (docs/transformers.md derives each):

**Duplication** (n' = k·n; the student keeps each norm's eps): every tensor of the space
carries k copies of the teacher's, `x -> [x, ..., x]`.

- producers (embedding and position-embedding columns, o_proj and down_proj rows, biases)
  and channel-wise parameters (norm gains and shifts) are repeated k times;
- a norm of [x, ..., x] sees mean (1/kn)·k·Σx = μ and variance (1/kn)·k·Σ(x−μ)² = σ²
  (mean square likewise), so it normalises every copy exactly as before, same eps;
- consumers (q/k/v, up/gate projections, an untied head) read k copies of each channel:
  columns W/k each (Net2Net, NetMorph; W/2 is exact in binary floating point), or, in
  R2R, W/k + R_j on copies j ≥ 1 and W/k − ΣR_j on the first, R free;
- a head tied to the embedding (`linear: {tie: ...}`) reads the repeated columns
  [E, ..., E], so it would compute k·E·y: the norm right before it gets gain and shift
  divided by k, and the head reads [y/k, ..., y/k], which sums to E·y.

**Zero-fill** (rmsnorm only, any n' > n; the student's eps is eps·n/n'): producers write
zero to the new channels, so the mean square over n' channels is (n/n')·ms, and
`γ'·x/√((n/n')·ms + eps·n/n') = γ'·√(n'/n)·x/√(ms + eps)`: old gains γ' = γ·√(n/n')
give the teacher's output; the new channels stay 0 and are read with free columns.

**Mean-fill** (layernorm only, any n' > n; the student's eps is eps·n/n'): every producer's
new rows are the mean of its old rows, so by linearity each new channel of the stream
holds μ, the mean of the old ones. Then the mean over n' channels is μ, the variance is
(n/n')·σ², and as above old gains γ·√(n/n') (shifts kept) give the teacher's output; a
new channel normalises to 0 and gets shift 0, so it outputs 0 and is read freely. (The
mean mixes teacher entries, so an optimizer's state cannot follow it: growth.optim
refuses.)

The student's eps chooses: eps·n/n' on every norm of the space asks for a fill, the same
eps for duplication. Anything else is refused with the reason; so is a tied head whose
stream widens without a lift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from morphspec.arch.nodes import Arch, Node
from morphspec.errors import Problem
from morphspec.growth.graph import ChannelSpace, SpaceGraph
from morphspec.growth.kinds import rule_of

if TYPE_CHECKING:
    import torch

__all__ = ["Lift", "LiftFacts", "check_lifts", "lift_consume", "lift_produce"]


@dataclass(frozen=True)
class Lift:
    """How one space through norms widens from `old` to `new` channels."""

    kind: Literal["duplicate", "zero", "mean"]
    old: int
    new: int

    @property
    def k(self) -> int:
        return self.new // self.old


def leaf_list(root: Node) -> list[Node]:
    """The layers of `root` in execution order (containers left out)."""
    return [n for n in root.walk() if not n.is_container]


def _fill(norm: Node) -> Literal["mean", "zero"] | None:
    rule = rule_of(norm.kind)
    return rule.fill_lift if rule is not None else None


def _choose(teacher: Arch, student: Arch, space: ChannelSpace, a: int) -> Lift | Problem:
    """The lift the student's eps asks for, or why there is none."""
    n2 = space.size
    t_paths = {n.path for n in teacher.nodes()}
    norms = [student.node(p) for p in space.mixing_norms]
    old = [n for n in norms if n.path in t_paths]
    kinds = {n.kind for n in norms}
    same = all(n.args["eps"] == teacher.node(n.path).args["eps"] for n in old)
    scaled = all(
        math.isclose(n.args["eps"], teacher.node(n.path).args["eps"] * a / n2, rel_tol=1e-9)
        for n in old
    )
    fill = _fill(norms[0]) if len(kinds) == 1 else None
    if scaled and fill is not None:
        return Lift(fill, a, n2)
    if same and n2 % a == 0:
        return Lift("duplicate", a, n2)
    norm = norms[0]
    eps = teacher.node(norm.path).args["eps"] if norm.path in t_paths else norm.args["eps"]
    why = (
        f"keep each eps and grow to a multiple of {a} (duplication, x -> [x, x])"
        if n2 % a
        else f"keep each eps ({eps!r}) for duplication (x -> [x, x])"
    )
    lift = (
        f", or set every norm's eps to eps·{a}/{n2} ({eps * a / n2!r} here) for the"
        f" {fill}-fill lift"
        if fill is not None
        else f" (a space with both {' and '.join(sorted(kinds))} has no fill lift)"
        if len(kinds) > 1
        else f" ({norm.kind} has no fill lift)"
    )
    return Problem(
        f"channel space '{space.label}' ({a} -> {n2} channels) passes through {norm.kind}"
        f" '{norm.path}', whose statistics mix channels, and no exact lift fits: {why}{lift}",
        norm.mark,
    )


@dataclass(frozen=True)
class LiftFacts:
    """What the lift stage found: each widened space through a norm and its lift
    (`lifts`), and the norm tensors to divide (`scaled`: fills' gains, a tied head's norm)."""

    lifts: dict[int, Lift] = field(default_factory=dict)
    scaled: dict[str, float] = field(default_factory=dict)


def check_lifts(
    teacher: Arch, student: Arch, graph: SpaceGraph, sizes: Mapping[int, int], exact: bool
) -> tuple[LiftFacts, list[Problem]]:
    """The lift stage: the lift of each widened space that passes through a norm and the
    norm tensors to divide, or why not."""
    problems: list[Problem] = []
    lifts: dict[int, Lift] = {}
    scaled: dict[str, float] = {}
    for space in graph.spaces:
        a = sizes[space.id]
        if not (a and space.size > a and space.mixing_norms and exact):
            continue
        lift = _choose(teacher, student, space, a)
        if isinstance(lift, Problem):
            problems.append(lift)
            continue
        offset = next((p for p in space.mixing_norms if student.node(p).args.get("offset")), None)
        if lift.kind != "duplicate" and offset is not None:
            problems.append(Problem(
                f"channel space '{space.label}': the {lift.kind}-fill lift rescales norm gains,"
                f" and rmsnorm '{offset}' has an offset (its gain is offset + weight), so no"
                " factor on the weight does that; keep each eps and grow to a multiple"
                " (duplication)",
                student.node(offset).mark,
            ))  # fmt: skip
            continue
        lifts[space.id] = lift
        if lift.kind != "duplicate":
            for path in space.mixing_norms:
                scaled[student.node(path).key("weight")] = math.sqrt(space.size / a)
    order = leaf_list(student.root)
    for i, head in enumerate(order):
        tie = head.shared_weight()
        if tie is None or not exact:
            continue
        emb = student.node(tie)
        sid = next(sp.id for r, sp in graph.roles(emb.key("weight")) if r.kind == "producer")
        reads = graph.input_space[head.path]
        grows = {s for s in (sid, reads) if graph.spaces[s].size > sizes[s]}
        if not grows:
            continue
        if grows != {sid} or sid != reads or sid not in lifts:
            problems.append(Problem(
                f"'{head.path}' is tied to '{emb.path}' (tie), and the tied pair widens"
                f" ({sizes[sid]} -> {graph.spaces[sid].size} channels) without a"
                " norm-preserving lift of a stream that both write and read: the"
                " embedding's new columns would have to be written and read at once, which"
                " no family's rule makes exact. Untie the head in both specs, or keep the"
                " width",
                head.mark,
            ))  # fmt: skip
            continue
        if lifts[sid].kind != "duplicate":
            continue  # the head reads new channels that are 0: any columns will do
        before = order[i - 1] if i else None
        norm = rule_of(before.kind) if before is not None else None
        if before is None or norm is None or not norm.mixes_channels or not before.params:
            problems.append(Problem(
                f"'{head.path}' is tied to '{emb.path}', whose columns the duplication lift"
                " repeats, so the head would read k·E·y; a layernorm or rmsnorm with a gain"
                " right before the head absorbs 1/k, and there is none",
                head.mark,
            ))  # fmt: skip
            continue
        for p in before.params:
            scaled[before.key(p)] = lifts[sid].k
    return LiftFacts(lifts, scaled), problems


def lift_produce(v: torch.Tensor, d: int, lift: Lift, producer: bool) -> None:
    """New entries of a producer (rows, columns, biases) or channel-wise parameter."""
    a = lift.old
    old = v.narrow(d, 0, a)
    new = v.narrow(d, a, lift.new - a)
    if lift.kind == "duplicate":
        for j in range(1, lift.k):
            v.narrow(d, j * a, a).copy_(old)
    elif producer and lift.kind == "zero":
        new.zero_()
    elif producer:  # mean-fill: every new channel carries the mean of the old ones
        new.copy_(old.mean(d, keepdim=True).expand_as(new))


def lift_consume(v: torch.Tensor, d: int, lift: Lift, split: bool) -> None:
    """Columns of a duplicated space: W/k on every copy, or (`split`) W/k + R_j on copies
    j ≥ 1 and W/k − ΣR_j on the first, R_j the values already drawn for the new columns.
    A filled space's new channels are 0, so their columns stay free."""
    if lift.kind != "duplicate":
        return
    a = lift.old
    base = v.narrow(d, 0, a) / lift.k
    total = base.new_zeros(base.shape)
    for j in range(1, lift.k):
        new = v.narrow(d, j * a, a)
        if split:
            total.add_(new)
            new.add_(base)
        else:
            new.copy_(base)
    v.narrow(d, 0, a).copy_(base - total)
