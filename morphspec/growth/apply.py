"""From a Plan, a family and the teacher's reader to the student's tensor entries.

Entries are produced lazily, one tensor at a time, so the writer's memory stays near the
largest tensor whatever the checkpoint's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from morphspec.checkpoint import CheckpointReader, TensorEntry
from morphspec.growth.families import Family
from morphspec.growth.plan import Plan

__all__ = ["student_entries"]


def student_entries(plan: Plan, family: Family, reader: CheckpointReader) -> list[TensorEntry]:
    """One entry per student key, in sorted order; teacher tensors keep their dtype."""
    t_shapes = plan.teacher.state_shapes()
    floats = Counter(reader.dtype(k) for k in t_shapes if reader.dtype(k).is_floating_point)
    default = floats.most_common(1)[0][0] if floats else torch.float32
    entries = []
    for key, shape in sorted(plan.student.state_shapes().items()):
        ref = None if key in t_shapes else plan.reference_key(key)
        if key in t_shapes:
            dtype = reader.dtype(key)
        elif ref is not None:
            dtype = reader.dtype(ref)
        else:
            dtype = torch.int64 if key.endswith("num_batches_tracked") else default
        entries.append(
            TensorEntry(
                key, shape, dtype, _producer(family, reader, key, ref, dtype, key in t_shapes)
            )
        )
    return entries


def _producer(
    family: Family,
    reader: CheckpointReader,
    key: str,
    ref: str | None,
    dtype: torch.dtype,
    old: bool,
) -> Callable[[], torch.Tensor]:
    def produce() -> torch.Tensor:
        teacher = reader.get(key) if old else None
        if (
            teacher is not None
            and tuple(teacher.shape) == family.shapes[key]
            and not family.rescaler.touches(key)
        ):
            return teacher  # nothing grew along any dimension of this tensor
        reference = reader.get(ref) if ref is not None else None
        return family.tensor(key, teacher, reference, dtype)

    return produce
