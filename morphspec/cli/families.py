"""`morph families`: each growth family's conditions, like the R2R paper's Table 1.

One block per family (a row per condition, the value wrapped), so every word shows in an
80-column terminal; `--json` has the same records.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from morphspec.cli.options import JsonOpt
from morphspec.cli.output import Output
from morphspec.growth.catalog import CATALOG, Conditions

__all__ = ["EXAMPLES", "families"]

EXAMPLES = """\
  morph families
  morph families --json"""


def families(as_json: JsonOpt = False) -> None:
    """Print what each growth family needs of a network and what it guarantees; `morph
    convert` checks these before it touches a tensor."""
    out = Output(as_json)
    tables = []
    for name, info in CATALOG.items():
        title = f"{name} ({'exact' if info.exact else 'not function-preserving'})"
        table = Table(title=title, title_justify="left", show_header=False, expand=False)
        table.add_column("condition", no_wrap=True, style="bold")
        table.add_column("value", overflow="fold")
        for field in Conditions.__dataclass_fields__:
            if field != "family":
                table.add_row(field.replace("_", " "), _cell(getattr(info.conditions, field)))
        tables.append(table)
    doc = {"families": {n: info.conditions.to_json() for n, info in CATALOG.items()}}
    out.result(doc, Group(*tables))


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
