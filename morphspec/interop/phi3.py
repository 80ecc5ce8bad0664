"""Phi-3 (`Phi3ForCausalLM`): a Llama whose q, k and v projections are one fused `qkv_proj`
(rows q, then k, then v) and whose gate and up projections are one `gate_up_proj` (rows
gate, then up; the model chunks it in two). The key map says so with `concat`, whose
inverse splits by the spec's shapes (grouped-query q, k, v are uneven), so the spec is
Llama's, without biases.

Refused, by field: a `partial_rotary_factor` other than 1 (rotary on part of each head),
rope scaling (the 128k models' longrope), a sliding window shorter than the positions
(Phi-3-mini-4k's 2047), activations other than SiLU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.arch import Arch
from morphspec.errors import Mark
from morphspec.interop import llama
from morphspec.interop.family import Config, Family, refuse
from morphspec.interop.keymap import KeyMap, Rule

__all__ = ["PHI3"]

_L = "model.layers.{i}."
KEYMAP = KeyMap(
    "hf-phi3",
    (
        Rule(("model.embed_tokens.weight",), "model.embed_tokens.weight"),
        Rule((_L + "input_layernorm.weight",), _L + "input_layernorm.weight"),
        Rule(
            tuple(_L + f"self_attn.{p}_proj.weight" for p in "qkv"),
            _L + "self_attn.qkv_proj.weight",
            ("concat",),
        ),
        Rule((_L + "self_attn.o_proj.weight",), _L + "self_attn.o_proj.weight"),
        Rule((_L + "ffn.post_attention_layernorm.weight",), _L + "post_attention_layernorm.weight"),
        Rule(
            (_L + "ffn.mlp.gate_proj.weight", _L + "ffn.mlp.up_proj.weight"),
            _L + "mlp.gate_up_proj.weight",
            ("concat",),
        ),
        Rule((_L + "ffn.mlp.down_proj.weight",), _L + "mlp.down_proj.weight"),
        Rule(("model.norm.weight",), "model.norm.weight"),
        Rule(("lm_head.weight",), "lm_head.weight"),
    ),
    ignore=("lm_head.weight",),
)


def read(config: Config, where: Mark) -> dict[str, Any]:
    llama.check_act(config, where)
    llama.check_window(config, where)
    partial = (config.get("rope_parameters") or {}).get(
        "partial_rotary_factor", config.get("partial_rotary_factor", 1.0)
    )
    if partial is not None and float(partial) != 1.0:
        raise refuse(
            where,
            "partial_rotary_factor",
            partial,
            "the spec's RoPE turns every entry of a head",
        )
    return {
        **llama.read_common(config, where),
        "attention_bias": False,
        "mlp_bias": False,
        "naming": "hf-phi3",
    }


def spec_yaml(p: Mapping[str, Any]) -> str:
    return llama.spec_yaml(p)


def config(arch: Arch) -> dict[str, Any]:
    out = {k: v for k, v in llama.config(arch).items() if k not in ("attention_bias", "mlp_bias")}
    params = dict(out["rope_parameters"], partial_rotary_factor=1.0)
    return {
        **out,
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "rope_parameters": params,
        "sliding_window": None,
    }


PHI3 = Family("hf-phi3", ("phi3",), KEYMAP, read, spec_yaml, config)
