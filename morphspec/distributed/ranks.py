"""`torchrun ... -m morphspec convert`: the student's tensors split over the ranks.

Every rank plans and checks (the same specs and teacher on a shared filesystem), then
writes its share of the tensors into one staging folder that rank 0 made; rank 0 verifies
the whole folder and commits it. Each tensor's generator is derived from the seed and its
key, so the tensors are those of a one-process run whatever the split.

Every phase ends with an agreement (`together`): a rank that fails says so to the others,
which stop too, so no rank waits for a dead one beyond the process group's timeout
(`MORPH_DIST_TIMEOUT`, seconds, default 600), and nothing is committed unless every rank
finished its share. Ranks given different arguments are refused before anything is read.
Only torch.distributed (gloo, over torchrun's rendezvous) carries these messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from morphspec.checkpoint.output import staging_folder
from morphspec.errors import MorphError

__all__ = ["Ranks", "current_ranks", "under_torchrun"]

T = TypeVar("T")
_PATH_BYTES = 4096


def under_torchrun() -> bool:
    """torchrun's environment with more than one process (no torch needed to tell)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def current_ranks() -> Ranks | None:
    """The job's ranks (joining torchrun's process group if needed), or None alone."""
    if dist.is_available() and dist.is_initialized():
        return Ranks() if dist.get_world_size() > 1 else None
    if not under_torchrun():
        return None
    timeout = timedelta(seconds=float(os.environ.get("MORPH_DIST_TIMEOUT", "600")))
    dist.init_process_group("gloo", timeout=timeout)
    return Ranks()


class Ranks:
    """This process's place in the job, and the few messages the ranks exchange."""

    def __init__(self) -> None:
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def _max(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def agree(self, arguments: str) -> None:
        """Refuse ranks whose arguments differ (each compares its digest with rank 0's)."""
        digest = torch.frombuffer(bytearray(hashlib.sha256(arguments.encode()).digest()),
                                  dtype=torch.uint8).clone()  # fmt: skip
        leader = digest.clone()
        dist.broadcast(leader, src=0)
        differs = self._max(int(not torch.equal(digest, leader)))
        if differs:
            raise MorphError(
                "the ranks were given different arguments; start every rank with the same"
                " command line (torchrun does), nothing was written"
            )

    @contextlib.contextmanager
    def together(self, phase: str) -> Iterator[None]:
        """Run a phase on every rank; if any rank fails, every rank stops with an error."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self._max(1)
            raise
        if self._max(0):
            raise MorphError(
                f"another rank failed while {phase} (its message says why); nothing was committed"
            )

    @contextlib.contextmanager
    def staging(self, out: Path) -> Iterator[Path]:
        """Rank 0's staging folder for `out`, known to every rank; rank 0 removes it."""
        if self.leader:
            with staging_folder(out) as path:
                self._send_path(path)
                yield path
        else:
            yield self._send_path(None)

    def _send_path(self, path: Path | None) -> Path:
        buf = torch.zeros(_PATH_BYTES, dtype=torch.uint8)
        if path is not None:
            raw = os.fsencode(path)
            if len(raw) >= _PATH_BYTES:
                raise MorphError(f"the output path is too long ({len(raw)} bytes)")
            buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
        dist.broadcast(buf, src=0)
        raw = bytes(buf.tolist()).rstrip(b"\0")
        return Path(os.fsdecode(raw))

    def share(self, items: Sequence[T], sizes: Sequence[int]) -> list[T]:
        """This rank's items: the largest first, each to the least loaded rank (the same
        split on every rank, since every rank sees the same items)."""
        load = [0] * self.size
        mine: list[T] = []
        for i in sorted(range(len(items)), key=lambda i: (-sizes[i], i)):
            r = min(range(self.size), key=lambda r: (load[r], r))
            load[r] += sizes[i]
            if r == self.rank:
                mine.append(items[i])
        return mine

    def barrier(self) -> None:
        dist.barrier()
