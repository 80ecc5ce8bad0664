"""`morph schema`: the JSON Schema that lets editors check and complete spec files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from morphspec.checkpoint.output import check_target, write_text_atomic
from morphspec.cli.options import ForceOpt
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


def schema(output: OutOpt = None, force: ForceOpt = False) -> None:
    """Print the JSON Schema (draft-07) of spec files, as YAML language servers read it.

    With -o, an existing JSON Schema is replaced (to regenerate it); any other existing
    file only with --force. The file is written whole or not at all."""
    from morphspec.spec.schema import schema_text

    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
        return
    check_target(output, force=force or _is_schema(output))
    write_text_atomic(output, text)
    Output().talk(f"wrote {output}")


def _is_schema(path: Path) -> bool:
    """An existing regular file holding a JSON Schema (an object with "$schema")."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            doc = json.loads(f.read(1 << 22))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and "$schema" in doc
