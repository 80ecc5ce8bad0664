"""Growth families: each fills the student's tensors from the teacher's by its own rule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from morphspec.growth.families.base import Family, GrowOptions, RescaleMode
from morphspec.growth.families.net2net import Net2Net
from morphspec.growth.families.netmorph import NetMorph
from morphspec.growth.families.ode_refine import OdeRefine
from morphspec.growth.families.r2r import R2R
from morphspec.growth.families.randpad import RandPad
from morphspec.growth.families.stack import Stack
from morphspec.growth.plan import Plan

__all__ = ["FAMILIES", "Family", "GrowOptions", "RescaleMode", "make_family"]

FAMILIES: dict[str, type[Family]] = {
    "r2r": R2R,
    "net2net": Net2Net,
    "netmorph": NetMorph,
    "randpad": RandPad,
    "ode-refine": OdeRefine,
    "stack": Stack,
}


def make_family(
    name: str, plan: Plan, options: GrowOptions, get: Callable[[str], torch.Tensor] | None = None
) -> Family:
    """The family `name` for `plan`; its constructor refuses what it cannot do exactly."""
    return FAMILIES[name](plan, options, get)
