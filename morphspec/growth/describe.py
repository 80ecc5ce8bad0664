"""A plan described for people and programs alike: typed rows that `morph diff` and
`morph convert` render as a table and put, the same rows, in their `--json`.

What an operation means can depend on the family (R2R widens by (L, R) pairs; an exact
family starts a tied kernel's new rows at zero), so the rows are made for one family,
read from its catalog record (torch-free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from morphspec.growth.catalog import CATALOG
from morphspec.growth.graph import ChannelSpace
from morphspec.growth.kinds import rule_of
from morphspec.growth.ops import (
    AddExperts,
    AddSteps,
    GrowKernel,
    InsertBlocks,
    InsertLayers,
    InterleaveBlocks,
    PlanRow,
    WidenSpace,
)  # fmt: skip

if TYPE_CHECKING:
    from morphspec.growth.plan import Plan

__all__ = ["PlanRow", "describe"]


def describe(plan: Plan, family: str = "r2r") -> list[PlanRow]:
    """The rows of `plan` as grown by `family` (a name of the catalog)."""
    info = CATALOG[family]
    tied = {sp.label for sp in plan.graph.spaces if _inner_of_tied(plan, sp)}
    rows: list[PlanRow] = []
    for op in plan.ops:
        if isinstance(op, WidenSpace):
            odd = f" + {op.odd} unpaired" if op.odd else ""
            where = op.space if len(op.edges) <= 1 else f"{op.space} (+{len(op.edges) - 1} joined)"
            how = f"{op.pairs} pairs{odd}" if info.pairs else f"+{op.new - op.old} channels"
            space = next((sp for sp in plan.graph.spaces if sp.label == op.space), None)
            if space is not None and space.mixing_norms:
                how = "norm-preserving lift"
            elif space is not None and any(r.layout.kind == "groups" for r in space.roles):
                how = f"+{op.new - op.old}, by head"
            elif op.space in tied and info.exact:
                how = f"+{op.new - op.old}, new rows of the tied K zero"
            rows.append(PlanRow("widen", where, f"{op.old} -> {op.new} ({how})"))
        elif isinstance(op, InsertBlocks):
            how = f" (copy j of j mod {op.old_times})" if info.stacks else ""
            change = f"{op.old_times} -> {op.new_times} copies{how}"
            rows.append(PlanRow("insert blocks", op.repeat, change))
        elif isinstance(op, InsertLayers):
            change = "new, between teacher layers"
            rows.append(PlanRow("insert layers", ", ".join(op.layers), change))
        elif isinstance(op, InterleaveBlocks):
            moves = ", ".join(
                f"{a.rpartition('.')[2]}->{b.rpartition('.')[2]}" for a, b in op.moves
            )
            rows.append(PlanRow("interleave", op.repeat, f"copies move {moves}"))
        elif isinstance(op, GrowKernel):
            change = f"{op.old}x{op.old} -> {op.new}x{op.new}"
            rows.append(PlanRow("grow kernel", op.layer, change))
        elif isinstance(op, AddExperts):
            how = "each a copy of the MLP, new router" if op.old == 1 else (
                "each copied, router rows duplicated"
            )  # fmt: skip
            change = f"{op.old} -> {op.new} ({how}; top_k {op.old_top_k} -> {op.new_top_k})"
            rows.append(PlanRow("add experts", op.layer, change))
        elif isinstance(op, AddSteps):
            how = f"h {op.old_h:g} -> {op.new_h:g}, refined" if op.refines else "appended"
            rows.append(PlanRow("add steps", op.unit, f"{op.old} -> {op.new} ({how})"))
        else:
            rows.append(PlanRow("add projection", op.shortcut, "identity -> identity stand-in"))
    return rows


def _inner_of_tied(plan: Plan, space: ChannelSpace) -> bool:
    """A unit's hidden space: written only by rows of tied kernels (no pairs there)."""
    producers = [r for r in space.roles if r.kind == "producer" and r.dim == 0]
    return bool(producers) and all(
        (rule := rule_of(plan.student.node(r.node).kind)) is not None and rule.stepped
        for r in producers
    )
