"""Hostile Hugging Face folders (issue 18): config.json goes through a typed model, so every
bad value is one line naming the field (never an internal error), and no input file is
opened unless it is a regular file (a FIFO config once hung import-hf forever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from adversarial import GPT2_CONFIG, ROOT, hf_folder, hidden, invoke, refused

LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 30,
    "hidden_size": 8,
    "intermediate_size": 12,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
}


def _import(folder: Path, config_text: str, out: Path) -> str:
    """import-hf of `folder` with config.json replaced: refused, nothing written; stderr."""
    (folder / "config.json").write_text(config_text, encoding="utf-8")
    err = refused(invoke("import-hf", str(folder), "-o", str(out)), f"{folder / 'config.json'}: ")
    assert not out.exists() and hidden(out.parent) == []
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("base", "change", "words"),
    [
        (GPT2_CONFIG, {"n_head": 0}, "n_head must be a whole number >= 1, got 0"),
        (GPT2_CONFIG, {"n_head": 3}, "n_embd 8 is not a multiple"),
        (GPT2_CONFIG, {"architectures": 5}, "architectures must be a list of strings, got 5"),
        (GPT2_CONFIG, {"n_embd": float("inf")}, "n_embd must be a whole number >= 1"),
        (GPT2_CONFIG, {"n_embd": 12.5}, "n_embd must be a whole number >= 1, got 12.5"),
        (GPT2_CONFIG, {"n_embd": "12"}, 'n_embd must be a whole number >= 1, got "12"'),
        (GPT2_CONFIG, {"n_layer": True}, "n_layer must be a whole number >= 1, got true"),
        (GPT2_CONFIG, {"layer_norm_epsilon": -1e-5}, "layer_norm_epsilon must be a finite"),
        (GPT2_CONFIG, {"layer_norm_epsilon": 0}, "(0 or below makes NaN)"),
        (GPT2_CONFIG, {"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or"),
        (GPT2_CONFIG, {"model_type": 5}, "unsupported architecture: model_type 5"),
        (GPT2_CONFIG, {"vocab_size": None}, "vocab_size must be a whole number"),
        (LLAMA, {"rope_scaling": "linear"}, 'rope_scaling must be an object ({...}), got "linear"'),
        (LLAMA, {"rope_parameters": {"rope_theta": -1}}, "rope_parameters.rope_theta must be"),
        (LLAMA, {"rms_norm_eps": float("nan")}, "rms_norm_eps must be a finite number > 0"),
        (LLAMA, {"num_key_value_heads": 3}, "num_key_value_heads = 3: it must divide 4"),
        (LLAMA, {"num_attention_heads": 3, "num_key_value_heads": 3}, "hidden_size 8 is not a"),
        (LLAMA, {"hidden_size": None}, "config.json field hidden_size must be"),
    ],
)
def test_bad_config_values_are_one_line_naming_the_field(
    tmp_path: Path, base: dict[str, Any], change: dict[str, Any], words: str
) -> None:
    folder = hf_folder(tmp_path, base)
    err = _import(folder, json.dumps({**base, **change}), tmp_path / "t.yaml")
    assert words in err, err


def test_a_missing_field_and_huge_numbers_are_named(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path)
    lacking = {k: v for k, v in GPT2_CONFIG.items() if k != "n_layer"}
    assert "lacks n_layer" in _import(folder, json.dumps(lacking), tmp_path / "t.yaml")
    text = json.dumps(GPT2_CONFIG).replace('"n_embd": 8', '"n_embd": 1e400')
    assert "n_embd must be a whole number >= 1, got Infinity" in _import(
        folder, text, tmp_path / "t.yaml"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests deeper than 32 levels"),
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nests deeper than 32 levels"),
        ("[1, 2]", "must hold a JSON object ({...}), not a list"),
        ("{", "not readable JSON"),
        ('"gpt2"', "not a str"),
    ],
)
def test_config_json_shapes_are_refused(tmp_path: Path, text: str, words: str) -> None:
    folder = hf_folder(tmp_path)
    assert words in _import(folder, text, tmp_path / "t.yaml")


def test_import_refusals_name_the_config_not_a_temporary_spec(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path, LLAMA)
    err = _import(folder, json.dumps({**LLAMA, "head_dim": 3}), tmp_path / "t.yaml")
    assert "the spec made from it is invalid" in err and "even head_dim, got 3" in err
    assert ".unverified" not in err and ".yaml" not in err


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=90
    )


@pytest.mark.slow  # two interpreters, so a regression times out instead of hanging
def test_a_fifo_config_or_index_is_refused_without_hanging(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    cli = (
        "from morphspec.cli.app import main; import sys; sys.argv=['morph', *sys.argv[1:]]; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", cli, "import-hf", str(folder), "-o", str(tmp_path / "t.yaml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
        timeout=90,
    )
    assert proc.returncode == 1 and "not a regular file" in proc.stderr, proc.stderr
    assert str(folder / "config.json") in proc.stderr and "Traceback" not in proc.stderr
    index = tmp_path / "model.safetensors.index.json"
    os.mkfifo(index)
    code = (
        "from morphspec.checkpoint import CheckpointReader\n"
        "from morphspec.errors import MorphError\n"
        "try:\n    CheckpointReader('model.safetensors.index.json')\n"
        "except MorphError as e:\n    print(e)\n"
    )
    proc = _run(code, tmp_path)
    assert "not a regular file" in proc.stdout, proc.stdout + proc.stderr


def test_shard_sizes_must_be_finite(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path)
    spec = tmp_path / "t.yaml"
    assert invoke("import-hf", str(folder), "-o", str(spec)).exit_code == 0
    for size in ("inf", "nan", "infGB", "0.1", "-5MB"):
        result = invoke(
            "export-hf", str(spec), str(folder), "-o", str(tmp_path / "o"), "--shard-size", size
        )
        refused(result, "is not a size", code=2)
    assert not (tmp_path / "o").exists() and hidden(tmp_path) == []
