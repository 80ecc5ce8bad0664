"""`morph summary`, `morph init` and what every command shares: help, exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner, Result

import morphspec
from morphspec.cli import summary as summary_module
from morphspec.cli.app import app
from morphspec.cli.options import JsonOpt

ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "COLUMNS": "200", "MORPH_DEBUG": None}
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))

SMALL = """\
morphspec: 1
name: small
vars: {r: 0.5}
input: {shape: [3, 8, 8]}
body:
  - conv: {name: conv, out: floor(16*r), kernel: 3, padding: 1}
  - batchnorm: {name: bn}
  - relu
  - global_avgpool
  - linear: {name: fc, out: 4}
"""

LM = """\
morphspec: 1
name: lm
input: {shape: [8], dtype: int64}
body:
  - embedding: {name: tok, vocab: 50, dim: 32}
  - position_embedding: {name: pos, max_len: 16}
  - residual:
      name: attn
      body:
        - layernorm: {name: ln}
        - attention: {name: a, heads: 4, head_dim: 8, kv_heads: 2, rope: true}
  - residual:
      name: ffn
      body: [rmsnorm: {name: ln}, mlp: {name: m, hidden: 64, act: silu, gated: true}]
  - linear: {name: head, out: 50, bias: false}
"""


def invoke(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env={**ENV, **env})


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- summary -------------------------------------------------------------------------------
def _check_summary_matches_model(spec: Path, *set_: str) -> dict[str, typing.Any]:
    args = [a for s in set_ for a in ("--set", s)]
    result = invoke("summary", str(spec), *args, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    model = morphspec.build(spec, set=list(set_))
    assert doc["total_params"] == sum(p.numel() for p in model.parameters())
    assert doc["total_params"] == sum(row["params"] for row in doc["layers"])
    assert doc["total_flops"] == sum(row["flops"] for row in doc["layers"])
    named = dict(model.named_parameters())
    for row in doc["layers"]:
        prefix = row["path"] + "."
        own = sum(p.numel() for k, p in named.items() if k.startswith(prefix))
        assert row["params"] == own, row
    return doc


@pytest.mark.parametrize("text", [SMALL, LM], ids=["small", "lm"])
def test_summary_counts_match_the_built_model(tmp_path: Path, text: str) -> None:
    _check_summary_matches_model(write(tmp_path, text))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_summary_counts_match_examples(path: Path) -> None:
    _check_summary_matches_model(path)


def test_summary_json_by_hand(tmp_path: Path) -> None:
    doc = _check_summary_matches_model(write(tmp_path, SMALL), "r=1")
    assert set(doc) == {"ok", "name", "input", "output", "layers", "total_params", "total_flops"}
    assert (doc["name"], doc["input"], doc["output"]) == ("small", [3, 8, 8], [4])
    layers = {row["path"]: row for row in doc["layers"]}
    assert list(layers) == ["conv", "bn", "3", "fc"]  # relu keeps the shape: left out
    # conv: 16 filters of 3x3x3 at 8x8 positions; multiply-adds x 2
    assert layers["conv"] == {
        "path": "conv",
        "kind": "conv",
        "out_shape": [16, 8, 8],
        "params": 16 * 27 + 16,
        "flops": 2 * 16 * 27 * 64,
    }
    assert layers["bn"]["params"] == 32  # weight and bias; running stats are buffers
    assert layers["3"] == {
        "path": "3", "kind": "global_avgpool", "out_shape": [16], "params": 0, "flops": 0
    }  # fmt: skip
    assert layers["fc"]["flops"] == 2 * 16 * 4 and layers["fc"]["params"] == 68


def test_summary_table(tmp_path: Path) -> None:
    result = invoke("summary", str(write(tmp_path, SMALL)))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("small  input [3, 8, 8] float32, output [4]")
    for word in ("conv", "[8, 8, 8]", "global_avgpool", "fc", "total", "276"):
        assert word in out
    assert result.stderr == ""


def test_summary_error_is_located(tmp_path: Path) -> None:
    spec = write(tmp_path, SMALL.replace("kernel: 3", "kernal: 3"))
    result = invoke("summary", str(spec), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    typo = [p for p in doc["problems"] if "kernal" in p["message"]]
    assert typo == [
        {
            "file": str(spec),
            "line": 6,
            "col": 42,
            "message": "unknown key 'kernal' (did you mean 'kernel'?)",
        }
    ]


# -- init ----------------------------------------------------------------------------------
def test_init_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    spec, out = write(tmp_path, SMALL), tmp_path / "ckpt.safetensors"
    result = invoke("init", str(spec), "-o", str(out), "--seed", "7", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["path"] == str(out) and doc["seed"] == 7
    assert doc["params"] == 8 * 27 + 8 + 16 + 8 * 4 + 4
    model = morphspec.load(spec, out)
    torch.manual_seed(7)
    fresh = morphspec.build(spec)
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert meta["morphspec.version"] == morphspec.__version__
    assert json.loads(meta["morphspec.spec"])["name"] == "small"
    assert meta["morphspec.seed"] == "7"


def test_init_is_deterministic_and_seeded(tmp_path: Path) -> None:
    spec = write(tmp_path, SMALL)
    paths = [tmp_path / f"{name}.safetensors" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("1", "1", "2"), strict=True):
        assert invoke("init", str(spec), "-o", str(path), "--seed", seed).exit_code == 0
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c


def test_init_applies_set(tmp_path: Path) -> None:
    spec, out = write(tmp_path, SMALL), tmp_path / "wide.safetensors"
    result = invoke("init", str(spec), "-o", str(out), "--set", "r=1")
    assert result.exit_code == 0, result.output
    model = morphspec.load(spec, out, set={"r": 1})
    assert model.state_dict()["conv.weight"].shape == (16, 3, 3, 3)
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["morphspec.spec"])["vars"] == {"r": 1}


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    spec, out = write(tmp_path, SMALL), tmp_path / "ckpt.safetensors"
    out.write_bytes(b"precious")
    result = invoke("init", str(spec), "-o", str(out))
    assert result.exit_code == 1
    assert f"{out}: the output file exists; pass --force" in result.stderr
    assert out.read_bytes() == b"precious"
    result = invoke("init", str(spec), "-o", str(out), "--force")
    assert result.exit_code == 0, result.output
    morphspec.load(spec, out)


def test_init_into_missing_directory(tmp_path: Path) -> None:
    spec, out = write(tmp_path, SMALL), tmp_path / "no" / "such" / "dir" / "x.safetensors"
    result = invoke("init", str(spec), "-o", str(out))
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_init_needs_an_output(tmp_path: Path) -> None:
    assert invoke("init", str(write(tmp_path, SMALL))).exit_code == 2


# -- the app ---------------------------------------------------------------------------------
def test_help_documents_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout and "not function-preserving" in result.stdout
    for command in ("validate", "summary", "schema", "init"):
        assert command in result.stdout
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and "Examples" in sub.stdout and "morph " in sub.stdout


def test_usage_error_exits_2() -> None:
    result = invoke("summary", "--bogus")
    assert result.exit_code == 2
    assert "No such option" in result.stderr and result.stdout == ""
    assert invoke("no-such-command").exit_code == 2


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"morphspec {morphspec.__version__}\n"


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom\nsecond line")


def test_internal_error_has_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary_module, "resolve", _boom)
    spec = write(tmp_path, SMALL)
    result = invoke("summary", str(spec))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: internal error: RuntimeError: boom (")
    assert "MORPH_DEBUG=1" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1
    debug = invoke("summary", str(spec), MORPH_DEBUG="1")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    doc = json.loads(invoke("summary", str(spec), "--json").stdout)
    assert doc["ok"] is False and doc["problems"][0]["message"].startswith("internal error")


def test_json_commands_name_the_flag_as_json() -> None:
    """cli.guard finds the output format through the parameter name `as_json`."""
    for info in app.registered_commands:
        assert info.callback is not None
        hints = typing.get_type_hints(info.callback, include_extras=True)
        json_params = [name for name, hint in hints.items() if hint == JsonOpt]
        assert json_params in ([], ["as_json"]), info.name


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "MORPH_DEBUG")}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_python_dash_m_help() -> None:
    result = _run("-m", "morphspec", "--help")
    assert result.returncode == 0, result.stderr
    assert "Exit codes" in result.stdout and "validate" in result.stdout


def test_help_validate_summary_and_diff_do_not_import_torch(tmp_path: Path) -> None:
    spec = write(tmp_path, SMALL)
    code = f"""
import sys
from typer.testing import CliRunner
from morphspec.cli.app import app
for args in (["--help"], ["validate", {str(spec)!r}], ["summary", {str(spec)!r}],
             ["diff", {str(spec)!r}, {str(spec)!r}, "--student-set", "r=1"]):
    assert CliRunner().invoke(app, args).exit_code == 0, args
assert "torch" not in sys.modules, "torch was imported: import it inside commands"
"""
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
