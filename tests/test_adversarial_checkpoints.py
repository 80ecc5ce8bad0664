"""Hostile checkpoints: headers, indices, shard paths, non-finite and non-float teachers.

Every refusal: exit 1 (2 for usage), a message naming the file (FILE:LINE:COL where there
is one), no traceback, and nothing written or left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from adversarial import convert, hidden, invoke, pair, refused
from safetensors.torch import save_file

from morphspec.checkpoint import CheckpointReader
from morphspec.errors import CheckpointError

__all__ = ["pair"]


@pytest.mark.parametrize("name", ["../elsewhere.safetensors", "ABS", "sub/x.safetensors", ".."])
def test_shard_paths_cannot_escape(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"w": torch.zeros(2)}, str(outside))
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "sub" / "x.safetensors"))
    shard = str(outside) if name == "ABS" else name
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(CheckpointError, match="not a plain file name") as err:
        CheckpointReader(folder)
    assert err.value.problems[0].mark is not None
    assert err.value.problems[0].mark.file == str(index)


def _header_file(path: Path, header: object) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
    return path


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]},
        {"dtype": {"a": 1}, "shape": [2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2], "data_offsets": [False, 8]},
        {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]},
    ],
)
def test_headers_with_wrong_types_are_refused(tmp_path: Path, entry: dict[str, object]) -> None:
    path = _header_file(tmp_path / "x.safetensors", {"w": entry})
    with pytest.raises(CheckpointError, match="corrupt header entry") as err:
        CheckpointReader(path)
    assert str(err.value).startswith(f"{path}: ")


def test_deeply_nested_index_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="nests too deeply"):
        CheckpointReader(tmp_path)


def test_deeply_nested_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.safetensors"
    raw = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CheckpointError, match="nests too deeply"):
        CheckpointReader(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_teacher_is_named(
    pair: tuple[Path, Path, Path], tmp_path: Path, bad: float
) -> None:
    t, _, ckpt = pair
    with CheckpointReader(ckpt) as reader:
        state = {k: reader.get(k) for k in reader}
        meta = reader.metadata
    state["fc1.weight"][0, 0] = bad
    save_file(state, str(ckpt), metadata=meta)
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out), f"{ckpt}: ", "not finite", "'fc1.weight'")
    assert not out.exists() and hidden(tmp_path) == []
    refused(invoke("verify", str(t), str(ckpt), str(t), str(ckpt)), "not finite")


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_finiteness_check_in_every_float_dtype(dtype: torch.dtype, bad: float) -> None:
    from morphspec.checkpoint.finite import check_finite_tensors
    from morphspec.errors import Mark

    good = torch.linspace(-2, 2, 100)
    check_finite_tensors([("w", good.to(dtype))], Mark("x"))
    worse = good.clone()
    worse[17] = bad
    with pytest.raises(CheckpointError, match="tensor 'w' holds"):
        check_finite_tensors([("ok", good.to(dtype)), ("w", worse.to(dtype))], Mark("x"))
