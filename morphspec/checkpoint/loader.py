"""Tensors read from a checkpoint's files into reused, aligned buffers.

Why: streamed verification (`morphspec/streamed.py`) reads every tensor of the teacher and
the student once, a layer at a time, and throws it away after the layer ran. Through the
file's memory map every 4 KiB page costs a page fault; the student, written past the page
cache (`checkpoint/direct.py`), is read from the disk into page-cache pages the kernel must
first find and zero; and a float16 tensor converted to the model's float32 gets a fresh
allocation, faulted in page by page, every time. Measured on the 2-vCPU VM, reading the
1 GB benchmark's 2.2 GB student from a cold cache: 2.37 s (2.3 s of CPU) through the
memory map, 4.1 s with plain `pread`, 1.8 s (0.65 s of CPU) with `O_DIRECT` `pread`.

So a tensor is read with `pread`, `O_DIRECT` where the file system takes it, into a
buffer of a small pool that the layer gives back after its forward; one stored in another
dtype is read a chunk at a time and converted into its pooled buffer. The values are those
of `reader.get(key).to(dtype)`, bit for bit (the same cast). A reader that cannot say
where a tensor's bytes lie (a transposed Hugging Face tensor, a DCP checkpoint) is read
through `get` as before.
"""

from __future__ import annotations

import ctypes
import errno
import math
import mmap
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from morphspec.checkpoint.direct import ALIGN, O_DIRECT, round_up
from morphspec.checkpoint.pool import BufferPool
from morphspec.checkpoint.reader import Span

__all__ = ["TensorLoader", "pool_for"]

_CHUNK = 8 << 20  # bytes of a converted tensor read at a time


