"""Streaming, atomic safetensors writer.

The format is written here rather than with `safetensors.torch.save_file` because that
needs the whole state_dict in memory; a grown student can be several times the teacher.
The header is computed from the planned shapes, then each tensor is produced, written and
dropped, so peak memory stays near the largest tensor. Data goes to a hidden temp file in
the target directory and is renamed into place only once complete and fsynced: an
interrupted run never leaves a half-written checkpoint, and never clobbers an old one.

Worker threads produce the next tensors (draws, copies) while this thread writes the
last one, past the page cache (`checkpoint/direct.py`); the tensors started and not yet
written hold at most twice the largest tensor, in buffers handed back once written
(`checkpoint/pool.py`). Metadata known only at the end (the teacher's hash, computed
meanwhile) is written over a same-length placeholder header.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import math
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from morphspec.checkpoint.direct import AppendFile
from morphspec.checkpoint.output import default_mode, disk_error, terminate_as_interrupt
from morphspec.checkpoint.pool import BufferPool, lending
from morphspec.checkpoint.reader import SAFETENSORS_DTYPES, CheckpointReader
from morphspec.errors import CheckpointError, Mark

__all__ = [
    "LateMetadata",
    "Sink",
    "TensorEntry",
    "check_entries",
    "final_header",
    "header_bytes",
    "load_state_dict",
    "produced",
    "save_state_dict",
    "write_file",
    "write_safetensors",
]

LateMetadata = Callable[[], Mapping[str, str]]
"""Metadata computed while the tensors are written; it must encode to the same length as
the metadata given up front (a placeholder of the same size)."""


class Sink(Protocol):
    """Where `write_file` appends bytes (a `checkpoint.direct.AppendFile`, or any binary
    file)."""

    def write(self, data: memoryview | bytes, /) -> int: ...


_DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: its planned shape and dtype, and how to compute it on demand."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]
    scratch: int = 0
    """Bytes of working memory that producing it takes beside the tensor itself (a float64
    copy of a low-precision tensor): the writer counts them against its memory bound."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def header_bytes(entries: Sequence[TensorEntry], metadata: Mapping[str, str] | None) -> bytes:
    """The length prefix and JSON header, padded with spaces to a multiple of 8."""
    header: dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"metadata must map strings to strings; got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for entry in entries:
        if entry.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor '{entry.key}': dtype {entry.dtype} cannot be saved")
        header[entry.key] = {
            "dtype": _DTYPE_NAMES[entry.dtype],
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def check_entries(entries: Sequence[TensorEntry]) -> list[TensorEntry]:
    """Entries sorted by key, so the same tensors always give the same bytes."""
    ordered = sorted(entries, key=lambda e: e.key)
    for prev, cur in itertools.pairwise(ordered):
        if prev.key == cur.key:
            raise ValueError(f"tensor '{cur.key}' is listed twice")
    for e in ordered:
        if e.key == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        if any(not isinstance(d, int) or d < 0 for d in e.shape):
            raise ValueError(f"tensor '{e.key}': shape {e.shape} is not a tuple of sizes")
    return ordered


def _raw_bytes(entry: TensorEntry, tensor: torch.Tensor) -> tuple[memoryview, torch.Tensor]:
    """The tensor's little-endian bytes, after checking it matches what the header promised.

    The view points into the returned tensor's memory (no copy, and no numpy, which torch
    does not require): keep that tensor alive while the view is used.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"tensor '{entry.key}': produce() returned {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(entry.shape) or tensor.dtype != entry.dtype:
        raise ValueError(
            f"tensor '{entry.key}': produce() gave shape {list(tensor.shape)} {tensor.dtype}, "
            f"planned {list(entry.shape)} {entry.dtype}"
        )
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    if flat.numel() == 0:
        return memoryview(b""), flat
    buffer = (ctypes.c_ubyte * flat.numel()).from_address(flat.data_ptr())
    return memoryview(buffer).cast("B"), flat


def write_safetensors(
    path: str | os.PathLike[str],
    entries: Sequence[TensorEntry],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    late: LateMetadata | None = None,
) -> Path:
    """Write `entries` to `path` atomically, two tensors in memory at most.

    `progress`, if given, is called after each tensor with the total tensor bytes written
    so far (the sum of `TensorEntry.nbytes` is the final value). `late`, if given, is
    called once the tensors are written; its metadata replaces `metadata` in the header
    and must encode to the same length. Returns the path written.
    """
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is LE
        raise RuntimeError("writing safetensors requires a little-endian host")
    target = Path(path)
    ordered = check_entries(entries)
    header = header_bytes(ordered, metadata)
    if not target.parent.is_dir():
        raise CheckpointError(
            f"output directory {target.parent} does not exist; create it first",
            mark=Mark(str(target)),
        )
    if target.exists() and not target.is_file():
        raise CheckpointError(
            f"{target} is not a regular file; only a regular file can be replaced",
            mark=Mark(str(target)),
        )
    with terminate_as_interrupt():
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with AppendFile(fd, keep_head=len(header)) as f:
                write_file(f, header, ordered, progress)
                f.finish(final_header(header, ordered, late))
            os.chmod(tmp, default_mode())
            os.replace(tmp, target)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(err, OSError) and (located := disk_error(err, target)) is not None:
                raise located from None
            raise
    _fsync_dir(target.parent)
    return target


def write_file(
    f: Sink,
    header: bytes,
    ordered: Sequence[TensorEntry],
    progress: Callable[[int], None] | None,
    done: int = 0,
) -> int:
    """Header, then each tensor's bytes as it is produced (not flushed); returns `done` plus
    the tensor bytes written, which is what `progress` is called with after each tensor."""
    f.write(header)
    for data, owner in produced(ordered):
        f.write(data)
        done += len(data)
        del data, owner
        if progress is not None:
            progress(done)
    return done


def final_header(
    header: bytes, ordered: Sequence[TensorEntry], late: LateMetadata | None
) -> bytes | None:
    """The header with `late`'s metadata, to go over the placeholder `header` (None when
    there is no late metadata); it must have the placeholder's length."""
    if late is None:
        return None
    final = header_bytes(ordered, late())
    if len(final) != len(header):
        raise ValueError("late metadata must encode to the same length as its placeholder")
    return final


