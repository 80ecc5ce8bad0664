"""New repeat copies placed between the teacher's (LLaMA-Pro's block expansion).

Growth appends new copies of a `repeat` (old copies keep their keys) and makes each start
as the identity, whatever its input: its output is exactly zero in eval and train mode.
The identity commutes with every block, so the copies may then be reordered without
changing the function. `--interleave` does that: with T old and N new copies, the old
copies are split into N runs of ⌊T/N⌋ or ⌈T/N⌉ and a new copy follows each run
(T = 2 → 4: old 0, new, old 1, new). With `--new-blocks copy`, each new copy starts from
the old copy just before it, as LLaMA-Pro does (the first old copy where new ones come
first). Tensors are made in the appended layout, as always,
and renamed on the way out; the plan records every move (`interleave_blocks`, with the
teacher's blocks' new places), and so does the checkpoint's metadata.
"""

from __future__ import annotations

from dataclasses import replace

from morphspec.errors import PlanRefused, Problem
from morphspec.growth.plan import InterleaveBlocks, Plan

__all__ = ["interleave", "interleaved_order"]


def interleaved_order(old: int, new: int) -> list[int]:
    """`order[p]` = the appended copy that ends at position p (copies ≥ `old` are new)."""
    added = new - old
    order: list[int] = []
    start = 0
    for g in range(added):
        end = (g + 1) * old // added
        order += [*range(start, end), old + g]
        start = end
    return order


def _relative(plan: Plan, path: str) -> dict[str, tuple[int, ...]]:
    node = plan.student.node(path)
    return {k[len(path) :]: s for k, s in node.state_shapes().items()}


def interleave(plan: Plan) -> Plan:
    """`plan` with the moves that place each repeat's new copies between its old ones
    recorded (an `InterleaveBlocks` op and `renames`); refuse a repeat whose copies differ
    in their tensors."""
    problems: list[Problem] = []
    ops, renames, copy_from = list(plan.ops), dict(plan.renames), dict(plan.copy_from)
    for op in list(plan.inserts):
        first = _relative(plan, f"{op.repeat}.0")
        if any(_relative(plan, f"{op.repeat}.{i}") != first for i in range(op.new_times)):
            problems.append(Problem(
                f"--interleave: the copies of repeat '{op.repeat}' differ in their tensors,"
                " so a copy cannot take another's place; grow without --interleave",
                plan.student.node(op.repeat).mark,
            ))  # fmt: skip
            continue
        moves = tuple(
            (f"{op.repeat}.{src}", f"{op.repeat}.{pos}")
            for pos, src in enumerate(interleaved_order(op.old_times, op.new_times))
            if src != pos
        )
        order = interleaved_order(op.old_times, op.new_times)
        for pos, src in enumerate(order):
            if src >= op.old_times:
                before = [i for i in order[:pos] if i < op.old_times]
                copy_from[f"{op.repeat}.{src}"] = before[-1] if before else 0
        ops.append(InterleaveBlocks(op.repeat, moves))
        renames.update(dict(moves))
    if problems:
        raise PlanRefused(problems)
    return replace(plan, ops=ops, renames=renames, copy_from=copy_from)
