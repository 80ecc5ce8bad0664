"""The conversion options, declared once: type, default, flag and help (no torch).

`morph convert` builds its flags from these fields (`cli/growth_options.py`) and
`morphspec.convert.convert` takes the same names as keywords, so a new option is one field
here (plus the code that reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from morphspec.defaults import DEFAULT_RTOL, DEFAULT_SAMPLES

__all__ = [
    "FamilyName",
    "GrowOptions",
    "InitMode",
    "NetmorphZero",
    "OptionInfo",
    "RescaleMode",
    "option_infos",
]

FamilyName = Literal["r2r", "net2net", "netmorph", "randpad", "ode-refine"]
InitMode = Literal["match", "he"]
NetmorphZero = Literal["out", "in"]
NewBlocks = Literal["fresh", "copy"]
RescaleMode = Literal["none", "default_vt", "vt_constraint_old_shape", "vt_constraint_new_shape"]


@dataclass(frozen=True)
class OptionInfo:
    """How one option reads on the command line."""

    flag: str
    help: str
    min: float | None = None
    max: float | None = None
    finite: bool = False
    """Refuse inf and nan (a non-finite scale only makes a non-finite student)."""


def _cli(
    flag: str, help: str, min: float | None = None, max: float | None = None, finite: bool = False
) -> dict[str, OptionInfo]:
    return {"cli": OptionInfo(flag, help, min, max, finite)}


@dataclass(frozen=True, kw_only=True)
class GrowOptions:
    """How to grow: the family and its free choices, and how to verify the result."""

    family: FamilyName = field(
        default="r2r",
        metadata=_cli("--family", "Growth family; `morph families` shows their conditions."),
    )
    init: InitMode = field(
        default="match",
        metadata=_cli("--init", "Scale of free parameters: match the existing weights, or He."),
    )
    init_scale: float = field(
        default=1.0,
        metadata=_cli(
            "--init-scale", "Multiplies the scale of free parameters.", min=0.0, finite=True
        ),
    )
    seed: int = field(
        default=0,
        metadata=_cli(
            "--seed", "Random seed; the same seed gives the same tensors.", min=0, max=2**63 - 1
        ),
    )
    noise: float = field(
        default=0.0,
        metadata=_cli(
            "--noise",
            "Symmetry-breaking noise of this relative size, placed where it keeps the function.",
            min=0.0,
            finite=True,
        ),
    )
    netmorph_zero: NetmorphZero = field(
        default="out",
        metadata=_cli(
            "--netmorph-zero",
            "netmorph: zero the new consumer columns (out) or the new producer rows (in).",
        ),
    )
    rescale: RescaleMode = field(
        default="none",
        metadata=_cli(
            "--rescale", "Variance-transfer rescaling of widened hidden layers, kept exact."
        ),
    )
    allow_inexact: bool = field(
        default=False,
        metadata=_cli(
            "--allow-inexact",
            "Rescale even where no exact compensation exists; report the deviation.",
        ),
    )
    new_blocks: NewBlocks = field(
        default="fresh",
        metadata=_cli(
            "--new-blocks",
            "New repeat copies: fresh weights, or copies of the teacher's last copy (LLaMA-Pro).",
        ),
    )
    interleave: bool = field(
        default=False,
        metadata=_cli(
            "--interleave",
            "Place new repeat copies between the old ones (LLaMA-Pro); the plan records moves.",
        ),
    )
    rtol: float = field(
        default=DEFAULT_RTOL,
        metadata=_cli("--rtol", "Pass when max|s-t| / max|t| is at most this.", min=0.0),
    )
    samples: int | None = field(
        default=None,
        metadata=_cli(
            "--samples",
            f"Inputs to compare on [default: convert, as many as cost about a third of the"
            f" conversion, 1 to {DEFAULT_SAMPLES}; grow, {DEFAULT_SAMPLES}].",
            min=1,
            max=100_000,
        ),
    )


def option_infos() -> dict[str, OptionInfo]:
    """Each option's name and how it reads on the command line, in declaration order."""
    return {f.name: f.metadata["cli"] for f in fields(GrowOptions)}
