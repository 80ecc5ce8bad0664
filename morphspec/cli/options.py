"""Option and argument types shared by the commands, so each flag means one thing everywhere.

Convention: a command that takes `JsonOpt` names the parameter `as_json`; the error guard
(`cli.guard`) reads it to print failures as JSON too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["MAX_SEED", "ForceOpt", "JsonOpt", "SeedOpt", "SetOpt", "SpecArg"]

MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; keep them within a signed int64

SpecArg = Annotated[
    Path,
    typer.Argument(metavar="SPEC", help="A spec file (YAML).", show_default=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=VALUE",
        help="Override a var of the spec, e.g. --set r=0.25 (repeatable).",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print exactly one JSON document on stdout (errors too) instead of tables.",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        max=MAX_SEED,
        help="Random seed; the same seed gives the same tensors.",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", "-f", help="Overwrite an existing output file."),
]
