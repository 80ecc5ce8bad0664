"""The built-in layer kinds of SPEC.md, one record each, in the spec's order.

Each row joins a kind's spec model (spec/models.py), shape rule (arch/leaves.py), torch
builder (builder/registry.py, imported lazily) and growth rule (growth/kinds.py). This is
the only place that pairs them by name; the registry loads it on first use.
"""

from __future__ import annotations

from typing import Any

from morphspec.arch import leaves as S
from morphspec.growth.kinds import BUILTIN_RULES
from morphspec.kinds.record import Kind, ShapeRule
from morphspec.kinds.registry import register_kind
from morphspec.spec import models as m

_RULES = {rule.kind: rule for rule in BUILTIN_RULES}
_BUILD = "morphspec.builder.registry:"


def _leaf(name: str, model: Any, shape: ShapeRule, builder: str, **facts: Any) -> None:
    register_kind(Kind(name, model, shape, _BUILD + builder, _RULES.get(name), **facts))


def _container(name: str, model: Any, container: Any, builder: str) -> None:
    register_kind(Kind(name, model, None, _BUILD + builder, _RULES.get(name), container=container))


_leaf("linear", m.Linear, S._linear, "linear", shares="tie")
_leaf("conv", m.Conv, S._conv, "conv")
_leaf("batchnorm", m.BatchNorm, S._batchnorm, "batchnorm")
_leaf("layernorm", m.LayerNorm, S._norm(True), "layernorm")
_leaf("rmsnorm", m.RMSNorm, S._norm(False), "rmsnorm")
for _kind in ("relu", "silu", "tanh", "sigmoid", "identity"):
    _leaf(_kind, m.Act, S._same, "activation")
_leaf("gelu", m.Gelu, S._same, "activation")
_leaf("leaky_relu", m.LeakyRelu, S._same, "activation")
_leaf("maxpool", m.Pool, S._pool, "maxpool")
_leaf("avgpool", m.Pool, S._pool, "avgpool")
_leaf("global_avgpool", m.Reshape, S._global_avgpool, "global_avgpool")
_leaf("flatten", m.Reshape, S._flatten, "flatten")
_leaf("dropout", m.Dropout, S._same, "dropout")
_leaf("channel_pad", m.ChannelPad, S._channel_pad, "channel_pad")
_leaf("embedding", m.Embedding, S._embedding, "embedding", shareable=True, token_ids="vocab")
_leaf("position_embedding", m.PositionEmbedding, S._position, "position_embedding")
_leaf("attention", m.Attention, S._attention, "attention")
_leaf("mlp", m.Mlp, S._mlp, "mlp")
_container("sequential", m.Sequential, "chain", "sequence")
_container("residual", m.Residual, "residual", "residual")
_container("repeat", m.Repeat, "copies", "sequence")
for _kind in ("hamiltonian", "midpoint", "leapfrog"):
    _leaf(_kind, m.Reversible, S._reversible(_kind), "reversible")
