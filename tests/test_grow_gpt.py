"""examples/grow_gpt.py: its `--quick` run (structure of the table and JSON, exactness at
the growth) and the specs it grows between."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from morphspec import load_spec, resolve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "grow_gpt.py"
SPECS = ROOT / "examples" / "specs"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grow_gpt", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grow_gpt"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_demo_grows_2x64_into_4x128_with_heads_doubled() -> None:
    teacher = resolve(load_spec(SPECS / "gpt_mini.yaml"))
    student = resolve(load_spec(SPECS / "gpt_mini_grown.yaml"))
    assert teacher.spec.vars["vocab"] == student.spec.vars["vocab"] == 256
    t, s = (dict(a.spec.vars) for a in (teacher, student))
    assert (t["layers"], t["dim"], t["heads"]) == (2, 64, 4)
    assert (s["layers"], s["dim"], s["heads"]) == (4, 128, 8)
    assert student.flops() > 6 * teacher.flops()


def test_the_split_is_by_file_name_and_bounded() -> None:
    ex = _example()
    cfg = ex.Config(train_bytes=50_000, val_bytes=10_000)
    train, val = ex.load_text(cfg)
    assert len(train) == 50_000 and len(val) == 10_000
    assert int(train.max()) < 256 and int(val.min()) >= 0
    again, _ = ex.load_text(cfg)
    assert bool((train == again).all())


@pytest.mark.slow
def test_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "r.json"
    summary = _example().main(
        ["--quick", "--json", str(out_json), "--plot", str(tmp_path / "p.png")]
    )
    printed = capsys.readouterr().out
    kinds = ["scratch", "r2r", "net2net", "netmorph"]
    assert list(summary["kinds"]) == kinds
    for kind in kinds:
        assert f"\n| {kind} | " in printed
    assert json.loads(out_json.read_text())["kinds"].keys() == set(kinds)
    scratch = summary["kinds"]["scratch"]["seeds"][0]
    assert scratch["saving"] == 0.0  # the target is its own final loss
    budget = summary["kinds"]["scratch"]["curves"][0]["flops"][-1]
    for kind in kinds:
        curve = summary["kinds"][kind]["curves"][0]
        assert curve["flops"] == sorted(curve["flops"]) and curve["flops"][-1] <= budget * 1.0001
        assert all(math.isfinite(v) for v in curve["loss"])
    for kind in kinds[1:]:
        g = summary["growth"][f"0-{kind}"]
        assert abs(g["val_after"] - g["val_before"]) < 1e-5  # growth kept the function
        assert g["max_abs_logit_diff"] < 1e-4  # float32
        assert 0 < g["flops"] < budget
