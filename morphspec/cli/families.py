"""`morph families`: each growth family's conditions, like the R2R paper's Table 1."""

from __future__ import annotations

from rich.table import Table

from morphspec.cli.options import JsonOpt
from morphspec.cli.output import Output
from morphspec.growth.conditions import FAMILY_CONDITIONS, Conditions

__all__ = ["EXAMPLES", "families"]

EXAMPLES = """\
  morph families
  morph families --json"""


def families(as_json: JsonOpt = False) -> None:
    """Print what each family (r2r, net2net, netmorph, randpad, ode-refine,
    stack) needs of a
    network and what it guarantees; `morph convert` checks these before it touches a tensor."""
    out = Output(as_json)
    table = Table(title="growth families", title_justify="left", show_lines=True)
    table.add_column("")
    names = list(FAMILY_CONDITIONS)
    for name in names:
        table.add_column(name)
    for field in Conditions.__dataclass_fields__:
        if field == "family":
            continue
        cells = [_cell(getattr(FAMILY_CONDITIONS[n], field)) for n in names]
        table.add_row(field.replace("_", " "), *cells)
    out.result({"families": {n: c.to_json() for n, c in FAMILY_CONDITIONS.items()}}, table)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
