"""What each growth family needs of a network, as data (the R2R paper's Table 1).

The planner checks these before any tensor moves, and `morph families` prints them.
Activation classes:

- *keeps channels independent* (the paper's "maintains channel dependencies"): equal input
  channels give equal output channels. Every channel-wise op we support has it.
- *fixed point at zero*: σ(0) = 0, needed where new channels or blocks must start at 0.
- *idempotent*: σ(σ(x)) = σ(x), needed by Net2DeeperNet's identity layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from morphspec.growth.kinds import kinds_where

__all__ = [
    "FAMILY_CONDITIONS",
    "FIXED_POINT_AT_ZERO",
    "IDEMPOTENT",
    "KEEPS_CHANNELS_INDEPENDENT",
    "Conditions",
]

# Views of the registry (growth/kinds.py), for messages and `morph families`.
KEEPS_CHANNELS_INDEPENDENT = kinds_where(lambda r: r.keeps_channels_independent)
FIXED_POINT_AT_ZERO = kinds_where(lambda r: r.zero_fixed)
IDEMPOTENT = kinds_where(lambda r: r.idempotent)


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


FAMILY_CONDITIONS: dict[str, Conditions] = {
    "r2r": Conditions(
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
    "net2net": Conditions(
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
    "netmorph": Conditions(
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
    "randpad": Conditions(
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
    "ode-refine": Conditions(
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
    # stack: the class and its summary are morphspec/growth/families/stack.py
    "stack": Conditions(
        family="stack",
        widen_activations="refused (widths must be equal)",
        deepen="G_stack: new repeat copy j = teacher copy j mod L (the whole stack repeated,"
        " cut at the student's depth), bit for bit; optimizer state copied with it",
        deepen_activations="any",
        function_preserving="no (copied blocks add to the stream again; the deviation is reported)",
        requires_noise=False,
        residual_streams=True,
        free_parameters="none (copies)",
        preserves_parameters=True,
        new_layers="copies of a repeat's blocks only",
        new_channels="none",
        kernel_morph=False,
        noise="none",
    ),
}
