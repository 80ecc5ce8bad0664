"""Shared by the adversarial test modules (one per surface): a CLI runner, a teacher and
student pair, and the check that a refusal is clean (exit code, message, no traceback)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from morphspec.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "COLUMNS": "200", "MORPH_DEBUG": None}


MLP = """\
morphspec: 1
name: mlp
vars: {width: 8}
input: {shape: [4]}
body:
  - linear: {name: fc1, out: width}
  - relu
  - linear: {name: head, out: 3}
"""
WIDE = "morphspec: 1\nname: wide\nextends: t.yaml\nvars: {width: 12}\n"


def invoke(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env={**ENV, **env})


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(result: Result, *words: str, code: int = 1) -> str:
    """The result failed cleanly with `code`, mentioning every word; returns stderr."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def hidden(folder: Path) -> list[str]:
    """Staging and temp files a run might leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A teacher spec, a student that extends it, and a teacher checkpoint."""
    t, s = write(tmp_path, "t.yaml", MLP), write(tmp_path, "s.yaml", WIDE)
    ckpt = tmp_path / "t.safetensors"
    assert invoke("init", str(t), "-o", str(ckpt)).exit_code == 0
    return t, s, ckpt


def convert(pair: tuple[Path, Path, Path], out: Path, *extra: str) -> Result:
    t, s, ckpt = pair
    return invoke("convert", str(t), str(s), str(ckpt), "-o", str(out), *extra)
