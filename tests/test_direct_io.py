"""checkpoint/direct.py: the page-cache-bypassing writer gives the bytes of a plain write.

The writer gathers bytes in an aligned buffer, pads the last block, truncates, and puts
the final header over the first bytes at the end; any slip there changes the file. Every
case compares against the same bytes written with ordinary `write` calls.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from morphspec.checkpoint import direct
from morphspec.checkpoint.direct import AppendFile
from morphspec.checkpoint.writer import save_state_dict


def _write(path: Path, pieces: list[bytes], head: bytes | None, use_direct: bool) -> AppendFile:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with AppendFile(fd, keep_head=len(head) if head else 0, direct=use_direct) as f:
        for piece in pieces:
            assert f.write(piece) == len(piece)
        f.finish(head)
    return f


def _expected(pieces: list[bytes], head: bytes | None) -> bytes:
    whole = b"".join(pieces)
    return head + whole[len(head) :] if head else whole


@pytest.fixture
def small_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three blocks per buffer, so that a few KB already flush it many times."""
    monkeypatch.setattr(direct, "_BUFFER", 3 * 4096)


@pytest.mark.usefixtures("small_buffer")
def test_random_pieces_give_the_bytes_of_a_plain_write(tmp_path: Path) -> None:
    """60 seeded cases of pieces (empty, 1 byte, unaligned, several buffers long) with and
    without a rewritten head: all 60 must match byte for byte, on both paths."""
    rng = random.Random(0)
    for case in range(60):
        sizes = [
            rng.choice([0, 1, 7, 4095, 4096, 4097, 12288, 30001]) for _ in range(rng.randint(1, 6))
        ]
        pieces = [rng.randbytes(n) for n in sizes]
        total = sum(sizes)
        keep = min(total, rng.choice([0, 8, 100, 5000]))
        head = rng.randbytes(keep) if keep else None
        want = _expected(pieces, head)
        for use_direct in (True, False):
            path = tmp_path / f"{case}-{use_direct}.bin"
            _write(path, pieces, head, use_direct)
            assert path.read_bytes() == want, (case, sizes, keep, use_direct)


def test_direct_is_used_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    """On Linux the test directory's filesystem takes O_DIRECT (tmpfs does not: skip)."""
    if not direct.O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
    with AppendFile(fd) as f:
        if not f.direct:
            pytest.skip("this filesystem refuses O_DIRECT")
        f.write(b"x" * 10_000)
        f.finish()
    assert (tmp_path / "probe").read_bytes() == b"x" * 10_000


@pytest.mark.usefixtures("small_buffer")
def test_einval_mid_file_falls_back_to_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that opened with O_DIRECT but refuses a direct write: the same bytes."""
    real = os.pwrite
    refused = []

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if offset == 3 * 4096 and not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    pieces = [bytes(range(256)) * 100, b"tail"]
    f = _write(tmp_path / "f.bin", pieces, b"HEAD", use_direct=True)
    assert (tmp_path / "f.bin").read_bytes() == _expected(pieces, b"HEAD")
    if direct.O_DIRECT and refused:
        assert not f.direct


def test_other_errors_are_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk is the caller's to report (checkpoint/output.py names the file)."""

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    monkeypatch.setattr(direct.os, "write", pwrite)
    with pytest.raises(OSError) as info:
        _write(tmp_path / "f.bin", [b"y" * (9 << 20)], None, use_direct=True)
    assert info.value.errno == errno.ENOSPC


def test_head_of_another_length_is_refused(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    with AppendFile(fd, keep_head=4) as f:
        f.write(b"abcdefgh")
        with pytest.raises(ValueError, match="length"):
            f.finish(b"abc")


def test_safetensors_file_loads_and_matches_the_buffered_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd-sized float16 and float64 tensors across two 8 MiB buffers: safetensors loads
    the file bit for bit, and it has the bytes of the same file written without O_DIRECT."""
    gen = torch.Generator().manual_seed(0)
    state = {
        "a": torch.randn(1001, 1003, generator=gen, dtype=torch.float64),  # 8 MB: > 1 buffer
        "b": torch.randn(3, 5, generator=gen).half(),
        "c": torch.arange(7, dtype=torch.int64),
    }
    ours, plain = tmp_path / "ours.safetensors", tmp_path / "plain.safetensors"
    save_state_dict(state, ours, {"k": "v"})
    back = load_file(str(ours))
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor)
    monkeypatch.setattr(direct, "O_DIRECT", 0)
    save_state_dict(state, plain, {"k": "v"})
    assert ours.read_bytes() == plain.read_bytes()


def test_producers_keep_order_and_the_memory_bound() -> None:
    """Entries (large, small and one with scratch) come out in order, and those started
    but not yet written never hold more than twice the largest entry (one always runs)."""
    import threading
    import time

    from morphspec.checkpoint.writer import TensorEntry, produced

    live: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def entry(key: str, n: int, scratch: int = 0) -> TensorEntry:
        def make() -> torch.Tensor:
            with lock:
                live.append(n + scratch)
                peak[0] = max(peak[0], sum(live))
            time.sleep(0.01)
            return torch.full((n,), len(key), dtype=torch.uint8)

        return TensorEntry(key, (n,), torch.uint8, make, scratch)

    sizes = [100, 1, 100, 1, 50, 50, 50, 1, 100, 100, 1]
    entries = [entry(f"k{i:02d}", n) for i, n in enumerate(sizes)]
    entries.insert(5, entry("k04x", 10, scratch=500))  # alone: larger than the bound
    seen = []
    for (data, _owner), e in zip(produced(entries, producers=3), entries, strict=True):
        assert len(data) == e.nbytes
        seen.append(e.key)
        with lock:
            live.remove(e.nbytes + e.scratch)
    assert seen == [e.key for e in entries]
    assert peak[0] == 510  # the scratch entry ran alone; otherwise <= 2 x 100
