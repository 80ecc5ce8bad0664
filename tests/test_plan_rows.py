"""`Plan.describe(family)` (issue 17): typed rows that the table and `--json` both render,
so the JSON says everything the table shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from morphspec.cli.app import app
from morphspec.growth.ops import PlanRow
from morphspec.growth.plan import plan_for

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"


def test_rows_depend_on_the_family_through_the_catalog() -> None:
    _, _, plan = plan_for(SPECS / "mlp.yaml", SPECS / "mlp.yaml", student_set=["width=33"])
    r2r, net2net = plan.describe("r2r"), plan.describe("net2net")
    assert all(isinstance(r, PlanRow) for r in r2r) and len(r2r) == len(plan.ops)
    assert any("pairs" in r.change for r in r2r)
    assert not any("pairs" in r.change for r in net2net)
    assert any("channels" in r.change for r in net2net)


@pytest.mark.parametrize(
    "teacher, student",
    [("resnet_cifar10.yaml", "resnet_cifar18.yaml"), ("mlp.yaml", "mlp_wide.yaml")],
)
def test_table_and_json_show_the_same_rows(teacher: str, student: str) -> None:
    args = ["diff", str(SPECS / teacher), str(SPECS / student)]
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    table = CliRunner().invoke(app, args, env={"COLUMNS": "80"}, terminal_width=80).stdout
    assert doc["rows"] and max(map(len, table.splitlines())) <= 80
    words = set(re.findall(r"[^\s│┃┏┓┗┛━─┡┩└┘┌┐]+", table))
    for row in doc["rows"]:
        for value in row.values():
            for word in value.split():
                # a long path folds across lines; its pieces are all there
                assert word in words or all(p in table for p in re.split(r"[.]", word)), word
