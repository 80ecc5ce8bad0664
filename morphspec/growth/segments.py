"""Where a widened space's channels go when they are not simply appended, what tied
dimensions get, and the steps of reversible units (docs/growth.md, "Reversible units").

**Placement.** Every family fills a tensor in *append order* (the teacher's channels first,
the new ones after) and applies its rule there. A space whose channels are not laid out that
way is then permuted along each of its dimensions by `order`: append index -> student
position. That permutation is a relabelling of the space's channels, so it keeps whatever
the family's rule kept, except where a layer gives positions a meaning:

- `segments` (a hamiltonian's Y and Z halves): teacher channel i of segment s stays in
  segment s, at offset i - s·a/p: each segment grows at its own end, and Y and Z grow equally;
- `channel_pad`: its output is [input | zeros], so its output space is *derived*: the input's
  channels keep their places (the input's own order), the teacher's zero channels follow the
  student's input, and the new zero channels come last. A hamiltonian after a pad must find
  each teacher channel in its segment, which the report's doubling pad (out = 2·in) gives.
  The derived space's new channels are the input space's new channels and zeros, so its
  consumers follow the *input's* rule on the input's channels (R2R's [Z, -Z] on the input's
  pairs, Net2Net's divided columns, NetMorph's zeros); zero channels can be read with anything.

**Ties.** A reversible unit's K is read as K (x -> hidden) and as Kᵀ (hidden -> x). Each new
entry of a tied dimension is one number serving both roles, so a family fills it once: an
exact family sets it to 0, which every role accepts (a zero column reads nothing, a zero
row writes nothing). R2R's pairs need equal producer rows and opposite consumer columns,
which on one tied number means U = -U = 0; Net2Net's copies would divide columns that are
also Kᵀ's rows, so it refuses. With zero tied entries a unit is the identity on its new
channels and computes the same on its old ones; new hidden units write nothing back.

**New biases.** A new hidden unit (or a new step, K = 0) gets a bias b with σ(b) ≠ 0: at
K = 0, d/dK_r of K_rᵀσ(K_r x + b_r) is σ(b_r)·(...), so with σ(b) = 0 its K would get no
gradient and stay zero. b is drawn in [s/2, s], s = 1/√(fan_in) (torch's conv bound), so
σ(b) > 0 for every supported activation and the rows differ in size.

**Steps.** Appending steps with K = 0: a hamiltonian step is then the identity; a midpoint
step maps (U[j-1], U[j]) to (U[j], U[j-1]), so an even number of them is exact and an odd
one is not; a leapfrog step maps it to (U[j], 2U[j] - U[j-1]), an extrapolation, so no
exact deepening exists and `--family ode-refine` is the way (halve h, double the steps,
each new step a copy of the step it refines: approximate, its deviation measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

import torch

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.catalog import FamilyInfo
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.init import generator
from morphspec.growth.kinds import rule_of
from morphspec.growth.options import GrowOptions
from morphspec.growth.plan import Plan

__all__ = ["SegmentFacts", "check", "finish", "rule"]


@dataclass
class SegmentFacts:
    """What `check` found that filling reads (see the module docstring)."""

    order: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Append index -> student position, for each space not laid out in append order."""
    root: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    """For a derived (channel_pad) space: the space whose rule it follows, and where that
    space's append order sits in this space's append order."""
    bias_keys: set[str] = field(default_factory=set)
    """Biases of new steps: every entry gets σ(b) ≠ 0."""
    sources: dict[str, str] = field(default_factory=dict)
    """ode-refine: the teacher key each refined step's tensor copies."""
    zero_keys: set[str] = field(default_factory=set)
    """Kernels of new steps, which start at zero (exact families)."""


class Facts(Protocol):
    """What this module reads and writes of `families.base.Facts`."""

    sizes: dict[int, int]
    segments: SegmentFacts

    def widened(self, space: ChannelSpace) -> bool: ...


class Family(Protocol):
    """What this module uses of `families.base.Family` (a Protocol: base imports this)."""

    name: ClassVar[str]
    exact: ClassVar[bool]
    ties: ClassVar[Literal["zero", "random", "refuse"]]
    plan: Plan
    options: GrowOptions
    info: FamilyInfo
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def facts(self) -> Facts: ...
    def widened(self, space: ChannelSpace) -> bool: ...
    def applies_to(self, space: ChannelSpace) -> bool: ...
    def consume(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str) -> None: ...
    def produce(
        self, v: torch.Tensor, d: int, space: ChannelSpace, key: str, role: Role
    ) -> None: ...


def _segments(space: ChannelSpace) -> int:
    return max((r.layout.parts for r in space.roles if r.layout.kind == "segments"), default=1)


