"""Writing a student as a DCP directory, streamed: each tensor is made as it is written.

The layout is `{"model": msd, "optim": osd}` as `get_state_dict(model, optimizer)` gives
it, so `dcp.load` plus `set_state_dict` restore it into `morphspec.build(S)` and a new
optimizer of the teacher's class. torch's own `dcp.save` writes it: the state dict handed
to it holds meta tensors (shape and dtype only), from which torch plans the files and the
metadata, and `resolve_data` makes each tensor only when torch's writer asks for it. Each
tensor gets its own storage file (torch's writer holds a file's tensors until it closes
it), written by `threads` threads (default 1: at 1 GB, two threads took 0.7 GB more heap
and were no faster), so the heap holds about one tensor and its serialisation. Under
torchrun each rank passes its share of the tensors and torch's coordinator (rank 0) writes
the merged `.metadata`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem, WriteItemType

from morphspec.checkpoint.writer import TensorEntry
from morphspec.distributed.metadata import quiet_single_process
from morphspec.distributed.optim_state import GrownOptimizer, MomentEntry
from morphspec.errors import CheckpointError, Mark

__all__ = ["dcp_state", "write_dcp"]

Producers = dict[tuple[Any, ...], MomentEntry | TensorEntry]


class _LazyPlanner(DefaultSavePlanner):
    """DefaultSavePlanner whose tensors are made when the writer asks for them."""

    def __init__(self, producers: Producers, progress: Callable[[int], None] | None) -> None:
        super().__init__(flatten_state_dict=True, flatten_sharded_tensors=False)
        self._producers = producers
        self._progress = progress

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | Any:
        if write_item.type == WriteItemType.BYTE_IO:
            return super().resolve_data(write_item)
        path = self.mappings.get(write_item.index.fqn)
        entry = self._producers.get(tuple(path)) if path is not None else None
        if entry is None:
            return super().resolve_data(write_item)
        tensor = entry.produce().detach()
        if tuple(tensor.shape) != tuple(entry.shape) or tensor.dtype != entry.dtype:
            raise AssertionError(f"{write_item.index.fqn}: made {tensor.shape} {tensor.dtype}")
        if self._progress is not None:
            self._progress(entry.nbytes)
        return tensor.cpu().contiguous()


def _meta(entry: MomentEntry | TensorEntry) -> torch.Tensor:
    return torch.empty(entry.shape, dtype=entry.dtype, device="meta")


def dcp_state(
    model: Sequence[TensorEntry], optim: GrownOptimizer | None, groups: bool = True
) -> tuple[dict[str, Any], Producers]:
    """The state dict to save (meta tensors standing for the entries) and the producers,
    keyed by each tensor's path in it. `groups=False` leaves out the optimizer's
    param_groups (torchrun: one rank writes them)."""
    producers: Producers = {}
    msd: dict[str, Any] = {}
    for e in model:
        msd[e.key] = _meta(e)
        producers[("model", e.key)] = e
    state: dict[str, Any] = {"model": msd}
    if optim is not None:
        ostate: dict[str, dict[str, Any]] = {}
        for fqn, entry in optim.state.items():
            ostate[fqn] = {}
            for k, v in entry.items():
                if isinstance(v, MomentEntry):
                    ostate[fqn][k] = _meta(v)
                    producers[("optim", "state", fqn, k)] = v
                else:
                    ostate[fqn][k] = v
        state["optim"] = {"state": ostate}
        if groups:
            state["optim"]["param_groups"] = optim.param_groups
    return state, producers


def write_dcp(
    folder: Path,
    model: Sequence[TensorEntry],
    optim: GrownOptimizer | None = None,
    *,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    distributed: bool = False,
    groups: bool = True,
) -> None:
    """Write the student into the existing, empty `folder` (a staging folder). With
    `distributed`, every rank of the default process group calls this with its share."""
    state, producers = dcp_state(model, optim, groups)
    # one storage file per tensor: torch's writer keeps every tensor of a file until the file
    # is closed (for its safetensors format), so per-tensor files keep the heap at `threads`
    writer = FileSystemWriter(
        str(folder), single_file_per_rank=False, thread_count=threads, sync_files=True
    )
    try:
        with quiet_single_process():
            dcp.save(
                state,
                storage_writer=writer,
                planner=_LazyPlanner(producers, progress),
                no_dist=not (distributed and dist.is_initialized()),
            )
    except OSError as e:
        raise CheckpointError(f"cannot write the DCP checkpoint ({e})", Mark(str(folder))) from None
