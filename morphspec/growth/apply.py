"""From a Plan, a family and the teacher's reader to the student's tensor entries.

Entries are produced lazily, one tensor at a time, so the writer's memory stays near the
largest tensor whatever the checkpoint's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from morphspec.checkpoint import StateSource, TensorEntry, TensorSource
from morphspec.growth.families import Family
from morphspec.growth.init import std_of
from morphspec.growth.plan import Plan

__all__ = ["StateSource", "TensorSource", "student_entries"]


def student_entries(plan: Plan, family: Family, reader: TensorSource) -> list[TensorEntry]:
    """One entry per student key, in sorted order; teacher tensors keep their dtype."""
    t_shapes = plan.teacher.state_shapes()
    floats = Counter(reader.dtype(k) for k in t_shapes if reader.dtype(k).is_floating_point)
    default = floats.most_common(1)[0][0] if floats else torch.float32
    source = _Source(family, reader)
    entries = []
    for key, shape in sorted(family.shapes.items()):
        src = family.source_key(key)
        ref = None if src in t_shapes else plan.reference_key(key)
        if src in t_shapes:
            dtype = reader.dtype(src)
        elif ref is not None:
            dtype = reader.dtype(ref)
        else:
            dtype = torch.int64 if key.endswith("num_batches_tracked") else default
        producer = source.producer(key, ref, dtype)
        scratch = family.scratch(key, dtype)
        entries.append(TensorEntry(plan.student_key(key), shape, dtype, producer, scratch))
    return sorted(entries, key=lambda e: e.key) if plan.renames else entries


class _Source:
    """Reads teacher tensors without copying them (they are only read) and remembers the
    spread of reference tensors, which every appended copy of a repeat asks for."""

    def __init__(self, family: Family, reader: TensorSource):
        self.family = family
        self.reader = reader
        self.t_shapes = family.plan.teacher.state_shapes()
        self.ref_std: dict[str, float] = {}

    def producer(self, key: str, ref: str | None, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
        return lambda: self.make(key, ref, dtype)

    def make(self, key: str, ref: str | None, dtype: torch.dtype) -> torch.Tensor:
        family = self.family
        src = family.source_key(key)
        teacher = self.reader.get(src, copy=False) if src in self.t_shapes else None
        if (
            teacher is not None
            and tuple(teacher.shape) == family.shapes[key]
            and not family.rescaler.touches(key)
        ):
            return teacher  # nothing grew along any dimension of this tensor
        if ref is not None and family.options.new_blocks == "copy":
            # a copy of the trained block before it (LLaMA-Pro)
            teacher = self.reader.get(family.plan.copy_key(key) or ref, copy=False)
        if ref is not None and ref not in self.ref_std:
            known = family.spreads.get(ref)  # the reference's own fill computed it already
            self.ref_std[ref] = (
                known if known is not None else std_of(self.reader.get(ref, copy=False))
            )
        return family.tensor(key, teacher, self.ref_std.get(ref) if ref else None, dtype)
