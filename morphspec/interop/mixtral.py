"""Mixtral (`MixtralForCausalLM`): a Mistral whose MLP is a mixture of experts, read and
written by the Llama family (`hf-llama`), so a dense Llama teacher upcycled with
`--student-set experts=8 --student-set top_k=2` exports as a Mixtral.

The spec's `mlp` with `experts: E, top_k: k` holds `gate.weight` and
`experts.<j>.{gate,up,down}_proj.weight`; Mixtral checkpoints name them
`block_sparse_moe.gate.weight` and `block_sparse_moe.experts.<j>.w1/w3/w2.weight` (the
layout transformers 5 still saves, and converts to its fused experts when it loads).
`router_jitter_noise` (multiplicative noise on the router's input in training) is refused:
train-mode outputs would no longer be the spec's.
"""

from __future__ import annotations

from typing import Any

from morphspec.errors import Mark
from morphspec.interop.family import Config, refuse
from morphspec.interop.hfconfig import checked, size
from morphspec.interop.keymap import Rule

__all__ = ["RULES", "config_fields", "read_experts"]

_L = "model.layers.{i}."
RULES = (
    Rule((_L + "ffn.mlp.gate.weight",), _L + "block_sparse_moe.gate.weight"),
    *(
        Rule(
            (_L + f"ffn.mlp.experts.{{j}}.{p}_proj.weight",),
            _L + f"block_sparse_moe.experts.{{j}}.{w}.weight",
        )
        for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2"))
    ),
)


def read_experts(config: Config, where: Mark) -> tuple[int, int]:
    """(experts, top_k) of a config: Mixtral's counts, (1, 1) for a dense model."""
    if config.get("model_type") != "mixtral":
        return 1, 1
    jitter = config.get("router_jitter_noise") or 0.0
    if jitter:
        raise refuse(
            where,
            "router_jitter_noise",
            jitter,
            "it multiplies the router's input by noise in training, which the spec's mixture"
            " does not do",
        )
    experts = checked("num_local_experts", config.get("num_local_experts", 8), size, where)
    top_k = checked("num_experts_per_tok", config.get("num_experts_per_tok", 2), size, where)
    if top_k > experts:
        raise refuse(where, "num_experts_per_tok", top_k, f"it exceeds {experts} experts")
    return experts, top_k


def config_fields(experts: int, top_k: int) -> dict[str, Any]:
    """The fields a mixture adds to (and changes in) the Llama family's config."""
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "num_local_experts": experts,
        "num_experts_per_tok": top_k,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
    }
