"""benchmarks/payoff.py: the frontier arithmetic on made-up curves, and its `--quick` run
(every arm, tuning seeds never reported, the JSON fields the issue lists, exactness of the
exact families at the growth, `--resume`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import payoff
from payoff_report import first_reach, summarise


def _run(seed: int, curve: list[list[float]], step: int | None = None) -> dict[str, Any]:
    run: dict[str, Any] = {"seed": seed, "curve": curve, "final_loss": curve[-1][1]}
    if step is not None:
        run |= {"growth_step": step, "growth": {"step": step}}
    return run


def test_first_reach_is_the_first_evaluation_at_or_below() -> None:
    curve = [[0.0, 5.0], [1.0, 3.0], [2.0, 2.0], [3.0, 2.5], [4.0, 1.9]]
    assert first_reach(curve, 2.0) == 2.0
    assert first_reach(curve, 1.95) == 4.0
    assert first_reach(curve, 1.0) is None


def test_savings_and_the_frontier() -> None:
    """Grown reaches big's final loss at half the budget and ends below both scratch arms
    on seed 0; on seed 1 small is lower than grown, so that seed is not below."""
    big = [_run(0, [[0, 5], [5, 3], [10, 2.0]]), _run(1, [[0, 5], [5, 3], [10, 2.0]])]
    small = [_run(0, [[0, 5], [5, 2.5], [10, 2.1]]), _run(1, [[0, 5], [5, 2.5], [10, 1.7]])]
    grown = [_run(0, [[0, 5], [5, 2.0], [10, 1.8]], 7), _run(1, [[0, 5], [5, 2.2], [10, 1.8]], 7)]
    chosen = {"scratch-big": {"lr": 1.0}, "scratch-small": {"lr": 2.0},
              "grown-x": {"lr": 3.0, "grow_frac": 0.25}}  # fmt: skip
    out = summarise({"scratch-big": big, "scratch-small": small, "grown-x": grown}, chosen,
                    [100], [0, 1], 10.0, 20.0)  # fmt: skip
    assert out["budget_flops"] == 10.0 and out["tokens_per_param"] == 20.0
    g = out["arms"]["grown-x"]
    assert g["flops_saved_per_seed"] == {"0": 0.5, "1": 0.0}
    assert g["flops_saved"] == 0.25
    assert g["below_frontier_per_seed"] == {"0": True, "1": False}
    assert out["frontier_final_loss"] == min(2.0, (2.1 + 1.7) / 2)
    assert g["below_frontier"] is True  # the means: 1.8 < min(2.0, 1.9)
    for key in ("lr", "growth_step", "tuning_seeds", "seeds", "curves", "final_loss"):
        assert key in g
    assert "growth_step" not in out["arms"]["scratch-big"]


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    args = ["--quick", "--quiet", "--json", str(tmp_path / "r.json"),
            "--plot", str(tmp_path / "p.png"), "--log", str(log)]  # fmt: skip
    summary = payoff.main(args)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["arms"]) == set(payoff.ARMS)
    assert doc["budget_flops"] > 0 and doc["tokens_per_param"] >= 2.0
    for name, arm in doc["arms"].items():
        assert arm["tuning_seeds"] == [100] and arm["seeds"] == [0, 1]
        assert f"{arm['lr']:g}" in summary["tuning"][name]["lr_sweep"]
        assert len(summary["tuning"][name]["lr_sweep"]) >= 3
        for seed in ("0", "1"):
            curve = arm["curves"][seed]
            flops = [f for f, _ in curve]
            assert flops == sorted(flops) and flops[-1] <= doc["budget_flops"] * (1 + 1e-9)
            assert all(math.isfinite(v) for _, v in curve)
            assert arm["final_loss"][seed] == curve[-1][1]
        if name.startswith("grown"):
            assert arm["growth_step"] > 0 and isinstance(arm["below_frontier"], bool)
            assert "flops_saved" in arm
            rel = [g["rel_err"] for g in arm["growth"].values()]
            if name == "grown-stack":
                assert min(rel) > 1e-3  # stacking changes the function
            else:
                assert max(rel) < 1e-4  # float32, exact families
    assert summary["same_students"] == {"grown-net2net": "grown-netmorph"}
    net2net, netmorph = doc["arms"]["grown-net2net"], doc["arms"]["grown-netmorph"]
    assert net2net["final_loss"] == netmorph["final_loss"]
    assert len(summary["tuning"]["grown-r2r"]["frac_sweep"]) >= 3
    seeds = {json.loads(line)["key"][3] for line in log.read_text().splitlines()}
    assert seeds == {100, 0, 1}
    lines = len(log.read_text().splitlines())
    again = payoff.main([*args, "--resume"])  # nothing left to run
    assert len(log.read_text().splitlines()) == lines
    assert again["arms"]["grown-stack"]["final_loss"] == doc["arms"]["grown-stack"]["final_loss"]


def test_reported_and_tuning_seeds_must_differ(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        payoff.parse(["--seeds", "0,1,2", "--tuning-seeds", "2,3"])
    assert err.value.code == 2
    assert "must not overlap" in capsys.readouterr().err


def test_shapes_are_seeded_balanced_and_distinct() -> None:
    import torch
    from payoff_cnn import draw_shapes

    x, y = draw_shapes(2000, torch.Generator().manual_seed(3), 0.25)
    again, _ = draw_shapes(2000, torch.Generator().manual_seed(3), 0.25)
    assert x.shape == (2000, 1, 16, 16) and torch.equal(x, again)
    counts = torch.bincount(y, minlength=10)
    assert int(counts.min()) > 150  # ten classes, about 200 each
    clean, cls = draw_shapes(2000, torch.Generator().manual_seed(3), 0.0)
    means = torch.stack([clean[cls == c].mean(0) for c in range(10)]).flatten(1)
    assert float(torch.cdist(means, means).add(torch.eye(10) * 9).min()) > 0.1


@pytest.mark.slow
def test_quick_cnn_run(tmp_path: Path) -> None:
    arms = "scratch-big,scratch-small,grown-stack,grown-r2r"
    summary = payoff.main(["--task", "cnn", "--quick", "--quiet", "--arms", arms,
                           "--plot", str(tmp_path / "p.png")])  # fmt: skip
    assert list(summary["arms"]) == arms.split(",")
    rel = summary["arms"]["grown-r2r"]["growth"]["0"]["rel_err"]
    assert rel < 1e-4  # the zero-gain batchnorm: exact in eval mode
