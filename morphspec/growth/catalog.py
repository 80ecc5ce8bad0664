"""The growth families, one torch-free record each: every list of family names derives
from `CATALOG` (the `--family` choices, `morph families`, the family classes).

A record holds a family's name, its implementation as a lazy `"module:Class"` (imported
with torch only when a student is filled), its flags (exact, refines reversible steps) and
its conditions: what it needs of a network and what it guarantees, like the R2R paper's
Table 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["CATALOG", "FAMILY_NAMES", "Conditions", "FamilyInfo"]


@dataclass(frozen=True)
class Conditions:
    """One column of the families table."""

    family: str
    widen_activations: str
    deepen: str
    deepen_activations: str
    function_preserving: str
    requires_noise: bool
    residual_streams: bool
    free_parameters: str
    preserves_parameters: bool
    new_layers: str
    new_channels: str
    kernel_morph: bool
    noise: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class FamilyInfo:
    """One growth family; see the module docstring."""

    name: str
    implementation: str
    """`"module:Class"`, a subclass of `growth.families.base.Family`."""
    exact: bool
    """Function-preserving: the output is verified and refused when it is not."""
    conditions: Conditions
    refines_steps: bool = False
    """Refines reversible units (h / r, r times the steps) instead of appending steps."""
    pairs: bool = False
    """Widens by (L, R) pairs of channels, plus at most one unpaired channel (R2R)."""
    stacks: bool = False
    """New repeat copy j is teacher copy j mod L, the whole stack repeated (G_stack)."""

    def load(self) -> Any:
        """The family's class (imports torch); its `name` and `exact` must agree."""
        module, _, attr = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if cls.name != self.name or cls.exact != self.exact:
            raise TypeError(f"{self.implementation} does not match family '{self.name}'")
        return cls


_FAMILIES = (
    FamilyInfo(
        "r2r",
        "morphspec.growth.families.r2r:R2R",
        exact=True,
        pairs=True,
        conditions=Conditions(
            family="r2r",
            widen_activations="keeps channels independent",
            deepen="residual blocks that output zero: R2DeeperR's [Z, -Z] last layer, or a zero"
            " gain on the block's last batchnorm (exact in train mode, grows from zero)",
            deepen_activations="keeps channels independent, σ(0)=0 after the block's last layer;"
            " post is the identity on the stream",
            function_preserving="exact",
            requires_noise=False,
            residual_streams=True,
            free_parameters="half (U, c, Z)",
            preserves_parameters=True,
            new_layers=">= 2 per new block (1 when a batchnorm ends it)",
            new_channels="any (pairs, plus one unpaired channel read with a zero column)",
            kernel_morph=False,
            noise="on U and Z (exact)",
        ),
    ),
    FamilyInfo(
        "net2net",
        "morphspec.growth.families.net2net:Net2Net",
        exact=True,
        conditions=Conditions(
            family="net2net",
            widen_activations="keeps channels independent",
            deepen="identity layers in new repeat copies (Net2DeeperNet); residual blocks borrow"
            " NetMorph's zero last layer (or a zero last-batchnorm gain)",
            deepen_activations="idempotent on the incoming tensor (relu after relu)",
            function_preserving="exact (identity batchnorms: eval mode only)",
            requires_noise=True,
            residual_streams=True,
            free_parameters="none (copies of random old channels)",
            preserves_parameters=False,
            new_layers="any",
            new_channels="any",
            kernel_morph=False,
            noise="opposite-sign splits of consumer columns, W/n ± R (exact)",
        ),
    ),
    FamilyInfo(
        "netmorph",
        "morphspec.growth.families.netmorph:NetMorph",
        exact=True,
        conditions=Conditions(
            family="netmorph",
            widen_activations="keeps channels independent (--netmorph-zero in: and σ(0)=0)",
            deepen="identity layers in new repeat copies (as Net2DeeperNet); residual blocks: a"
            " zero last layer (or a zero last-batchnorm gain)",
            deepen_activations="idempotent on the incoming tensor (relu after relu)",
            function_preserving="exact (identity batchnorms: eval mode only)",
            requires_noise=False,
            residual_streams=True,
            free_parameters="half (new producers, or new consumers)",
            preserves_parameters=True,
            new_layers="any",
            new_channels="any",
            kernel_morph=True,
            noise="on the random half (exact)",
        ),
    ),
    FamilyInfo(
        "randpad",
        "morphspec.growth.families.randpad:RandPad",
        exact=False,
        conditions=Conditions(
            family="randpad",
            widen_activations="any",
            deepen="random new blocks",
            deepen_activations="any",
            function_preserving="no (the R2R paper's baseline; the deviation is reported)",
            requires_noise=False,
            residual_streams=True,
            free_parameters="all new parameters",
            preserves_parameters=True,
            new_layers="any",
            new_channels="any",
            kernel_morph=True,
            noise="none (already random)",
        ),
    ),
    FamilyInfo(
        "ode-refine",
        "morphspec.growth.families.ode_refine:OdeRefine",
        exact=False,
        refines_steps=True,
        conditions=Conditions(
            family="ode-refine",
            widen_activations="any (random, as randpad)",
            deepen="reversible units: h / r and r times the steps, step j a copy of step j // r"
            " (multi-level refinement); other new blocks random",
            deepen_activations="any",
            function_preserving="no (a finer discretisation of the same ODE; the deviation is"
            " reported)",
            requires_noise=False,
            residual_streams=True,
            free_parameters="none for refined steps (copies)",
            preserves_parameters=True,
            new_layers="steps of hamiltonian, midpoint, leapfrog",
            new_channels="any",
            kernel_morph=True,
            noise="none",
        ),
    ),
    FamilyInfo(
        "stack",
        "morphspec.growth.families.stack:Stack",
        exact=False,
        stacks=True,
        conditions=Conditions(
            family="stack",
            widen_activations="refused (widths must be equal)",
            deepen="G_stack: new repeat copy j = teacher copy j mod L (the whole stack"
            " repeated, cut at the student's depth), bit for bit; optimizer state copied with it",
            deepen_activations="any",
            function_preserving="no (copied blocks add to the stream again; the deviation is"
            " reported)",
            requires_noise=False,
            residual_streams=True,
            free_parameters="none (copies)",
            preserves_parameters=True,
            new_layers="copies of a repeat's blocks only",
            new_channels="none",
            kernel_morph=False,
            noise="none",
        ),
    ),
)

CATALOG: Mapping[str, FamilyInfo] = MappingProxyType({info.name: info for info in _FAMILIES})
FAMILY_NAMES: tuple[str, ...] = tuple(CATALOG)
