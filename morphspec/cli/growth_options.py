"""Options shared by the growth commands (diff, convert): the teacher/student `--set`s."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from morphspec.growth.plan import GrowKernel, InsertBlocks, InsertLayers, Plan, WidenSpace

__all__ = ["StudentArg", "StudentSetOpt", "TeacherArg", "TeacherSetOpt", "merge_sets", "plan_table"]

TeacherArg = Annotated[Path, typer.Argument(metavar="TEACHER", help="The teacher's spec.")]
StudentArg = Annotated[Path, typer.Argument(metavar="STUDENT", help="The student's spec.")]
TeacherSetOpt = Annotated[
    list[str] | None,
    typer.Option("--teacher-set", metavar="NAME=VALUE", help="Override a var of the teacher only."),
]
StudentSetOpt = Annotated[
    list[str] | None,
    typer.Option("--student-set", metavar="NAME=VALUE", help="Override a var of the student only."),
]


def merge_sets(both: list[str] | None, own: list[str] | None) -> list[str]:
    """`--set` applies to both specs; `--teacher-set`/`--student-set` come after and win."""
    return [*(both or []), *(own or [])]


def plan_table(plan: Plan, family: str = "r2r") -> Table:
    """The plan for people: which spaces widen, which blocks are new, parameters."""
    before, after = plan.teacher.trainable_count(), plan.student.trainable_count()
    table = Table(
        title=f"{plan.teacher.name} -> {plan.student.name}:"
        f" {before:,} -> {after:,} parameters ({after / max(before, 1):.2f}x)",
        title_justify="left",
    )
    table.add_column("operation")
    table.add_column("where")
    table.add_column("change", justify="right")
    for op in plan.ops:
        if isinstance(op, WidenSpace):
            odd = f" + {op.odd} unpaired" if op.odd else ""
            where = op.space if len(op.edges) <= 1 else f"{op.space} (+{len(op.edges) - 1} joined)"
            how = f"{op.pairs} pairs{odd}" if family == "r2r" else f"+{op.new - op.old} channels"
            table.add_row("widen", where, f"{op.old} -> {op.new} ({how})")
        elif isinstance(op, InsertBlocks):
            table.add_row("insert blocks", op.repeat, f"{op.old_times} -> {op.new_times} copies")
        elif isinstance(op, InsertLayers):
            table.add_row("insert layers", ", ".join(op.layers), "new, between teacher layers")
        elif isinstance(op, GrowKernel):
            table.add_row("grow kernel", op.layer, f"{op.old}x{op.old} -> {op.new}x{op.new}")
        else:
            table.add_row("add projection", op.shortcut, "identity -> identity stand-in")
    if not plan.ops:
        table.add_row("none", "", "the student has the teacher's architecture")
    return table
