"""`morph schema`: the JSON Schema that lets editors check and complete spec files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from morphspec.cli.output import Output

__all__ = ["EXAMPLES", "schema"]

EXAMPLES = """\
  morph schema -o schemas/morphspec.schema.json
  morph schema > morphspec.schema.json

Point editors at it with a first line in each spec:
  # yaml-language-server: $schema=../../schemas/morphspec.schema.json"""

OutOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="PATH", help="Write here instead of stdout."),
]


def schema(output: OutOpt = None) -> None:
    """Print the JSON Schema (draft-07) of spec files, as YAML language servers read it."""
    from morphspec.spec.schema import schema_text

    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    Output().talk(f"wrote {output}")
