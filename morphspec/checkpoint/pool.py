"""Large byte buffers used again instead of allocated again.

A tensor of a few hundred MB is mapped fresh by the allocator each time, and the kernel
faults in and zeroes each of its pages on first touch (on the 2-vCPU VM, 12 fresh 194 MB
tensors cost 1.2 s of CPU more than one reused buffer). The conversion makes one such
tensor per student weight and verification one per converted layer weight, each dropped
right after it is written or used; handing the buffer back lets the next one skip those
faults. Small requests go to torch's allocator, which serves them from its heap anyway.
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
    """Free buffers, handed out best fit. When none fits, the free ones (all too small)
    are dropped and a buffer of the largest size asked so far is made, so a few buffers
    serve every size: the pool holds at most as many as were in use at once, each no
    larger than the largest request."""

    def __init__(self) -> None:
        self.free: list[torch.Tensor] = []
        self.high = 0  # the largest request so far
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 tensor of at least `nbytes` (its contents are arbitrary)."""
        if nbytes < SMALL:
            return torch.empty(nbytes, dtype=torch.uint8)
        with self.lock:
            self.high = max(self.high, nbytes)
            fits = [i for i, b in enumerate(self.free) if b.numel() >= nbytes]
            if fits:
                return self.free.pop(min(fits, key=lambda i: self.free[i].numel()))
            self.free.clear()
            size = self.high
        return torch.empty(size, dtype=torch.uint8)

    def give(self, buffer: torch.Tensor) -> None:
        if buffer.numel() >= SMALL:
            with self.lock:
                self.free.append(buffer)


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
    buffer = pool.take(n * dtype.itemsize)
    if buffer.numel() >= SMALL:
        lent.append(buffer)
    return buffer[: n * dtype.itemsize].view(dtype).view(shape)