def _place(
    fam: Family, facts: Facts, seg: SegmentFacts, space: ChannelSpace,
    seen: dict[int, tuple[int, ...]], problems: list[Problem],
) -> tuple[int, ...]:  # fmt: skip
    """`order` of `space` (identity for append), derived spaces after their input's."""
    if space.id in seen:
        return seen[space.id]
    graph, sizes = fam.plan.graph, facts.sizes
    a, b = sizes[space.id], space.size
    order = tuple(range(b))
    pad = graph.pads.get(space.id)
    if pad is not None and a:
        src = graph.spaces[pad[0]]
        a_s, b_s = sizes[src.id], src.size
        zone_old, zone_new = a - a_s, (b - b_s) - (a - a_s)
        if zone_new < 0:
            node = fam.plan.student.node(pad[1])
            problems.append(Problem(
                f"channel_pad '{pad[1]}': its input grows from {a_s} to {b_s} channels but its"
                f" output only from {a} to {b}, so the teacher's {zone_old} zero channels would"
                f" not fit after it; grow 'out' to at least {b_s + zone_old}",
                node.mark,
            ))  # fmt: skip
            seen[space.id] = order
            return order
        p = _place(fam, facts, seg, src, seen, problems)
        parts = _segments(space)
        if parts > 1 and (a, b) == (2 * a_s, 2 * b_s) and parts == 2:
            # Y is the pad's input, Z its zeros: the zeros mirror the input's places, so each
            # tied K index l still pairs Y_l with Z_l (zero channels may go anywhere).
            kept, added = p[:a_s], p[a_s:]
            order = (*kept, *(b_s + i for i in kept), *added, *(b_s + i for i in added))
        else:
            order = (*p[:a_s], *range(b_s, b_s + zone_old), *p[a_s:],
                     *range(b_s + zone_old, b))  # fmt: skip
        base_id, base_idx = seg.root.get(src.id, (src.id, tuple(range(b_s))))
        seg.root[space.id] = (base_id, tuple(k if k < a_s else a + k - a_s for k in base_idx))
    parts = _segments(space)
    if parts > 1 and a:
        sa, sb = a // parts, b // parts
        if pad is None:
            more = (b - a) // parts
            order = (*(i // sa * sb + i % sa for i in range(a)),
                     *(j // more * sb + sa + j % more for j in range(b - a)))  # fmt: skip
        else:
            bad = [i for i in range(a) if i // sa != order[i] // sb]
            if bad or parts != 2 or (a, b) != (2 * sizes[pad[0]], 2 * graph.spaces[pad[0]].size):
                node = fam.plan.student.node(pad[1])
                problems.append(Problem(
                    f"channel space '{space.label}' is split into {parts} segments by a"
                    f" reversible unit, but channel_pad '{pad[1]}' puts the teacher's channel"
                    f" {bad[0] if bad else 0} into another segment in the student; a unit after a"
                    " pad grows with it when the pad doubles its input (out = 2·in) in both"
                    " the teacher and the student, as in the report",
                    node.mark,
                ))  # fmt: skip
    seen[space.id] = order
    if order != tuple(range(b)):
        seg.order[space.id] = order
    return order


def check(fam: Family, facts: Facts) -> tuple[SegmentFacts, list[Problem]]:
    """The segments stage: placement of widened spaces, ties and steps, as the facts that
    `rule` and `finish` read, and every problem."""
    problems: list[Problem] = []
    seg = SegmentFacts()
    plan, seen = fam.plan, dict[int, tuple[int, ...]]()
    graph = plan.graph
    for space in graph.spaces:
        pad = graph.pads.get(space.id)
        if facts.widened(space) or (pad and facts.widened(graph.spaces[pad[0]])):
            _place(fam, facts, seg, space, seen, problems)
            problems += _tie_problems(fam, space)
    for op in plan.steps:
        problems += _steps_problems(fam, seg, plan.student.node(op.unit), op.old, op.new,
                                    op.refines)  # fmt: skip
    return seg, problems


def _tie_problems(fam: Family, space: ChannelSpace) -> list[Problem]:
    if fam.ties != "refuse":
        return []
    for role in space.roles:
        node = fam.plan.student.node(role.node)
        if _tied(node, role):
            return [Problem(
                f"channel space '{space.label}' would widen '{role.key}' dimension {role.dim},"
                f" which {node.kind} '{node.path}' reads as K and as Kᵀ (tied): {fam.name}"
                " copies channels and divides the consumers' columns, which would also divide"
                " Kᵀ's rows; use --family r2r or netmorph (new tied entries start at zero)",
                node.mark,
            )]  # fmt: skip
    return []


def _steps_problems(fam: Family, seg: SegmentFacts, unit: Node, old: int, new: int,
                    refines: bool) -> list[Problem]:  # fmt: skip
    where = f"'{unit.path}' ({unit.kind}, steps {old} -> {new})"
    if fam.info.refines_steps:
        if not refines:
            return [Problem(
                f"{where}: {fam.name} refines the same time span, halving h as it doubles the"
                f" steps; set h to {unit.args['h'] * old / new:g}",
                unit.mark,
            )]  # fmt: skip
        r = new // old
        for key in unit.params:
            step, _, local = key.partition(".")
            seg.sources[unit.key(key)] = unit.key(f"{int(step) // r}.{local}")
        return []
    if refines:
        return [Problem(
            f"{where}: h changes, which refines the unit's steps; no exact rule does that"
            " (smaller steps change the discretisation); use --family ode-refine, which"
            " reports the deviation",
            unit.mark,
        )]  # fmt: skip
    appended = rule_of(unit.kind)
    why = appended.appended_steps if appended is not None and fam.exact else None
    if why is not None and (text := why(old, new)) is not None:
        return [Problem(f"{where}: {text}", unit.mark)]
    if fam.exact:
        for key, shape in unit.params.items():
            step, _, _ = key.partition(".")
            if int(step) >= old:
                (seg.zero_keys if len(shape) > 1 else seg.bias_keys).add(unit.key(key))
    return []


def _tied(node: Node, role: Role) -> bool:
    r = rule_of(node.kind)
    return r is not None and r.tie_of(role.key[len(node.path) + 1 :], role.dim) is not None


def rule(fam: Family, consume: bool, v: torch.Tensor, d: int, space: ChannelSpace, key: str,
         role: Role) -> None:  # fmt: skip
    """The family's rule for one role, in append order: tied dimensions wait for `finish`;
    a derived space follows its root space's rule on the root's channels."""
    if _tied(fam.plan.student.node(role.node), role):
        return
    root = fam.facts.segments.root.get(space.id)
    if root is not None:
        base = fam.plan.graph.spaces[root[0]]
        if not fam.applies_to(base):
            return
        idx = torch.tensor(root[1])
        w = v.index_select(d, idx)
        _apply(fam, consume, w, d, base, key, role)
        v.index_copy_(d, idx, w)
        return
    _apply(fam, consume, v, d, space, key, role)


def _apply(fam: Family, consume: bool, v: torch.Tensor, d: int, space: ChannelSpace, key: str,
           role: Role) -> None:  # fmt: skip
    if consume:
        fam.consume(v, d, space, key)
    else:
        fam.produce(v, d, space, key, role)


def finish(
    fam: Family, key: str, x: torch.Tensor, roles: Iterable[tuple[Role, ChannelSpace]]
) -> None:
    """After the family's rule: tied entries, new biases, then each dimension permuted from
    append order to the student's positions."""
    seg, sizes = fam.facts.segments, fam.facts.sizes
    if key in seg.bias_keys:
        _positive_bias(fam, key, x.view(-1))
    widened = [(r, sp) for r, sp in roles if fam.widened(sp)]
    for role, space in widened:  # in append order, before anything moves
        node = fam.plan.student.node(role.node)
        parts = role.layout.parts if role.layout.segment is not None else 1
        a, b = sizes[space.id] // parts, space.size // parts
        if _tied(node, role) and fam.ties == "zero":
            x.narrow(role.dim, a, b - a).zero_()
        unit = rule_of(node.kind)
        if (
            unit
            and unit.stepped
            and key not in seg.bias_keys
            and role.kind == "producer"
            and x.dim() == 1
        ):
            _positive_bias(fam, key, x.narrow(0, a, b - a))
    moved: set[int] = set()
    for role, space in widened:
        order = seg.order.get(space.id)
        if order is None or role.dim in moved:
            continue
        moved.add(role.dim)
        if role.layout.segment is not None:
            s, parts = role.layout.segment, role.layout.parts
            a, b = sizes[space.id] // parts, space.size // parts
            old = [order[i] - s * b for i in range(s * a, (s + 1) * a)]
            order = (*old, *sorted(set(range(b)) - set(old)))
        inv = torch.empty(len(order), dtype=torch.int64)
        inv[torch.tensor(order)] = torch.arange(len(order))
        shape = list(x.shape)
        shape[role.dim : role.dim + 1] = [shape[role.dim] // role.mult, role.mult]
        v = x.view(shape)
        v.copy_(v.index_select(role.dim, inv))


def _positive_bias(fam: Family, key: str, v: torch.Tensor) -> None:
    """New hidden biases of a unit: uniform in [s/2, s], s = 1/√(fan_in), so σ(b) ≠ 0."""
    if not v.numel() or not fam.exact:
        return
    weight = key.rpartition(".")[0] + "." + key.rpartition(".")[2].replace("b", "k") + ".weight"
    shape = fam.shapes[weight]
    s = 1.0 / (shape[1] * shape[2] * shape[3]) ** 0.5
    gen = generator(fam.options.seed, key, "bias")
    r = torch.rand(v.shape, generator=gen, dtype=torch.float64)
    v.copy_((s / 2 + r * s / 2).to(v.dtype))
