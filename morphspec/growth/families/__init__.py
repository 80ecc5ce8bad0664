"""Growth families: each fills the student's tensors from the teacher's by its own rule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from morphspec.growth.catalog import CATALOG
from morphspec.growth.families.base import Family, GrowOptions, RescaleMode
from morphspec.growth.plan import Plan

__all__ = ["FAMILIES", "Family", "GrowOptions", "RescaleMode", "make_family"]

FAMILIES: dict[str, type[Family]] = {name: info.load() for name, info in CATALOG.items()}
"""Each family's class, from its record in growth/catalog.py."""


def make_family(
    name: str, plan: Plan, options: GrowOptions, get: Callable[[str], torch.Tensor] | None = None
) -> Family:
    """The family `name` for `plan`; its constructor refuses what it cannot do exactly."""
    return FAMILIES[name](plan, options, get)
