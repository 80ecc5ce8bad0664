"""Shared by the adversarial test modules (one per surface): a CLI runner, a teacher and
student pair, and the check that a refusal is clean (exit code, message, no traceback)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
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


GPT2_CONFIG: dict[str, Any] = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 30,
    "n_embd": 8,
    "n_head": 2,
    "n_layer": 2,
    "n_positions": 12,
}


def hf_folder(root: Path, config: dict[str, Any] | None = None, name: str = "hf") -> Path:
    """A Hugging Face folder written by hand (config.json, seeded weights under HF names)."""
    from morphspec.errors import Mark
    from morphspec.interop import BY_MODEL_TYPE
    from morphspec.interop.importer import resolve_text, spec_text

    config = config or GPT2_CONFIG
    family = BY_MODEL_TYPE[config["model_type"]]
    arch = resolve_text(spec_text(family, family.read(config, Mark("c")), "t", "test"), root)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in arch.state_shapes().items()}
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(family.keymap.to_hf(state), str(folder / "model.safetensors"), {"format": "pt"})
    return folder


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under `folder` with its bytes (or link target, or 'dir'): a run that
    must change nothing leaves this equal."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "special"
    return out
