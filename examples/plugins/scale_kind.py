"""A layer kind from outside morphspec: `scale`, a per-channel gain y = weight ⊙ x.

Importing this module registers the kind; a distribution can instead name it under the
entry-point group `morphspec.kinds` (`scale = scale_kind`), which `morph` loads at start.
It imports no torch until a model is built, so `morph validate` stays light.
"""

from __future__ import annotations

from typing import Any, Literal

from morphspec.kinds import Kind, KindRule, LayerArgs, ParamRole, ShapeError, register_kind


class Scale(LayerArgs):
    """Spec entry: `scale` or `scale: {name: ...}` (no arguments)."""

    op: Literal["scale"]


def shape(args: dict[str, Any], x: Any) -> tuple[Any, dict[str, tuple[int, ...]], int]:
    """Output shape (the input's), parameter shapes (one gain per channel) and FLOPs (0)."""
    if x.layout == "tokens":
        raise ShapeError(f"gets token ids {x}; add an 'embedding' first")
    return x, {"weight": (x.channels,)}, 0


def build(node: Any) -> Any:
    """The torch module: a gain per channel, channels first for images, last otherwise."""
    import torch

    view = (-1, 1, 1) if node.inp.layout == "image" else (-1,)

    class ScaleModule(torch.nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight.view(view)

    return ScaleModule(node.inp.channels)


# Growth: `weight` is channel-wise in the input's space; a new channel's gain 1 keeps it.
# Each channel is independent, 0 stays 0, and a positive scale passes through.
GROWTH = KindRule(
    "scale", "keep", (ParamRole("weight", 0, "channel", "in"),),
    keeps_channels_independent=True, zero_fixed=True, homogeneous=True,
    neutral={"weight": 1.0},
)  # fmt: skip

SCALE = register_kind(Kind("scale", Scale, shape, f"{__name__}:build", GROWTH))
