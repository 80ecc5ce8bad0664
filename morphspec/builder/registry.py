"""A closed registry from layer kind to torch module: a spec can never name code.

Modules are built from the resolved `Arch`, so shapes and names were checked before
any torch object exists, and the state_dict keys are exactly `Arch.state_shapes()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from morphspec.arch.nodes import Arch, Node
from morphspec.builder import layers as L
from morphspec.builder import reversible as R
from morphspec.builder.moe import MoE

__all__ = ["BUILDERS", "build_arch", "build_node"]

Builder = Callable[[Node], nn.Module]


def _act(kind: str) -> Builder:
    return lambda n: L.activation(
        kind, float(n.args.get("slope", 0.01)), n.args.get("approximate", "none")
    )


def _norm_1d_2d(n: Node) -> nn.Module:
    cls = nn.BatchNorm2d if n.inp.layout == "image" else nn.BatchNorm1d
    return cls(n.inp.channels, eps=n.args["eps"], momentum=n.args["momentum"])


def _attention(n: Node) -> nn.Module:
    a = n.args
    return L.Attention(
        n.inp.channels, a["heads"], a["head_dim"], a["kv_heads"],
        causal=a["causal"], bias=a["bias"], rope=a["rope"], rope_base=a["rope_theta"],
        qkv_bias=a.get("qkv_bias"),
    )  # fmt: skip


def _mlp(n: Node) -> nn.Module:
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


def _linear(n: Node) -> nn.Module:
    if n.args.get("tie"):
        return L.TiedLinear(n.args["tie"])  # attached to its embedding by build_arch
    return nn.Linear(n.inp.channels, n.args["out"], bias=n.args["bias"])


def _children(n: Node) -> list[tuple[str, nn.Module]]:
    return [(c.name, build_node(c)) for c in n.children]


def _residual(n: Node) -> nn.Module:
    shortcut = None
    if n.shortcut is not None:
        shortcut = (n.shortcut.name, build_node(n.shortcut))
    post = [(p.name, build_node(p)) for p in n.post]
    return L.Residual(_children(n), shortcut, post)


BUILDERS: dict[str, Builder] = {
    "linear": _linear,
    "conv": lambda n: nn.Conv2d(
        n.inp.channels,
        n.args["out"],
        n.args["kernel"],
        n.args["stride"],
        n.args["padding"],
        n.args["dilation"],
        bias=n.args["bias"],
    ),
    "batchnorm": _norm_1d_2d,
    "layernorm": lambda n: nn.LayerNorm(n.inp.channels, eps=n.args["eps"], bias=n.args["bias"]),
    "rmsnorm": lambda n: L.RMSNorm(
        n.inp.channels, eps=n.args["eps"], offset=n.args.get("offset", 0)
    ),
    "dropout": lambda n: nn.Dropout(n.args["p"]),
    "maxpool": lambda n: nn.MaxPool2d(n.args["kernel"], n.args["stride"], n.args["padding"]),
    "avgpool": lambda n: nn.AvgPool2d(n.args["kernel"], n.args["stride"], n.args["padding"]),
    "global_avgpool": lambda n: L.GlobalAvgPool(),
    "flatten": lambda n: nn.Flatten(),
    "embedding": lambda n: (
        L.ScaledEmbedding(n.args["vocab"], n.args["dim"], n.args["scale"])
        if n.args.get("scale", 1) != 1
        else nn.Embedding(n.args["vocab"], n.args["dim"])
    ),
    "position_embedding": lambda n: L.PositionEmbedding(n.args["max_len"], n.inp.channels),
    "attention": _attention,
    "mlp": lambda n: _mlp(n),
    "sequential": lambda n: L.Sequence(_children(n)),
    "repeat": lambda n: L.Sequence(_children(n)),
    "residual": _residual,
    "channel_pad": lambda n: R.ChannelPad(n.args["out"], channels_last=n.inp.layout != "image"),
    "hamiltonian": lambda n: R.build_unit("hamiltonian", n.args, n.inp.channels),
    "midpoint": lambda n: R.build_unit("midpoint", n.args, n.inp.channels),
    "leapfrog": lambda n: R.build_unit("leapfrog", n.args, n.inp.channels),
}
for _kind in ("relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "identity"):
    BUILDERS[_kind] = _act(_kind)


def build_node(node: Node) -> nn.Module:
    return BUILDERS[node.kind](node)


def build_arch(arch: Arch, **_: Any) -> nn.Module:
    """The torch model of `arch`, in eval mode, with its default initialisation."""
    model = build_node(arch.root)
    for node in arch.nodes():
        if node.kind == "linear" and node.args.get("tie"):
            head = model.get_submodule(node.path)
            assert isinstance(head, L.TiedLinear)
            head.tie(model.get_submodule(node.args["tie"]))
    model.eval()
    return model