PRODUCERS = 2
"""Tensors produced at once. Random draws (one generator stream per tensor) run on one
core, so one producer left a 2-core machine half idle; each tensor still has its own
generator, so the bytes do not depend on this number (tests/test_low_precision.py)."""
_SLACK = 8 << 20  # room for small tensors (norms, biases) beside the two largest, at most


def produced(
    ordered: Sequence[TensorEntry], producers: int | None = None
) -> Generator[tuple[memoryview, torch.Tensor], None, None]:
    """Each entry's bytes in order, the following ones produced on worker threads meanwhile.

    torch's kernels and `write` release the GIL, so producing and writing overlap. The
    entries started and not yet written hold at most twice the largest entry's bytes plus
    an eighth of it (up to 8 MB) for small ones, each counted with its scratch (one entry
    always runs, however large): the memory bound of one tensor written while the next is
    produced, without a bias keeping the next large tensor waiting. On an error or
    interrupt the workers finish their tensors and stop.
    """
    if not ordered:
        return
    largest = max(e.nbytes for e in ordered)
    limit = 2 * largest + min(_SLACK, largest // 8)
    buffers = BufferPool(limit)
    following = iter(ordered)
    queued: TensorEntry | None = next(following, None)
    ahead: deque[tuple[int, Future[_Produced]]] = deque()
    held = 0
    # Not done: giving each producer a share of torch's kernel threads. set_num_threads in
    # a worker thread also sets the process-wide count that new threads start with and
    # resizes a shared thread pool: a 2-rank split conversion aborted once with it.
    with ThreadPoolExecutor(
        max_workers=producers or PRODUCERS, thread_name_prefix="morph-produce"
    ) as pool:
        try:
            while ahead or queued is not None:
                while queued is not None and (
                    not ahead or held + queued.nbytes + queued.scratch <= limit
                ):
                    cost = queued.nbytes + queued.scratch
                    ahead.append((cost, pool.submit(_bytes_of, queued, buffers)))
                    held += cost
                    queued = next(following, None)
                cost, future = ahead.popleft()
                data, owner, lent = future.result()
                del future  # it holds the result too
                yield data, owner
                del data, owner  # the caller is done with them: their buffer is free
                for buffer in lent:
                    buffers.give(buffer)
                del lent
                held -= cost
        finally:
            for _, future in ahead:
                future.cancel()


_Produced = tuple[memoryview, torch.Tensor, list[torch.Tensor]]
"""A tensor's bytes, the tensor they point into, and the pooled buffer that holds it."""


def _bytes_of(entry: TensorEntry, buffers: BufferPool) -> _Produced:
    """Runs on a worker thread, where grad mode (thread-local) is on by default: producers
    that compute from parameters must not record graphs there. Also returns the pooled
    buffer that holds the tensor, if any, to be given back once it is written (the
    family's work buffers are dropped: they may be larger, float64 copies)."""
    with torch.no_grad(), lending(buffers) as lent:
        tensor = entry.produce()
    data, owner = _raw_bytes(entry, tensor)
    home = owner.untyped_storage().data_ptr()
    kept = []
    for buffer in lent:
        if buffer.data_ptr() == home:
            kept.append(buffer)
        else:
            buffers.forget(buffer)  # a work buffer, dropped now
    return data, owner, kept


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not possible (nor needed) on every platform."""
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save an in-memory state_dict with the same atomic writer."""
    entries = [
        TensorEntry(key, tuple(t.shape), t.dtype, _returning(t)) for key, t in state_dict.items()
    ]
    return write_safetensors(path, entries, metadata)


def _returning(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: tensor


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load every tensor (single file or sharded set); only for checkpoints that fit in memory."""
    with CheckpointReader(path) as reader:
        return {key: reader.get(key) for key in reader}
