"""examples/grow_and_train.py: its `--quick` run and the specs it grows between."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from morphspec import load_spec, resolve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "grow_and_train.py"
SPECS = ROOT / "examples" / "specs"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grow_and_train", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["grow_and_train"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_student_is_teacher_wider_and_deeper() -> None:
    teacher = resolve(load_spec(SPECS / "digits_resnet.yaml"))
    student = resolve(load_spec(SPECS / "digits_resnet_wide.yaml"))
    via_set = resolve(load_spec(SPECS / "digits_resnet.yaml", set={"width": 16, "blocks": 2}))
    assert student.state_shapes() == via_set.state_shapes()
    assert student.node("layer2").args["times"] == 2 * teacher.node("layer2").args["times"]
    assert student.node("layer2").out.dims == (32, 8, 8)
    assert student.flops() > 6 * teacher.flops()


@pytest.mark.slow
def test_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    summary = _example().main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    names = ["scratch", "r2r", "net2net", "netmorph", "randpad"]
    assert list(summary["runs"]) == names
    for name in names:
        assert f"\n| {name} | " in out
    assert (tmp_path / "grow_and_train.json").is_file()
    runs = summary["runs"]
    epochs = summary["config"]["epochs"]
    grow_at = summary["config"]["grow_at"]
    scratch = runs["scratch"]
    assert len(scratch["curve_acc_mean"]) == len(scratch["curve_flops"]) == epochs
    for name in names[1:]:
        r = runs[name]
        assert len(r["curve_flops"]) == len(r["curve_acc_mean"]) >= epochs
        # within the scratch run's budget; cheaper per epoch before the growth
        assert r["train_flops"] <= scratch["train_flops"]
        assert r["curve_flops"][grow_at - 1] < scratch["curve_flops"][grow_at - 1]
        for at in r["at_growth"]:
            if name == "randpad":
                assert at["rel_err"] > 1e-3  # a random block changes the function
            else:  # exact at the moment of growth: same outputs, same test accuracy
                assert at["rel_err"] < 1e-4  # float32 training; ~1e-7 expected
                one_image = 100 / summary["config"]["test"]  # an argmax tie may flip in float32
                assert abs(at["grown_acc"] - at["teacher_acc"]) <= one_image
