"""The torch modules of the built-in kinds; each kind's record names its builder here.

A spec can never name code: only registered kinds build, each through its record's
`builder`. Modules are built from the resolved `Arch`, so shapes and names were checked
before any torch object exists, and the state_dict keys are exactly `Arch.state_shapes()`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from morphspec.arch.nodes import Arch, Node
from morphspec.builder import layers as L
from morphspec.builder import reversible as R
from morphspec.builder.moe import MoE
from morphspec.kinds import registry

__all__ = ["build_arch", "build_node"]


def activation(n: Node) -> nn.Module:
    return L.activation(n.kind, float(n.args.get("slope", 0.01)), n.args.get("approximate", "none"))


def batchnorm(n: Node) -> nn.Module:
    cls = nn.BatchNorm2d if n.inp.layout == "image" else nn.BatchNorm1d
    return cls(n.inp.channels, eps=n.args["eps"], momentum=n.args["momentum"])


def attention(n: Node) -> nn.Module:
    a = n.args
    return L.Attention(
        n.inp.channels, a["heads"], a["head_dim"], a["kv_heads"],
        causal=a["causal"], bias=a["bias"], rope=a["rope"], rope_base=a["rope_theta"],
        qkv_bias=a.get("qkv_bias"),
    )  # fmt: skip


def linear(n: Node) -> nn.Module:
    if n.args.get("tie"):
        return L.TiedLinear(n.args["tie"])  # attached to its embedding by build_arch
    return nn.Linear(n.inp.channels, n.args["out"], bias=n.args["bias"])


def conv(n: Node) -> nn.Module:
    a = n.args
    return nn.Conv2d(
        n.inp.channels, a["out"], a["kernel"], a["stride"], a["padding"], a["dilation"],
        bias=a["bias"],
    )  # fmt: skip


def layernorm(n: Node) -> nn.Module:
    return nn.LayerNorm(n.inp.channels, eps=n.args["eps"], bias=n.args["bias"])


def rmsnorm(n: Node) -> nn.Module:
    return L.RMSNorm(n.inp.channels, eps=n.args["eps"], offset=n.args.get("offset", 0))


def dropout(n: Node) -> nn.Module:
    return nn.Dropout(n.args["p"])


def maxpool(n: Node) -> nn.Module:
    return nn.MaxPool2d(n.args["kernel"], n.args["stride"], n.args["padding"])


def avgpool(n: Node) -> nn.Module:
    return nn.AvgPool2d(n.args["kernel"], n.args["stride"], n.args["padding"])


def global_avgpool(n: Node) -> nn.Module:
    return L.GlobalAvgPool()


def flatten(n: Node) -> nn.Module:
    return nn.Flatten()


def embedding(n: Node) -> nn.Module:
    if n.args.get("scale", 1) != 1:
        return L.ScaledEmbedding(n.args["vocab"], n.args["dim"], n.args["scale"])
    return nn.Embedding(n.args["vocab"], n.args["dim"])


def position_embedding(n: Node) -> nn.Module:
    return L.PositionEmbedding(n.args["max_len"], n.inp.channels)


def mlp(n: Node) -> nn.Module:
    a = n.args
    if a.get("experts", 1) > 1:
        return MoE(
            n.inp.channels, a["hidden"], a["experts"], a["top_k"], a["act"],
            gated=a["gated"], bias=a["bias"], act_options=a.get("act_options"),
        )  # fmt: skip
    return L.Mlp(
        n.inp.channels, a["hidden"], a["act"], gated=a["gated"], bias=a["bias"],
        act_options=a.get("act_options"),
    )  # fmt: skip


def _children(n: Node) -> list[tuple[str, nn.Module]]:
    return [(c.name, build_node(c)) for c in n.children]


def sequence(n: Node) -> nn.Module:
    return L.Sequence(_children(n))


def residual(n: Node) -> nn.Module:
    shortcut = None
    if n.shortcut is not None:
        shortcut = (n.shortcut.name, build_node(n.shortcut))
    post = [(p.name, build_node(p)) for p in n.post]
    return L.Residual(_children(n), shortcut, post)


def channel_pad(n: Node) -> nn.Module:
    return R.ChannelPad(n.args["out"], channels_last=n.inp.layout != "image")


def reversible(n: Node) -> nn.Module:
    return R.build_unit(n.kind, n.args, n.inp.channels)


def build_node(node: Node) -> nn.Module:
    """The torch module of one node, by its kind's record (KeyError: no such kind)."""
    record = registry.get(node.kind)
    if record is None:
        raise KeyError(f"no layer kind '{node.kind}' is registered")
    module: nn.Module = record.build(node)
    return module


def build_arch(arch: Arch, **_: Any) -> nn.Module:
    """The torch model of `arch`, in eval mode, with its default initialisation."""
    model = build_node(arch.root)
    for reader, owner in arch.shared_weights().items():
        # A sharing kind's module (L.TiedLinear) takes its owner through `tie`.
        model.get_submodule(reader).tie(model.get_submodule(owner))  # type: ignore[operator]
    model.eval()
    return model
