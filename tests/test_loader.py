"""checkpoint/loader.py and checkpoint/pool.py: tensors read by pread into reused buffers are
those of `reader.get(key).to(dtype)`, bit for bit, on every read path (issue 21)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from morphspec.checkpoint import CheckpointReader, save_state_dict
from morphspec.checkpoint import loader as loader_module
from morphspec.checkpoint.loader import TensorLoader, _shares, pool_for, resident_fraction
from morphspec.checkpoint.pool import SMALL, BufferPool, lending, pooled_empty


def _state() -> dict[str, torch.Tensor]:
    """Odd sizes, so most tensors start off a 4 KiB block and some off their item size
    (a float16 tensor of odd length before a float32 one); two are above the pool's 1 MiB."""
    gen = torch.Generator().manual_seed(0)
    return {
        "a_half": torch.randn(3, generator=gen).half(),  # 6 bytes: the next one is unaligned
        "b_float": torch.randn(5, 7, generator=gen),
        "c_big_half": torch.randn(700, 1001, generator=gen).half(),  # 1.4 MB
        "d_double": torch.randn(301, 17, generator=gen, dtype=torch.float64),
        "e_bf16": torch.randn(333, 5, generator=gen).bfloat16(),
        "f_big_float": torch.randn(1000, 401, generator=gen),  # 1.6 MB
        "g_int": torch.arange(11, dtype=torch.int64),
        "h_empty": torch.empty(0, 4),
    }


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_state_dict(_state(), tmp_path / "m.safetensors")


def _check_all(path: Path) -> int:
    """Load every float tensor twice in float32 and float64 (the second time from reused
    buffers); returns how many came through the pooled pread path."""
    pooled = 0
    with CheckpointReader(path) as reader, TensorLoader(reader, BufferPool(1 << 30)) as loader:
        for _round in range(2):
            for key in reader:
                if not reader.dtype(key).is_floating_point:
                    continue
                for dtype in (torch.float32, torch.float64):
                    want = reader.get(key).to(dtype)
                    got = loader.load(key, dtype)
                    pooled += id(got) in loader.lent
                    assert got.dtype == dtype and got.shape == want.shape, key
                    assert torch.equal(got, want), (key, dtype)
                    loader.give_back(got)
    return pooled


def test_direct_reads_equal_get_to(ckpt: Path) -> None:
    """The student is written past the page cache, so these reads are O_DIRECT on Linux."""
    assert _check_all(ckpt) == 16  # 4 keys x 2 dtypes x 2 rounds; b and d start off their item size


def test_buffered_reads_equal_get_to(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "_open_direct", lambda file: None)
    assert _check_all(ckpt) == 16  # 4 keys x 2 dtypes x 2 rounds; b and d start off their item size


def test_chunked_conversion_equals_get_to(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversions read 10 KiB at a time: chunk edges fall inside blocks and items."""
    monkeypatch.setattr(loader_module, "_CHUNK", 10_000)
    assert _check_all(ckpt) == 16  # 4 keys x 2 dtypes x 2 rounds; b and d start off their item size


def test_refused_direct_read_falls_back(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that opens with O_DIRECT and then refuses the read (EINVAL)."""
    real = loader_module._pread
    calls: list[int] = []

    def pread(fd: int, view: memoryview, offset: int) -> int:
        if not calls:
            calls.append(fd)
            raise OSError(22, "Invalid argument")
        return real(fd, view, offset)

    monkeypatch.setattr(loader_module, "_pread", pread)
    if loader_module.O_DIRECT:
        monkeypatch.setattr(loader_module, "resident_fraction", lambda fd: 0.0)
    assert _check_all(ckpt) == 16  # 4 keys x 2 dtypes x 2 rounds; b and d start off their item size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore is Linux's")
def test_resident_fraction_sees_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))  # written through the page cache
    fd = os.open(path, os.O_RDONLY)
    try:
        assert resident_fraction(fd) > 0.9
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        assert resident_fraction(fd) < 0.5
    finally:
        os.close(fd)


def test_a_buffer_an_output_lives_in_is_not_reused() -> None:
    buffer = torch.zeros(64, dtype=torch.uint8)
    view = buffer[8:16].view(torch.float32)
    assert _shares(view, buffer) and _shares((1, [view]), buffer) and _shares({"x": view}, buffer)
    assert not _shares(view.clone(), buffer) and not _shares(None, buffer)


def test_pool_reuses_and_bounds_its_buffers() -> None:
    pool = BufferPool(10 * SMALL)
    small = pool.take(100)
    assert small is not None and small.numel() == 100
    pool.give(small)
    assert not pool.free  # small requests are torch's
    a = pool.need(6 * SMALL)
    pool.give(a)
    assert pool.take(4 * SMALL) is a  # fits, and is at most twice the size asked
    pool.give(a)
    b = pool.need(8 * SMALL)  # 6 + 8 > the cap of 10: the free one goes first
    assert b is not a and not pool.free and pool.out == 8 * SMALL
    assert pool.take(4 * SMALL, optional=True) is None  # 8 + 4 > 10: refused
    c = pool.need(4 * SMALL)  # needed: made past the cap
    assert pool.out == 12 * SMALL
    pool.give(b)
    pool.forget(c)
    assert pool.out == 0 and pool.free == [b]


def test_verification_pool_keeps_one_largest_tensor(ckpt: Path) -> None:
    """Loads one layer at a time: a buffer goes back to the pool and serves the next load;
    nothing stays out once given back."""
    with CheckpointReader(ckpt) as reader:
        pool = pool_for(reader)
        assert pool.cap >= reader.nbytes("f_big_float")
        with TensorLoader(reader, pool) as loader:
            first = loader.load("f_big_float", torch.float32)
            home = first.untyped_storage().data_ptr()
            loader.give_back(first)
            again = loader.load("f_big_float", torch.float32)
            assert again.untyped_storage().data_ptr() == home
            loader.give_back(again)
            assert pool.out == 0


def test_pooled_empty_lends_only_inside_lending() -> None:
    pool = BufferPool(1 << 30)
    assert pooled_empty((4, 4), torch.float32).numel() == 16
    with lending(pool) as lent:
        x = pooled_empty((SMALL // 4, 2), torch.float32)
        y = pooled_empty((3,), torch.float64)
    assert x.shape == (SMALL // 4, 2) and x.dtype == torch.float32 and y.shape == (3,)
    assert len(lent) == 1 and x.untyped_storage().data_ptr() == lent[0].data_ptr()
