"""Checkpoint I/O: bit-exact round trips, sharded sets, clear errors, atomic writes."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from morphspec.checkpoint import (
    FORMAT_KEYS,
    INDEX_NAME,
    CheckpointReader,
    TensorEntry,
    check_keys,
    load_state_dict,
    make_metadata,
    save_state_dict,
    write_safetensors,
)
from morphspec.errors import CheckpointError


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, 5, generator=g, dtype=torch.float64)
    return {
        "f32": base.float(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "f64": base,
        "i64": torch.randint(-(2**40), 2**40, (4,), generator=g),
        "i32": torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32),
        "i8": torch.randint(-128, 127, (7,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (3, 1, 2), generator=g, dtype=torch.uint8),
        "bool": torch.rand(5, generator=g) > 0.5,
        "scalar_bf16": torch.tensor(1.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "nan": torch.tensor([float("nan"), -0.0, float("inf")]),
        "strided": base.float().t(),  # non-contiguous input must still be written correctly
    }


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def _entries(state: dict[str, torch.Tensor]) -> list[TensorEntry]:
    return [TensorEntry(k, tuple(t.shape), t.dtype, _const(t)) for k, t in state.items()]


def _const(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: tensor


def _write(tmp_path: Path, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    write_safetensors(path, _entries(_state()), {"format": "pt", "note": "x"})
    return path


def _sharded(tmp_path: Path) -> Path:
    state = _state()
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[:5],
        "model-00002-of-00002.safetensors": keys[5:],
    }
    weight_map = {}
    for i, (name, ks) in enumerate(shards.items()):
        save_file({k: state[k].contiguous() for k in ks}, tmp_path / name, {"shard": str(i)})
        weight_map.update({k: name for k in ks})
    index = tmp_path / INDEX_NAME
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    state = _state()
    path = _write(tmp_path)
    loaded = load_file(path)
    assert set(loaded) == set(state)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "x"}
        for key, tensor in state.items():
            assert _same_bits(loaded[key], tensor), key
            assert _same_bits(f.get_tensor(key), tensor), key
    with CheckpointReader(path) as r:
        assert r.keys() == sorted(state)
        assert r.metadata == {"format": "pt", "note": "x"}
        for key, tensor in state.items():
            assert r.shape(key) == tuple(tensor.shape)
            assert r.dtype(key) == tensor.dtype
            assert r.nbytes(key) == tensor.numel() * tensor.element_size()
            assert _same_bits(r.get(key), tensor), key
    assert all(_same_bits(v, state[k]) for k, v in load_state_dict(path).items())


def test_output_is_deterministic_whatever_the_entry_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_safetensors(a, _entries(_state()), {"format": "pt"})
    write_safetensors(b, list(reversed(_entries(_state()))), {"format": "pt"})
    assert a.read_bytes() == b.read_bytes()
    header_len = int.from_bytes(a.read_bytes()[:8], "little")
    assert header_len % 8 == 0


def test_get_returns_a_fresh_tensor(tmp_path: Path) -> None:
    with CheckpointReader(_write(tmp_path)) as r:
        r.get("f32").add_(1.0)
        assert _same_bits(r.get("f32"), _state()["f32"])


def test_sharded_set_from_index_or_directory(tmp_path: Path) -> None:
    index = _sharded(tmp_path)
    state = _state()
    for where in (index, tmp_path):
        with CheckpointReader(where) as r:
            assert r.keys() == sorted(state)
            assert r.metadata == {"shard": "0"}
            assert r.paths[0] == index and len(r.paths) == 3
            for key, tensor in state.items():
                assert r.shape(key) == tuple(tensor.shape)
                assert _same_bits(r.get(key), tensor.contiguous()), key
    sha = CheckpointReader(index).sha256()
    assert sha == CheckpointReader(tmp_path).sha256() and len(sha) == 64


def test_check_keys_lists_every_mismatch(tmp_path: Path) -> None:
    expected = {k: tuple(t.shape) for k, t in _state().items()}
    del expected["f16"]  # unexpected in the checkpoint
    expected["missing.weight"] = (2, 2)
    expected["f32"] = (9, 9)  # mis-shaped
    with CheckpointReader(_write(tmp_path)) as r, pytest.raises(CheckpointError) as info:
        check_keys(r, expected, "student.yaml")
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 3
    assert all("student.yaml" in m for m in messages)
    assert any("missing" in m and "missing.weight" in m for m in messages)
    assert any("unexpected" in m and "'f16'" in m for m in messages)
    assert any("'f32'" in m and "[3, 5]" in m and "[9, 9]" in m for m in messages)
    with CheckpointReader(tmp_path / "model.safetensors") as r:
        check_keys(r, {k: tuple(t.shape) for k, t in _state().items()}, "ok")


def _raises_naming(path: Path, opener: Path | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        CheckpointReader(opener or path)
    assert path.name in str(info.value)
    return info.value


def test_truncated_in_data(tmp_path: Path) -> None:
    path = _write(tmp_path)
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    path.write_bytes(raw[: (header_end + len(raw)) // 2])
    assert "truncated" in str(_raises_naming(path))


def test_truncated_in_header(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    _raises_naming(path)


@pytest.mark.parametrize(
    "content", [b"", b"abc", b"\x10\x00\x00\x00\x00\x00\x00\x00not json!!!!!!!x"]
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content + bytes(range(256)) * 4 if content.startswith(b"\x10") else content)
    assert "not a safetensors file" in str(_raises_naming(path))


def test_bad_offsets_in_header(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4000]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    path = tmp_path / "offsets.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(16))
    _raises_naming(path)


def test_missing_file_and_missing_key(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "nope.safetensors")
    with CheckpointReader(_write(tmp_path)) as r, pytest.raises(CheckpointError, match="f32"):
        r.get("f33")


def test_missing_shard(tmp_path: Path) -> None:
    index = _sharded(tmp_path)
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.unlink()
    _raises_naming(shard, opener=index)


def test_key_in_index_absent_from_shard(tmp_path: Path) -> None:
    index = _sharded(tmp_path)
    data = json.loads(index.read_text())
    data["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    err = _raises_naming(tmp_path / "model-00001-of-00002.safetensors", opener=index)
    assert "ghost" in str(err)


def test_bad_index_json(tmp_path: Path) -> None:
    index = tmp_path / INDEX_NAME
    index.write_text("{not json")
    _raises_naming(index)


def _failing_entries(exc: BaseException) -> list[TensorEntry]:
    def boom() -> torch.Tensor:
        raise exc

    return [
        TensorEntry("a", (2,), torch.float32, lambda: torch.ones(2)),
        TensorEntry("b", (2,), torch.float32, boom),
        TensorEntry("c", (2,), torch.float32, lambda: torch.ones(2)),
    ]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    path = tmp_path / "out.safetensors"
    with pytest.raises(type(exc)):
        write_safetensors(path, _failing_entries(exc))
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old checkpoint")
    with pytest.raises(type(exc)):
        write_safetensors(path, _failing_entries(exc))
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"old checkpoint"


@pytest.mark.parametrize(
    "bad", [torch.ones(3), torch.ones(2, dtype=torch.float64), torch.ones(1, 2)]
)
def test_wrong_shape_or_dtype_from_produce(tmp_path: Path, bad: torch.Tensor) -> None:
    entries = [TensorEntry("w.weight", (2,), torch.float32, lambda: bad)]
    with pytest.raises(ValueError, match=r"w\.weight"):
        write_safetensors(tmp_path / "x.safetensors", entries)
    assert list(tmp_path.iterdir()) == []


def test_writer_needs_no_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch does not depend on numpy, so neither may writing a checkpoint."""

    def no_numpy(self: torch.Tensor, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(0)}
    save_state_dict(tensors, tmp_path / "x.safetensors")
    back = load_state_dict(tmp_path / "x.safetensors")
    assert torch.equal(back["a"], tensors["a"]) and back["b"].numel() == 0


