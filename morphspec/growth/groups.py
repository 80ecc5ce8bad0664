"""Attention heads: growth of `groups` layouts (heads x head_dim) by whole kv groups.

Query head h reads kv head h // g, g = heads / kv_heads. A *kv group* is one kv head and
its g query heads; q_proj rows and o_proj columns of a group are contiguous (g·head_dim
entries), k_proj and v_proj rows of its kv head too (head_dim entries). Two growths are
exact, and nothing else is attempted:

- **new groups** (heads and kv_heads grow by the same factor, g kept; plain multi-head
  attention is g = 1): whole groups are appended. A family's widening rule runs on
  *groups* instead of channels: the heads space is viewed as (groups, g·head_dim) and the
  kv space as (groups, head_dim), and both views share one proxy space, so every family
  pairs (R2R), copies (Net2Net) or zeroes (NetMorph) the same groups in q, k, v and o.
  R2R: groups L and R get equal q, k and v rows, so their heads attend alike and output
  the same values, and o_proj reads them with columns [Z, −Z]: they add Z·h − Z·h = 0.
  Net2Net: a new group copies an old group's q, k, v rows and o_proj divides the columns
  of the group and its copies by their count. NetMorph: o_proj's new columns are zero
  (`out`), or q, k and v rows of new groups are zero (`in`: uniform attention over v = 0).
- **kv heads repeated** (heads kept, kv_heads × r): g shrinks to g/r, and query head h now
  reads kv head h // (g/r); student kv head j is teacher kv head j // r, which is the one
  h // g named before (h // (g/r) // r = h // g). Nothing is free; every family does it.

- **query heads at fixed kv heads** (kv_heads kept, heads × g'/g; how Llama-family sizes
  grow, 32/8 -> 64/8): new query heads join every kv group at its end. q_proj rows and
  o_proj columns are viewed as (kv groups, g, head_dim) and the family's rule runs on the
  g axis, one query head a channel: R2R pairs new heads within a group (equal q rows, so
  equal attention over the shared k, v, and o_proj columns [Z, -Z]; an unpaired head gets
  zero columns), Net2Net copies old heads of the same group (o_proj columns divided by
  the counts), NetMorph gives new heads zero o_proj columns. `--netmorph-zero in` is
  refused: a zero query attends uniformly over the group's v, which is not zero.

A query head that would change its kv group (heads grow and kv_heads grow, but not in
proportion) and query heads with a changed head_dim at once are refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from morphspec.arch.nodes import Arch, Node
from morphspec.errors import Problem
from morphspec.growth.graph import ChannelSpace, SpaceGraph
from morphspec.growth.kinds import rule_of

if TYPE_CHECKING:  # plan.py imports this module, and planning imports no torch
    import torch

__all__ = [
    "GroupFacts", "HeadGrowth", "InsideFill", "head_growths", "register_groups", "repeat_kv",
]  # fmt: skip


def is_grouped(node: Node) -> bool:
    """Whether this module fills `node`'s `groups` layouts: its rule says `grouped` (heads,
    kv_heads and head_dim args, as attention has). Others are refused by the planner."""
    rule = rule_of(node.kind)
    return rule is not None and rule.grouped


@dataclass(frozen=True)
class HeadGrowth:
    """How one attention layer's heads grow: `groups` appends kv groups (old -> new
    groups), `repeat` repeats each kv head `new // old` times (old -> new kv heads),
    `query` adds query heads inside every kv group (old -> new heads per group)."""

    path: str
    mode: Literal["groups", "repeat", "query"]
    old: int
    new: int
    heads_unit: int
    """Entries of the heads space per kv group: g·head_dim."""
    head_dim: int
    old_head_dim: int = 0
    """The teacher's head_dim when it grows (0: kept)."""


def _heads(n: Node) -> tuple[int, int, int]:
    return n.args["heads"], n.args["kv_heads"], n.args["head_dim"]


