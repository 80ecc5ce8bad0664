"""Large byte buffers used again instead of allocated again.

A tensor of a few hundred MB is mapped fresh by the allocator each time, and the kernel
faults in and zeroes each of its pages on first touch (on the 2-vCPU VM, 12 fresh 194 MB
tensors cost 1.2 s of CPU more than one reused buffer). The conversion makes one such
tensor per student weight and verification one per converted layer weight, each dropped
right after it is written or used; handing the buffer back lets the next one skip those
faults. Small requests go to torch's allocator, which serves them from its heap anyway.
The pool holds at most `cap` bytes (the caller's memory bound), buffers in use included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

__all__ = ["BufferPool", "lending", "pooled_empty"]

SMALL = 1 << 20  # bytes: below this, torch.empty


class BufferPool:
    """Free buffers, handed out best fit (never one more than twice the size asked).

    `cap` bounds the bytes the pool holds, handed out and free: to make room for a new
    buffer the free ones go first, smallest first. A needed buffer is made even past the
    cap; an optional one (`optional=True`: reading ahead) is then refused. Every buffer
    handed out is given back (`give`) or, if its memory is kept elsewhere, `forget`."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free: list[torch.Tensor] = []
        self.out = 0  # bytes of the buffers handed out
        self.lock = threading.Lock()

    def take(self, nbytes: int, optional: bool = False) -> torch.Tensor | None:
        """A uint8 tensor of at least `nbytes` (its contents are arbitrary)."""
        if nbytes < SMALL:
            return torch.empty(nbytes, dtype=torch.uint8)
        with self.lock:
            fits = [i for i, b in enumerate(self.free) if nbytes <= b.numel() <= 2 * nbytes]
            if fits:
                found = self.free.pop(min(fits, key=lambda i: self.free[i].numel()))
                self.out += found.numel()
                return found
            self.free.sort(key=lambda b: b.numel())
            while self.free and self.out + nbytes + sum(b.numel() for b in self.free) > self.cap:
                self.free.pop(0)
            if optional and self.out + nbytes > self.cap:
                return None
            self.out += nbytes
        return torch.empty(nbytes, dtype=torch.uint8)

    def need(self, nbytes: int) -> torch.Tensor:
        """`take` of a buffer that must be had."""
        found = self.take(nbytes)
        assert found is not None
        return found

    def give(self, buffer: torch.Tensor) -> None:
        """`buffer` is free again."""
        if buffer.numel() >= SMALL:
            with self.lock:
                self.out -= buffer.numel()
                self.free.append(buffer)

    def forget(self, buffer: torch.Tensor) -> None:
        """`buffer` stays in use elsewhere (or is dropped): no longer the pool's."""
        if buffer.numel() >= SMALL:
            with self.lock:
                self.out -= buffer.numel()


_LENDING: ContextVar[tuple[BufferPool, list[torch.Tensor]] | None] = ContextVar(
    "lending", default=None
)


@contextmanager
def lending(pool: BufferPool) -> Iterator[list[torch.Tensor]]:
    """Within it (in this thread), `pooled_empty` takes from `pool`; yields the list of
    the buffers it handed out, which the caller gives back when their tensors are dead."""
    lent: list[torch.Tensor] = []
    token = _LENDING.set((pool, lent))
    try:
        yield lent
    finally:
        _LENDING.reset(token)


def pooled_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """`torch.empty(shape, dtype=dtype)`, from the lending pool when there is one."""
    active = _LENDING.get()
    if active is None:
        return torch.empty(shape, dtype=dtype)
    pool, lent = active
    n = 1
    for d in shape:
        n *= d
    buffer = pool.need(n * dtype.itemsize)
    if buffer.numel() >= SMALL:
        lent.append(buffer)
    return buffer[: n * dtype.itemsize].view(dtype).view(shape)
