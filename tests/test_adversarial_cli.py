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

import pytest
from adversarial import ROOT, convert, invoke, pair, refused, write

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