def head_growths(teacher: Arch, student: Arch) -> tuple[dict[str, HeadGrowth], list[Problem]]:
    """Every attention layer whose heads grow (new layers: all groups new), or why not."""
    t_nodes = {n.path: n for n in teacher.nodes() if is_grouped(n)}
    growths: dict[str, HeadGrowth] = {}
    problems: list[Problem] = []
    for s in student.nodes():
        if not is_grouped(s):
            continue
        h2, k2, d2 = _heads(s)
        t = t_nodes.get(s.path)
        if t is None:
            growths[s.path] = HeadGrowth(s.path, "groups", 0, k2, h2 // k2 * d2, d2)
            continue
        h1, k1, d1 = _heads(t)
        if (h1, k1, d1) == (h2, k2, d2) or h2 < h1 or k2 < k1 or d2 < d1:
            continue  # shrinking is refused by the argument comparison
        inside = d1 if d2 > d1 else 0
        if inside and s.args["rope"]:
            problems.append(Problem(
                f"attention '{s.path}': head_dim {d1} -> {d2} with rope: rotary pair i of a"
                f" head, entries (i, i + head_dim/2), turns by pos·θ^(-2i/head_dim), so a new"
                " head_dim moves the old pairs and changes their frequencies. Keeping them"
                f" needs the old entries at (i, i + {d2 // 2}) and rope_theta = θ^({d2}/{d1}),"
                " but the cos/sin table is computed in float32, as Hugging Face does, and"
                " would not round the same, so growth refuses. Keep head_dim and add heads",
                s.mark,
            ))  # fmt: skip
            continue
        if h1 // k1 == h2 // k2:
            growths[s.path] = HeadGrowth(s.path, "groups", k1, k2, h2 // k2 * d2, d2, inside)
        elif h1 == h2 and k2 % k1 == 0 and not inside:
            growths[s.path] = HeadGrowth(s.path, "repeat", k1, k2, 0, d2)
        elif k1 == k2 and not inside:
            growths[s.path] = HeadGrowth(s.path, "query", h1 // k1, h2 // k2, 0, d2)
        else:
            problems.append(Problem(
                f"attention '{s.path}': heads {h1} -> {h2} with kv_heads {k1} -> {k2}: query"
                f" head h reads kv head h // (heads/kv_heads), and {h1 // k1} -> {h2 // k2}"
                " query heads per kv head would move old query heads to another kv head."
                " Grow kv_heads in proportion (whole kv groups are appended), grow"
                " kv_heads alone to a multiple (each kv head is repeated, head_dim kept), or"
                " grow heads alone (new query heads join every kv group); one at a time",
                s.mark,
            ))  # fmt: skip
    return growths, problems


def _space(graph: SpaceGraph, key: str) -> ChannelSpace | None:
    return next((sp for r, sp in graph.roles(key) if r.kind == "producer"), None)


@dataclass(frozen=True)
class GroupFacts:
    """What the groups stage found: per widened heads/kv space, the proxy space of groups
    a family fills and the entries per group (`units`), or the repeat factor and head_dim
    of kv heads (`repeats`); head_dim growth per tensor (`inside`); and each proxy space's
    teacher size (`sizes`: proxy ids come after the graph's)."""

    units: dict[int, tuple[ChannelSpace, int]] = field(default_factory=dict)
    repeats: dict[int, tuple[int, int]] = field(default_factory=dict)
    inside: dict[str, InsideFill] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)


def register_groups(
    teacher: Arch, student: Arch, graph: SpaceGraph
) -> tuple[GroupFacts, list[Problem]]:
    """The groups stage: how each grouped layer's heads grow, as `GroupFacts`, or why not."""
    facts = GroupFacts()
    units, repeats, inside, sizes = facts.units, facts.repeats, facts.inside, facts.sizes
    growths, problems = head_growths(teacher, student)
    next_id = len(graph.spaces)
    for path, g in growths.items():
        node = student.node(path)
        heads = _space(graph, node.key("q_proj.weight"))
        kv = _space(graph, node.key("k_proj.weight"))
        if heads is None or kv is None:
            continue
        if g.old_head_dim:
            hd_space = ChannelSpace(next_id, g.head_dim, edges=[f"{path} head_dim"])
            next_id += 1
            sizes[hd_space.id] = g.old_head_dim
            h2, k2 = node.args["heads"], node.args["kv_heads"]
            old_h, old_k = g.old * h2 // k2, g.old
            scale = math.sqrt(g.head_dim / g.old_head_dim)
            fills: tuple[tuple[str, int, int, int, Literal["produce", "consume"]], ...] = (
                ("q_proj", h2, old_h, 0, "produce"), ("k_proj", k2, old_k, 0, "consume"),
                ("v_proj", k2, old_k, 0, "produce"), ("o_proj", h2, old_h, 1, "consume"),
            )  # fmt: skip
            for proj, n, old_n, dim, op in fills:
                for local in ("weight", "bias"):
                    if f"{proj}.{local}" not in node.params or (dim == 1 and local == "bias"):
                        continue
                    inside[node.key(f"{proj}.{local}")] = InsideFill(
                        dim, n, old_n, g.old_head_dim, hd_space, op,
                        scale if proj == "q_proj" else 1.0,
                    )  # fmt: skip
        if g.mode == "repeat":
            repeats[kv.id] = (g.new // g.old, g.head_dim)
            continue
        if g.mode == "query":
            next_id = _query_heads(node, g, heads, next_id, sizes, units, inside)
            continue
        proxy = ChannelSpace(next_id, g.new, edges=[f"{path} kv groups"])
        next_id += 1
        sizes[proxy.id] = g.old
        units[heads.id] = (proxy, g.heads_unit)
        units[kv.id] = (proxy, g.head_dim)
    return facts, problems


def _query_heads(
    node: Node, g: HeadGrowth, heads: ChannelSpace, next_id: int, sizes: dict[int, int],
    units: dict[int, tuple[ChannelSpace, int]], inside: dict[str, InsideFill],
) -> int:  # fmt: skip
    """New query heads inside every kv group: the family fills the g axis of q_proj's rows
    and o_proj's columns (a proxy space of g heads per group, the teacher's g.old), while
    the heads space itself is seen as kv groups, which do not grow. Returns the next id."""
    kv = node.args["kv_heads"]
    per_group = ChannelSpace(next_id, g.new, edges=[f"{node.path} query heads per kv group"])
    groups = ChannelSpace(next_id + 1, kv, edges=[f"{node.path} kv groups"])
    sizes[per_group.id], sizes[groups.id] = g.old, kv
    units[heads.id] = (groups, g.new * g.head_dim)
    fills: tuple[tuple[str, int, Literal["produce", "consume"]], ...] = (
        ("q_proj", 0, "produce"), ("o_proj", 1, "consume"),
    )  # fmt: skip
    for proj, dim, op in fills:
        for local in ("weight", "bias") if dim == 0 else ("weight",):
            if f"{proj}.{local}" in node.params:
                inside[node.key(f"{proj}.{local}")] = InsideFill(
                    dim, kv, kv, g.old, per_group, op, unit=g.head_dim, query=True
                )
    return next_id + 2


@dataclass(frozen=True)
class InsideFill:
    """head_dim growth of one tensor: dimension `dim` is `heads` x `space.size` entries,
    the teacher's `old_heads` x `old` of them at the start of each head; the family fills
    the new entries of each head with `space` as their space, as producers (q, v rows) or
    consumers (k rows, o columns), and the teacher's entries are multiplied by `scale`.
    Query heads at fixed kv heads use it with kv groups for `heads` and one query head
    (`unit` = head_dim entries) for each entry of `space`."""

    dim: int
    heads: int
    old_heads: int
    old: int
    space: ChannelSpace
    op: Literal["produce", "consume"]
    scale: float = 1.0
    unit: int = 1
    query: bool = False  # new query heads, not new head_dim entries

    def place(self, x: torch.Tensor, teacher: torch.Tensor) -> None:
        """Put the teacher's entries at the start of each of its heads, scaled."""
        view = x.unflatten(self.dim, (self.heads, self.space.size * self.unit))
        t = teacher.unflatten(self.dim, (self.old_heads, self.old * self.unit))
        region = [slice(0, n) for n in t.shape]
        view[tuple(region)] = t
        if self.scale != 1.0:
            view[tuple(region)] *= self.scale

    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`x` as (..., heads, head_dim, ...) (or (..., kv groups, g, head_dim, ...)): the
        family's rule runs on dimension d + 1."""
        if self.unit > 1:
            return x.unflatten(self.dim, (self.heads, self.space.size, self.unit)), self.dim + 1
        return x.unflatten(self.dim, (self.heads, self.space.size)), self.dim + 1


def repeat_kv(x: torch.Tensor, old_rows: int, r: int, head_dim: int) -> None:
    """Student kv head j = teacher kv head j // r, in place along dim 0 of `x`, whose first
    `old_rows` rows are the teacher's (already filled along its other dimensions)."""
    old = x.narrow(0, 0, old_rows).clone().unflatten(0, (-1, head_dim))
    x.copy_(old.repeat_interleave(r, dim=0).flatten(0, 1))
