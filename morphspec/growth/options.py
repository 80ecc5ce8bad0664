"""The conversion options, declared once: type, default, flag and help (no torch).

`morph convert` builds its flags from these fields (`cli/growth_options.py`),
`morphspec.convert.convert` takes the same names as keywords, and the student's header
records every one (`GrowOptions.metadata`), so a new option is one field here (plus the
code that reads it). Verification's options are a nested group (`GrowOptions.verify`);
they keep flat names on the command line, as keywords and in the header.
"""

from __future__ import annotations

import json
from dataclasses import Field, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from morphspec.defaults import DEFAULT_RTOL, DEFAULT_SAMPLES
from morphspec.growth.catalog import FAMILY_NAMES

__all__ = [
    "FamilyName",
    "GrowOptions",
    "InitMode",
    "NetmorphZero",
    "OptionInfo",
    "RescaleMode",
    "VerifyOptions",
    "option_fields",
    "option_infos",
    "option_types",
]

if TYPE_CHECKING:
    FamilyName = str
else:  # the --family choices: every family of the catalog
    FamilyName = Literal[FAMILY_NAMES]
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
            "New repeat copies: fresh weights, or copies of the teacher's copy before each"
            " (LLaMA-Pro; its last copy unless --interleave).",
        ),
    )
    interleave: bool = field(
        default=False,
        metadata=_cli(
            "--interleave",
            "Place new repeat copies between the old ones (LLaMA-Pro); the plan records moves.",
        ),
    )
    verify: VerifyOptions = field(default_factory=lambda: VerifyOptions())
    """How the student is checked against the teacher (nested: a group of its own)."""

    def with_values(self, **values: Any) -> GrowOptions:
        """A copy with options changed by their flat names (`rtol` sets `verify.rtol`);
        an unknown name is a TypeError, as for a keyword argument."""
        nested = {n for n in values if n in _VERIFY_NAMES}
        verify = replace(self.verify, **{n: values[n] for n in nested})
        return replace(self, verify=verify, **{n: v for n, v in values.items() if n not in nested})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name, in declaration order."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "verify"}
        return {**out, **{f.name: getattr(self.verify, f.name) for f in fields(self.verify)}}

    def metadata(self) -> dict[str, str]:
        """Every option as checkpoint header text: strings as they are, numbers and
        booleans as JSON. So a new option is recorded without touching the writer."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.flat().items()}

    @property
    def rtol(self) -> float:
        return self.verify.rtol

    @property
    def samples(self) -> int | None:
        return self.verify.samples


@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    """How a grown student is verified against its teacher."""

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


_VERIFY_NAMES = frozenset(f.name for f in fields(VerifyOptions))


def option_fields() -> list[Field[Any]]:
    """Every option's dataclass field, nested groups flattened, in declaration order."""
    top = [f for f in fields(GrowOptions) if f.name != "verify"]
    return [*top, *fields(VerifyOptions)]


def option_types() -> dict[str, Any]:
    """Every option's type by flat name (for the command line)."""
    return {**get_type_hints(GrowOptions), **get_type_hints(VerifyOptions)}


def option_infos() -> dict[str, OptionInfo]:
    """Each option's name and how it reads on the command line, in declaration order."""
    return {f.name: f.metadata["cli"] for f in option_fields()}