class TensorLoader:
    """Reads `reader`'s tensors into `pool`'s buffers (see the module docstring).

    Reading the next layer while this one computes was tried (issue 21) and dropped: the
    student's read-back is bound by the disk, it saved nothing measurable, and the layer
    read ahead sat in the heap beside the current one and oneDNN's copy of its weight
    (736 MB against the 688 MB goal on the 1 GB benchmark)."""

    def __init__(self, reader: Any, pool: BufferPool) -> None:
        self.reader = reader
        self.pool = pool
        self.fds: dict[Path, tuple[int, int | None]] = {}  # file -> plain fd, O_DIRECT fd
        self.lock = threading.Lock()  # the worker and this thread open files
        self.chunks: list[torch.Tensor] | None = None  # two, for reading while converting
        self.lent: dict[int, torch.Tensor] = {}  # id(tensor) -> its pooled buffer
        self.worker: ThreadPoolExecutor | None = None

    def __enter__(self) -> TensorLoader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None
        for plain, direct in self.fds.values():
            os.close(plain)
            if direct is not None:
                os.close(direct)
        self.fds.clear()
        self.chunks = None

    def _span(self, key: str) -> Span | None:
        span_of = getattr(self.reader, "span", None)
        span: Span | None = span_of(key) if span_of is not None else None
        if span is None or not span.nbytes or span.offset % span.dtype.itemsize:
            return None
        return span

    def load(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        """The tensor `key` in `dtype`; `give_back` it when done."""
        span = self._span(key)
        if span is None:
            return self.reader.get(key, copy=False).to(dtype)
        if span.dtype == dtype:
            buffer = self.pool.need(_stored_bytes(span))
            raw = self._read(span.file, span.offset, span.nbytes, buffer)
            tensor = raw.view(dtype).view(span.shape)
        else:  # read and converted a chunk at a time
            out = math.prod(span.shape) * dtype.itemsize
            buffer = self.pool.need(out)
            flat = buffer[:out].view(dtype)
            self._convert(span, flat)
            tensor = flat.view(span.shape)
        self.lent[id(tensor)] = buffer
        return tensor

    def give_back(self, tensor: torch.Tensor, output: Any = None) -> None:
        """`tensor` (from `load`) is no longer used: its buffer goes back to the pool,
        unless `output` (what the layer returned) shares its memory."""
        buffer = self.lent.pop(id(tensor), None)
        if buffer is None:
            return
        if _shares(output, buffer):
            self.pool.forget(buffer)
        else:
            self.pool.give(buffer)

    def _convert(self, span: Span, flat: torch.Tensor) -> None:
        """Read `span` a chunk at a time into `flat` (converting): the worker reads chunk
        k + 1 into one buffer while this thread converts chunk k from the other."""
        size = span.dtype.itemsize
        per = max(1, _CHUNK // size)
        if self.chunks is None:
            self.chunks = [torch.empty(_CHUNK + 3 * ALIGN, dtype=torch.uint8) for _ in "ab"]
        if self.worker is None:
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="morph-read")
        starts = range(0, flat.numel(), per)

        def read(i: int) -> Future[torch.Tensor]:
            assert self.worker is not None and self.chunks is not None
            count = min(per, flat.numel() - starts[i])
            where = span.offset + starts[i] * size
            return self.worker.submit(
                self._read, span.file, where, count * size, self.chunks[i % 2]
            )

        pending = read(0)
        for i, start in enumerate(starts):
            raw = pending.result()
            if i + 1 < len(starts):
                pending = read(i + 1)
            flat[start : start + raw.numel() // size].copy_(raw.view(span.dtype))

    def _read(self, file: Path, offset: int, nbytes: int, buffer: torch.Tensor) -> torch.Tensor:
        """The file's bytes [offset, offset + nbytes) as a view of `buffer`. File byte X
        goes to `buffer[base + X - first]`, where `base` is `buffer`'s first aligned byte
        and `first` the block holding `offset`, so that a direct read of whole blocks lands
        at an aligned address. A file the page cache holds is read plainly (copied from
        it); another with O_DIRECT, which does not fill the page cache with a file read
        once."""
        plain, direct = self._fds(file)
        base = -buffer.data_ptr() % ALIGN
        first = offset // ALIGN * ALIGN
        end = offset + nbytes
        span = buffer[base : base + round_up(end) - first]
        memory = memoryview((ctypes.c_ubyte * span.numel()).from_address(span.data_ptr()))
        at = offset  # the next file byte to read
        if direct is not None:
            try:
                at = first + _pread(direct, memory, first)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._plain_only(file)  # took O_DIRECT at open, refuses it now
        if at < end:
            at += _pread(plain, memory[at - first : end - first], at)
        if at < end:
            raise OSError(errno.EIO, f"{file} ends before the tensor's bytes {offset}..{end}")
        return span[offset - first : end - first]

    def _fds(self, file: Path) -> tuple[int, int | None]:
        with self.lock:
            return self._open(file)

    def _open(self, file: Path) -> tuple[int, int | None]:
        found = self.fds.get(file)
        if found is None:
            plain = os.open(file, os.O_RDONLY)
            cached = resident_fraction(plain) >= 0.5
            found = (plain, None if cached else _open_direct(file))
            self.fds[file] = found
        return found

    def _plain_only(self, file: Path) -> None:
        with self.lock:
            plain, direct = self.fds[file]
            if direct is not None:
                os.close(direct)
            self.fds[file] = (plain, None)


def pool_for(*readers: Any) -> BufferPool:
    """A pool for loading `readers`' tensors, one layer at a time: room for the largest
    tensor as stored. A layer converted to a wider dtype, or with several large tensors,
    gets its buffers past that cap, the pool keeping none of them free afterwards, so the
    heap stays near what the layer needs (and oneDNN's copy of a convolution's weight)."""
    largest = max(
        (math.prod(r.shape(k)) * r.dtype(k).itemsize for r in readers for k in r.keys()),  # noqa: SIM118 - readers, not dicts
        default=0,
    )
    return BufferPool(largest + 4 * ALIGN)


def _stored_bytes(span: Span) -> int:
    """A buffer for the tensor's bytes read with whole aligned blocks at an aligned address."""
    return round_up(span.offset + span.nbytes) - span.offset // ALIGN * ALIGN + ALIGN


def _open_direct(file: Path) -> int | None:
    """`file` opened with O_DIRECT; None where the platform or file system has none."""
    if not O_DIRECT:
        return None
    try:
        return os.open(file, os.O_RDONLY | O_DIRECT)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    return None


def _pread(fd: int, view: memoryview, offset: int) -> int:
    """Read into `view` from `offset` until it is full or the file ends; the count read."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            break
        got += n
    return got


def resident_fraction(fd: int) -> float:
    """How much of the file `fd` the page cache holds (Linux `mincore` over a mapping that
    is never touched); 0.0 where that cannot be asked."""
    size = os.fstat(fd).st_size
    if not size or not sys.platform.startswith("linux"):
        return 0.0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]  # fmt: skip
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return 0.0
    prot_read, map_shared = 1, 1
    address = libc.mmap(None, size, prot_read, map_shared, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        return 0.0
    try:
        pages = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
        if libc.mincore(address, size, pages) != 0:
            return 0.0
        return 1.0 - pages.raw.count(0) / len(pages.raw)
    finally:
        libc.munmap(address, size)


def _shares(output: Any, buffer: torch.Tensor) -> bool:
    """Whether a tensor in `output` (a tensor, or a tuple, list or dict of them) lives in
    `buffer`'s memory: a layer that returns a view of its weight."""
    if isinstance(output, torch.Tensor):
        if output.device.type != "cpu":
            return False
        lo, hi = buffer.data_ptr(), buffer.data_ptr() + buffer.numel()
        return lo <= output.untyped_storage().data_ptr() < hi
    if isinstance(output, (tuple, list)):
        return any(_shares(o, buffer) for o in output)
    if isinstance(output, dict):
        return any(_shares(o, buffer) for o in output.values())
    return False
