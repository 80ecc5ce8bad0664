"""Float16 and bfloat16 tensors: float64 arithmetic without a float64 copy of the tensor.

A low-precision tensor must come out as if computed in float64 and rounded once (a rule
that is not exact after rounding, W/2 ± R or √(d'/d), loses one rounding, no more). Most
fills do no arithmetic at all: they draw, copy, negate, zero and permute values, and
rounding commutes with all of those but the draw. Such a fill runs in the storage dtype
with its draws made in float64 a chunk at a time (`init.wide_draws`): the same bytes as
the whole-tensor float64 fill, in the heap of the tensor itself, where the float64 copy
took four times a float16 tensor (plus the teacher's, widened too). A fill with arithmetic
(rescaling, a lift's W/k, Net2Net's divided columns, noise, a head_dim scale, a norm
divided by a factor, a reversible unit's biases) still runs on a float64 copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Protocol

import torch

from morphspec.growth.families.facts import Facts
from morphspec.growth.init import wide_draws
from morphspec.growth.kinds import rule_of
from morphspec.growth.options import GrowOptions
from morphspec.growth.plan import Plan
from morphspec.growth.rescale import Rescaler


class Family(Protocol):
    """What this module reads of a growth family (families/base.py imports this module)."""

    facts: Facts
    options: GrowOptions
    plan: Plan
    rescaler: Rescaler
    rules_copy: ClassVar[bool]
    shapes: Mapping[str, tuple[int, ...]]

    def _tensor(
        self, key: str, teacher: torch.Tensor | None, reference_std: float | None,
        dtype: torch.dtype,
    ) -> torch.Tensor: ...  # fmt: skip


__all__ = ["LOW_PRECISION", "copies_only", "fill_low_precision", "scratch_bytes"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def copies_only(family: Family, key: str) -> bool:
    """Whether filling `key` only draws, copies, negates, zeroes and permutes values."""
    facts = family.facts
    if not family.rules_copy or family.options.noise or family.rescaler.touches(key):
        return False
    if key in facts.scaled or key in facts.inside or key in facts.segments.bias_keys:
        return False
    for role, space in family.plan.graph.roles(key):
        rule = rule_of(family.plan.student.node(role.node).kind)
        if space.id in facts.lifts or (rule is not None and rule.stepped):
            return False  # a lift's W/k, or a reversible unit's new biases s/2 + r·s/2
    return True


def fill_low_precision(
    family: Family, key: str, teacher: torch.Tensor | None, reference_std: float | None,
    dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    """`family`'s tensor `key` in `dtype` (float16 or bfloat16), as if filled in float64."""
    if copies_only(family, key):
        with wide_draws():
            return family._tensor(key, teacher, reference_std, dtype)
    return whole_float64(family, key, teacher, reference_std, dtype)


def scratch_bytes(family: Family, key: str, dtype: torch.dtype) -> int:
    """The float64 copies `whole_float64` makes: the student tensor and the teacher's
    (at most as large); 0 for fills in the storage dtype (their draw chunks are 8 MB)."""
    if dtype not in LOW_PRECISION or copies_only(family, key):
        return 0
    return 2 * math.prod(family.shapes[key]) * 8


def whole_float64(
    family: Family, key: str, teacher: torch.Tensor | None, reference_std: float | None,
    dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    """The reference: the whole tensor filled in float64, then rounded once."""
    wide = teacher.to(torch.float64) if teacher is not None else None
    return family._tensor(key, wide, reference_std, torch.float64).to(dtype)
