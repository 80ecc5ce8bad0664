"""Hostile command-line options: usage errors (exit 2) or located refusals (exit 1).

Every refusal: exit 1 (2 for usage), a message naming the file (FILE:LINE:COL where there
is one), no traceback, and nothing written or left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from adversarial import ROOT, convert, invoke, pair, refused, write
from safetensors.torch import save_file
from typer.testing import Result

from morphspec.checkpoint import CheckpointReader
from morphspec.errors import MorphError

__all__ = ["pair"]


def test_verify_of_another_models_checkpoint_is_short(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    t = pair[0]
    other = write(tmp_path, "other.yaml", LOTS_OF_KEYS)
    other_ckpt = tmp_path / "other.safetensors"
    assert invoke("init", str(other), "-o", str(other_ckpt)).exit_code == 0
    err = refused(invoke("verify", str(t), str(other_ckpt), str(t), str(other_ckpt)))
    assert len(err) < 3000 and len(err.splitlines()) <= 12, err
    assert "missing key 'fc1.weight'" in err and "more key problem(s)" in err
    assert "Arch(" not in err and "Node(" not in err


LOTS_OF_KEYS = """\
morphspec: 1
name: other
input: {shape: [4]}
body:
  - repeat: {times: 20, body: [linear: {name: l, out: 4}]}
"""


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_out_of_range_seed_is_a_usage_error(pair: tuple[Path, Path, Path], seed: str) -> None:
    t, s, ckpt = pair
    result = invoke("convert", str(t), str(s), str(ckpt), "--seed", seed, "--dry-run")
    refused(result, "--seed", code=2)


@pytest.mark.parametrize("option", ["--noise", "--init-scale"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_options_are_usage_errors(
    pair: tuple[Path, Path, Path], tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out, option, value), option, code=2)
    assert not out.exists()


def test_a_checkpoint_given_as_spec_is_named(pair: tuple[Path, Path, Path]) -> None:
    ckpt = pair[2]
    refused(invoke("summary", str(ckpt)), f"{ckpt}: ", "not UTF-8 text (is it a checkpoint?)")


def test_absurd_samples_are_refused(pair: tuple[Path, Path, Path]) -> None:
    t, _, ckpt = pair
    refused(invoke("verify", str(t), str(ckpt), str(t), str(ckpt), "--samples", "1e9"), code=2)
    refused(
        invoke("verify", str(t), str(ckpt), str(t), str(ckpt), "--samples", "1000000000"),
        "--samples",
        code=2,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "t.yaml", "--json"],
        ["validate", "--json", "--nope"],
        ["init", "t.yaml", "--seed", "x", "--json"],
        ["nosuchcommand", "--json"],
    ],
)
def test_usage_errors_under_json_are_one_document(tmp_path: Path, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "morphspec", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["problems"][0]["message"]


# -- issue 18 ------------------------------------------------------------------------------
def _verify(pair: tuple[Path, Path, Path], *extra: str) -> Result:
    t, _, ckpt = pair
    return invoke("verify", str(t), str(ckpt), str(t), str(ckpt), *extra)


@pytest.mark.parametrize("steps", ["100000", "10001", "-1", "1e3"])
def test_train_steps_are_bounded(pair: tuple[Path, Path, Path], steps: str) -> None:
    refused(_verify(pair, "--train-steps", steps), "--train-steps", code=2)


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-0.1", "1e9"])
def test_learning_rates_are_finite_and_bounded(pair: tuple[Path, Path, Path], lr: str) -> None:
    refused(_verify(pair, "--train-steps", "1", "--lr", lr), "--lr", code=2)


def test_drift_draws_each_batch_when_its_step_comes(
    pair: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import morphspec
    import morphspec.drift as drift

    t, _, ckpt = pair
    model, arch = morphspec.load(t, ckpt), morphspec.resolve(morphspec.load_spec(t))
    events: list[str] = []
    draw = drift.sample_inputs

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        events.append("draw")
        return draw(*args, **kwargs)

    monkeypatch.setattr(drift, "sample_inputs", counted)
    model.register_forward_hook(lambda *_: events.append("step") and None)
    result = drift.drift_ratio(model, model, arch, steps=3)
    assert result.ratio == pytest.approx(1.0)
    # the probe batch, its forward; then per model each step draws one batch, then runs it
    assert events[:2] == ["draw", "step"] and "draw,step,draw,step" in ",".join(events)
    assert events.count("draw") == 1 + 2 * 3
    with pytest.raises(MorphError, match="--train-steps must be a whole number"):
        drift.drift_ratio(model, model, arch, steps=100_000)
    with pytest.raises(MorphError, match="--lr must be a finite number"):
        drift.drift_ratio(model, model, arch, steps=1, lr=float("inf"))


CONV = """\
morphspec: 1
name: conv
input: {shape: [3, 8, 8]}
body:
  - conv: {name: c, out: 4, kernel: 3, padding: 1}
  - global_avgpool
  - linear: {name: head, out: 3}
"""


def test_verify_of_pairs_with_other_inputs_is_refused(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    t, _, ckpt = pair
    conv = write(tmp_path, "conv.yaml", CONV)
    conv_ckpt = tmp_path / "conv.safetensors"
    assert invoke("init", str(conv), "-o", str(conv_ckpt)).exit_code == 0
    result = invoke("verify", str(t), str(ckpt), str(conv), str(conv_ckpt))
    refused(result, f"{conv}", "has input [3, 8, 8]", "verify compares two models")


def test_a_teacher_that_computes_nan_is_named_not_the_student(
    pair: tuple[Path, Path, Path],
) -> None:
    ckpt = pair[2]
    with CheckpointReader(ckpt) as reader:
        state, meta = {k: reader.get(k) for k in reader}, reader.metadata
    state["fc1.weight"].fill_(3e38)  # finite weights whose products overflow to inf - inf
    state["head.weight"][:, ::2] *= -1
    save_file(state, str(ckpt), metadata=meta)
    refused(_verify(pair), "the teacher itself computes NaN or infinity", code=1)


def test_an_integer_teacher_is_refused_by_name(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ckpt = pair[2]
    with CheckpointReader(ckpt) as reader:
        state, meta = {k: (reader.get(k) * 10).to(torch.int32) for k in reader}, reader.metadata
    save_file(state, str(ckpt), metadata=meta)
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out), "tensor 'fc1.bias' of the teacher is int32", "floating-point")
    assert not out.exists()


RESIDUAL = """\
morphspec: 1
name: res
input: {shape: [4]}
body:
  - residual: {name: r, body: [linear: {name: fc, out: 4}]}
  - linear: {name: head, out: 3}
"""


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_probe_refuses_non_finite_inputs(tmp_path: Path, bad: float) -> None:
    spec = write(tmp_path, "res.yaml", RESIDUAL)
    ckpt, inputs = tmp_path / "res.safetensors", tmp_path / "inputs.safetensors"
    assert invoke("init", str(spec), "-o", str(ckpt)).exit_code == 0
    data = torch.randn(8, 4)
    data[3, 1] = bad
    save_file({"inputs": data}, str(inputs))
    result = invoke("probe", str(spec), str(ckpt), "--inputs", str(inputs))
    refused(result, f"{inputs}: ", "NaN or infinite")
