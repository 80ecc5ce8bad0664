"""A file written front to back past the page cache, with its first bytes rewritten last.

Why: a converted checkpoint is written once and read back, if at all, layer by layer. On
Linux a buffered `write` copies every byte into page-cache pages the kernel must first
find and zero; on a VM whose free memory is handed back to the host those pages are
faulted in from the host too. Measured on the 2-vCPU development VM (ext4 on virtio), a
2.2 GB file took 6.9 s through the page cache and 1.4 s with `O_DIRECT`, fsync included;
the conversion's own write took 7.4 s of its 11 s (benchmarks/README.md, issue 21).

`O_DIRECT` asks for aligned I/O: the memory address, the file offset and the length must
be multiples of the device's logical block. The bytes are therefore gathered in an
anonymous `mmap` buffer (page-aligned) and written `_BUFFER` at a time by a writer thread,
while the caller fills a second buffer (so a tensor is free for reuse as soon as it is
copied, not once it is on the disk); the last partial block is padded with zeros and the
file truncated to its true length. The first
`keep_head` bytes (the safetensors header, whose teacher hash is known only at the end)
are kept in memory and written again, changed, by `finish`.

Where `O_DIRECT` does not exist (macOS, Windows) or the filesystem refuses it (tmpfs and
some network filesystems answer EINVAL), the same bytes go through ordinary writes: only
the speed differs, never the file.
"""

from __future__ import annotations

import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

__all__ = ["ALIGN", "O_DIRECT", "AppendFile", "round_up"]

ALIGN = 4096  # a multiple of every logical block size Linux supports for O_DIRECT
_BUFFER = 8 << 20  # bytes per direct write
O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


class AppendFile:
    """Appends to the open, empty file `fd` (which it closes); see the module docstring.

    `keep_head`: how many leading bytes `finish` may replace (same length). `direct`:
    False writes through the page cache (tests use it to check both paths agree).
    """

    def __init__(self, fd: int, keep_head: int = 0, direct: bool = True) -> None:
        self.fd = fd
        self.size = 0  # bytes appended so far
        self.keep_head = keep_head
        self.head = bytearray()  # the first keep_head bytes, as appended
        self.direct = bool(direct and O_DIRECT) and _set_direct(fd, True)
        self.buffers: list[mmap.mmap] = []  # two: one filled while the other is written
        self.pending: list[Future[None] | None] = [None, None]
        self.writer: ThreadPoolExecutor | None = None
        self.current = 0  # the buffer being filled
        self.filled = 0  # bytes of it not yet written
        self.written = 0  # file offset of its first byte (aligned)
        if self.direct:
            self.buffers = [mmap.mmap(-1, _BUFFER) for _ in range(2)]
            self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="morph-write")

    @property
    def buffer(self) -> mmap.mmap | None:
        return self.buffers[self.current] if self.buffers else None

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append `data`; returns its length (as `BinaryIO.write` does)."""
        view = memoryview(data).cast("B")
        n = len(view)
        if len(self.head) < self.keep_head:
            self.head += view[: self.keep_head - len(self.head)]
        if self.buffer is None:
            _write_all(self.fd, view)
        else:
            self._gather(view)
        self.size += n
        return n

    def _gather(self, view: memoryview) -> None:
        assert self.buffer is not None
        space = len(self.buffer)
        while len(view):
            take = min(space - self.filled, len(view))
            self.buffer[self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == space:
                self._flush(space)

    def _flush(self, length: int) -> None:
        """Hand the buffer's first `length` bytes (a multiple of ALIGN) to the writer
        thread, to go at `written`, and go on filling the other buffer once its own last
        write is done: the caller's copying and the disk's writing overlap."""
        assert self.writer is not None
        job = self.writer.submit(self._write_block, self.current, length, self.written)
        self.pending[self.current] = job
        self.written += length
        self.filled = 0
        self.current ^= 1
        self._wait(self.current)

    def _wait(self, which: int) -> None:
        job, self.pending[which] = self.pending[which], None
        if job is not None:
            job.result()  # raises the write's error here

    def _write_block(self, which: int, length: int, offset: int) -> None:
        chunk = memoryview(self.buffers[which])[:length]
        try:
            _pwrite_all(self.fd, chunk, offset)
        except OSError as err:
            if err.errno != errno.EINVAL or not self.direct:
                raise
            # The filesystem took O_DIRECT at open but refuses this I/O: write buffered.
            self.direct = not _set_direct(self.fd, False)
            _pwrite_all(self.fd, chunk, offset)
        finally:
            chunk.release()

    def finish(self, head: bytes | None = None) -> None:
        """Write what is buffered, set the true length, put `head` (the final version of
        the first `keep_head` bytes, the same length) over them, and fsync."""
        if head is not None and len(head) != len(self.head):
            raise ValueError("the final head must have the length of the kept one")
        if self.buffer is not None:
            if self.filled:
                tail = self.filled
                self.buffer[tail : round_up(tail)] = bytes(round_up(tail) - tail)
                self._flush(round_up(tail))
            self._wait(0)
            self._wait(1)
            os.ftruncate(self.fd, self.size)
        if head is not None and head != self.head:
            self._rewrite_head(bytes(head))
        os.fsync(self.fd)

    def _rewrite_head(self, head: bytes) -> None:
        """A short, unaligned write: through the page cache (the kernel reads the block
        back from the disk, where the direct writes put it)."""
        if self.direct and _set_direct(self.fd, False):
            self.direct = False
        _pwrite_all(self.fd, memoryview(head), 0)

    def close(self) -> None:
        """Wait for the writes under way (an error was or will be reported by `finish`;
        after another error they no longer matter) and release the file."""
        if self.writer is not None:
            for job in self.pending:
                if job is not None:
                    job.exception()
            self.writer.shutdown()
            self.writer = None
        for buffer in self.buffers:
            buffer.close()
        self.buffers = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; whether that took."""
    if not O_DIRECT:
        return False
    import fcntl  # POSIX only, as O_DIRECT is

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | O_DIRECT) if on else (flags & ~O_DIRECT))
    except OSError:
        return False
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
