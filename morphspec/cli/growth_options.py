"""Options shared by the growth commands (diff, convert): the teacher/student `--set`s."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from morphspec.growth.options import option_fields, option_infos, option_types
from morphspec.growth.plan import (
    Plan,
)  # fmt: skip

__all__ = [
    "StudentArg", "StudentSetOpt", "TeacherArg", "TeacherSetOpt", "growth_option", "merge_sets",
    "option_annotation", "plan_json", "plan_table", "with_growth_options",
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
    return Annotated[option_types()[name], growth_option(name)]


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
            for f in option_fields()
        ]  # fmt: skip
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]
        func.__signature__ = sig.replace(parameters=[*params[:at], *added, *rest])  # type: ignore[attr-defined]
        return func

    return decorate


def merge_sets(both: list[str] | None, own: list[str] | None) -> list[str]:
    """`--set` applies to both specs; `--teacher-set`/`--student-set` come after and win."""
    return [*(both or []), *(own or [])]


def plan_table(plan: Plan, family: str = "r2r") -> Table:
    """The plan for people: the rows of `plan.describe(family)` (the same rows as its JSON),
    under a title with the parameter counts."""
    before, after = plan.teacher.trainable_count(), plan.student.trainable_count()
    table = Table(
        title=f"{plan.teacher.name} -> {plan.student.name}:"
        f" {before:,} -> {after:,} parameters ({after / max(before, 1):.2f}x)",
        title_justify="left",
    )
    table.add_column("operation")
    table.add_column("where", overflow="fold")
    table.add_column("change", justify="right", overflow="fold")
    for row in plan.describe(family):
        table.add_row(row.operation, row.where, row.change)
    if not plan.ops:
        table.add_row("none", "", "the student has the teacher's architecture")
    return table


def plan_json(plan: Plan, family: str = "r2r") -> dict[str, Any]:
    """The plan's JSON with the table's rows (`rows`), for `--json`."""
    return {**plan.to_json(), "rows": [row.to_json() for row in plan.describe(family)]}
