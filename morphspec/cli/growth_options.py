"""Options shared by the growth commands (diff, convert): the teacher/student `--set`s."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from rich.table import Table

from morphspec.growth.graph import ChannelSpace
from morphspec.growth.kinds import rule_of
from morphspec.growth.options import GrowOptions, option_infos
from morphspec.growth.plan import (
    AddExperts,
    AddSteps,
    GrowKernel,
    InsertBlocks,
    InsertLayers,
    InterleaveBlocks,
    Plan,
    WidenSpace,
)  # fmt: skip

__all__ = [
    "StudentArg", "StudentSetOpt", "TeacherArg", "TeacherSetOpt", "growth_option", "merge_sets",
    "option_annotation", "plan_table", "with_growth_options",
]  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])

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


def growth_option(name: str) -> Any:
    """The `typer.Option` of the growth option `name`: flag, help and bound come from
    `growth/options.py`."""
    info = option_infos()[name]
    kw: dict[str, Any] = {"help": info.help}
    if info.min is not None:
        kw["min"] = info.min
    if info.max is not None:
        kw["max"] = info.max
    if info.finite:
        kw["callback"] = _finite
    return typer.Option(info.flag, **kw)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def option_annotation(name: str) -> Any:
    """`Annotated[type, typer.Option(...)]` for the growth option `name`."""
    return Annotated[get_type_hints(GrowOptions)[name], growth_option(name)]


def with_growth_options(after: str) -> Callable[[F], F]:
    """Give a command every growth option, as parameters inserted after `after`; the
    command receives them in `**options`. So a new option is declared only in GrowOptions."""

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
        at = [p.name for p in params].index(after) + 1
        added = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                              annotation=option_annotation(f.name))
            for f in fields(GrowOptions)
        ]  # fmt: skip
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]
        func.__signature__ = sig.replace(parameters=[*params[:at], *added, *rest])  # type: ignore[attr-defined]
        return func

    return decorate


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
    tied = {sp.label for sp in plan.graph.spaces if _inner_of_tied(plan, sp)}
    for op in plan.ops:
        if isinstance(op, WidenSpace):
            odd = f" + {op.odd} unpaired" if op.odd else ""
            where = op.space if len(op.edges) <= 1 else f"{op.space} (+{len(op.edges) - 1} joined)"
            how = f"{op.pairs} pairs{odd}" if family == "r2r" else f"+{op.new - op.old} channels"
            space = next((sp for sp in plan.graph.spaces if sp.label == op.space), None)
            if space is not None and space.mixing_norms:
                how = "norm-preserving lift"
            elif space is not None and any(r.layout.kind == "groups" for r in space.roles):
                how = f"+{op.new - op.old}, by head"
            elif op.space in tied and family not in ("randpad", "ode-refine"):
                how = f"+{op.new - op.old}, new rows of the tied K zero"
            table.add_row("widen", where, f"{op.old} -> {op.new} ({how})")
        elif isinstance(op, InsertBlocks):
            table.add_row("insert blocks", op.repeat, f"{op.old_times} -> {op.new_times} copies")
        elif isinstance(op, InsertLayers):
            table.add_row("insert layers", ", ".join(op.layers), "new, between teacher layers")
        elif isinstance(op, InterleaveBlocks):
            moves = ", ".join(
                f"{a.rpartition('.')[2]}->{b.rpartition('.')[2]}" for a, b in op.moves
            )
            table.add_row("interleave", op.repeat, f"copies move {moves}")
        elif isinstance(op, GrowKernel):
            table.add_row("grow kernel", op.layer, f"{op.old}x{op.old} -> {op.new}x{op.new}")
        elif isinstance(op, AddExperts):
            how = (
                "each a copy of the MLP, new router"
                if op.old == 1
                else "each copied, router rows duplicated"
            )
            table.add_row(
                "add experts",
                op.layer,
                f"{op.old} -> {op.new} ({how}; top_k {op.old_top_k} -> {op.new_top_k})",
            )
        elif isinstance(op, AddSteps):
            how = f"h {op.old_h:g} -> {op.new_h:g}, refined" if op.refines else "appended"
            table.add_row("add steps", op.unit, f"{op.old} -> {op.new} ({how})")
        else:
            table.add_row("add projection", op.shortcut, "identity -> identity stand-in")
    if not plan.ops:
        table.add_row("none", "", "the student has the teacher's architecture")
    return table


def _inner_of_tied(plan: Plan, space: ChannelSpace) -> bool:
    """A unit's hidden space: written only by rows of tied kernels (no pairs there)."""
    producers = [r for r in space.roles if r.kind == "producer" and r.dim == 0]
    return bool(producers) and all(
        (rule := rule_of(plan.student.node(r.node).kind)) is not None and rule.stepped
        for r in producers
    )
