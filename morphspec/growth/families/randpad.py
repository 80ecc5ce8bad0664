"""Random padding: the R2R paper's baseline. Every new parameter is random (`--init`), the
teacher's are kept, and nothing is done to preserve the function: `convert` reports the
measured deviation instead of failing on it."""

from __future__ import annotations

from morphspec.growth.families.base import Family

__all__ = ["RandPad"]


class RandPad(Family):
    name = "randpad"
    exact = False
    rules_copy = True
    ties = "random"