def test_two_tensors_in_memory_at_most_and_progress(tmp_path: Path) -> None:
    """The next tensors are produced while the last one is written: while tensor i is made
    (by one of two producers, in either order), tensors before i - 1 are freed."""
    np = pytest.importorskip("numpy")
    alive: dict[int, weakref.ref[object]] = {}
    seen: list[int] = []

    def producer(i: int) -> Callable[[], torch.Tensor]:
        def make() -> torch.Tensor:
            gc.collect()
            older = [ref for j, ref in list(alive.items()) if j < i - 1]
            assert all(ref() is None for ref in older), "an older tensor is still held"
            # the weakref is to the buffer itself, so views kept by the writer count too
            buffer = np.full((4, 4), float(i), dtype=np.float32)
            alive[i] = weakref.ref(buffer)
            return torch.from_numpy(buffer)

        return make

    entries = [TensorEntry(f"t{i}", (4, 4), torch.float32, producer(i)) for i in range(4)]
    write_safetensors(tmp_path / "x.safetensors", entries, progress=seen.append)
    assert seen == [64, 128, 192, 256]


def test_sha256_is_stable_and_sensitive(tmp_path: Path) -> None:
    path = _write(tmp_path)
    first = CheckpointReader(path).sha256()
    assert CheckpointReader(path).sha256() == first
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    assert CheckpointReader(path).sha256() != first


def test_metadata(tmp_path: Path) -> None:
    meta = make_metadata('{"model": {}}', family="r2r", seed="0")
    assert set(FORMAT_KEYS) <= set(meta)
    assert meta["format"] == "pt" and meta["morphspec.family"] == "r2r"
    assert meta["morphspec.seed"] == "0" and meta["morphspec.spec"] == '{"model": {}}'
    with pytest.raises(ValueError, match="seed"):
        make_metadata("{}", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        save_state_dict({"a": torch.ones(1)}, tmp_path / "m.safetensors", {"seed": 0})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []
    save_state_dict({"a": torch.ones(1)}, tmp_path / "m.safetensors", meta)
    assert CheckpointReader(tmp_path / "m.safetensors").metadata == meta
