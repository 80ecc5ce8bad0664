"""Refuse checkpoints holding NaN or infinities before anything is built from them.

A non-finite teacher makes every comparison NaN, which used to surface as "the student
does not reproduce the teacher" (exit 3): true, but it hid the cause, which is the input.
"""

from __future__ import annotations

import torch

from morphspec.checkpoint.reader import CheckpointReader
from morphspec.errors import CheckpointError, Mark

__all__ = ["check_finite"]


def check_finite(reader: CheckpointReader, what: str = "the teacher") -> None:
    """Raise a CheckpointError naming the first tensor (by key) that has a NaN or an inf.

    Reads each floating tensor once through the memory map, without copying it."""
    for key in reader:
        if not reader.dtype(key).is_floating_point:
            continue
        tensor = reader.get(key, copy=False)
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            raise CheckpointError(
                f"{what} is not finite: tensor '{key}' holds {nan} NaN and {inf} infinite"
                " value(s); fix or re-export the checkpoint (nothing was written)",
                mark=Mark(str(reader.path)),
            )
