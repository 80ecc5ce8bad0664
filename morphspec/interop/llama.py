"""Llama (`LlamaForCausalLM`), Mistral where it is a Llama, and Mixtral (a Mistral with a
mixture of experts, mixtral.py), whose dense relative it upcycles to: RMSNorm, RoPE, grouped-query
attention, SwiGLU. Names differ from the spec's only where the spec nests the MLP residual
(`layers.N.ffn.*`), so every rule is a rename.

Refused, by field: rope scaling of any kind (the spec's RoPE has one base), a sliding
window shorter than `max_position_embeddings` (one at least as long never masks anything),
and activations other than SiLU (`swish` is transformers' other name for it). Qwen2, which
is a Llama with q/k/v biases, reuses `read_common`, `spec_yaml` and `config` (qwen2.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.arch import Arch
from morphspec.errors import Mark
from morphspec.interop import mixtral
from morphspec.interop.family import Config, Family, first, fmt, refuse
from morphspec.interop.hfconfig import (
    Field,
    checked,
    flag,
    mapping,
    optional,
    parse,
    positive,
    size,
    text,
)
from morphspec.interop.keymap import KeyMap, Rule

__all__ = ["LLAMA"]

_L = "model.layers.{i}."
KEYMAP = KeyMap(
    "hf-llama",
    (
        Rule(("model.embed_tokens.weight",), "model.embed_tokens.weight"),
        Rule((_L + "input_layernorm.weight",), _L + "input_layernorm.weight"),
        *(
            Rule((_L + f"self_attn.{p}_proj.{{w}}",), _L + f"self_attn.{p}_proj.{{w}}")
            for p in "qkvo"
        ),
        Rule((_L + "ffn.post_attention_layernorm.weight",), _L + "post_attention_layernorm.weight"),
        *(
            Rule((_L + f"ffn.mlp.{p}_proj.{{w}}",), _L + f"mlp.{p}_proj.{{w}}")
            for p in ("gate", "up", "down")
        ),
        *mixtral.RULES,
        Rule(("model.norm.weight",), "model.norm.weight"),
        Rule(("lm_head.weight",), "lm_head.weight"),
    ),
    ignore=(_L + "self_attn.rotary_emb.inv_freq", "lm_head.weight"),
)


FIELDS = (
    *(
        Field(n, size)
        for n in (
            "vocab_size",
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "num_hidden_layers",
        )
    ),
    Field("num_key_value_heads", optional(size), None),
    Field("head_dim", optional(size), None),
    Field("max_position_embeddings", size, 2048),
    Field("rms_norm_eps", positive, 1e-6),
    Field("rope_theta", optional(positive), None),
    Field("rope_scaling", optional(mapping), None),
    Field("rope_parameters", optional(mapping), None),
    Field("hidden_act", text, "silu"),
    Field("attention_bias", flag, False),
    Field("mlp_bias", flag, False),
    Field("tie_word_embeddings", flag, False),
)


def _rope(config: Config, where: Mark) -> float:
    """rope_theta from transformers 5's `rope_parameters` or the older top-level fields."""
    params = config["rope_parameters"] or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise refuse(where, "rope_parameters.rope_type", kind, "the spec's RoPE has no scaling")
    scaling = config["rope_scaling"]
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "default":
            raise refuse(where, "rope_scaling", scaling, "the spec's RoPE has no scaling")
    theta = params.get("rope_theta", config["rope_theta"])
    if theta is None:
        return 10000.0
    return float(checked("rope_parameters.rope_theta", theta, positive, where))


def read(raw: Config, where: Mark) -> dict[str, Any]:
    """The spec parameters of a Llama or Mistral config, its `FIELDS` checked by type first."""
    config = parse(raw, FIELDS, where)
    check_act(config, where)
    check_window(config, where)
    return read_common(config, where)


def check_act(config: Config, where: Mark, key: str = "hidden_act") -> None:
    act = checked(key, config.get(key, "silu"), text, where)
    if act not in ("silu", "swish"):  # transformers maps swish to nn.SiLU
        raise refuse(where, key, act, "morph builds this MLP with silu (SwiGLU)")


def check_window(config: Config, where: Mark, used: bool = True) -> None:
    """A sliding window masks nothing when it spans every position; a shorter one does."""
    window = checked("sliding_window", config.get("sliding_window"), optional(size), where)
    positions = checked(
        "max_position_embeddings", config.get("max_position_embeddings", 2048), size, where
    )
    if used and window is not None and window < positions:
        raise refuse(
            where,
            "sliding_window",
            window,
            f"a window shorter than max_position_embeddings ({positions}) masks distant"
            " tokens, and the spec's attention is full causal attention",
        )


def read_common(raw: Config, where: Mark) -> dict[str, Any]:
    """The sizes and switches every Llama-shaped family shares, `FIELDS` checked by type."""
    config = parse(raw, FIELDS, where)
    dim, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"] or heads
    if heads % kv_heads:
        raise refuse(where, "num_key_value_heads", kv_heads, f"it must divide {heads} heads")
    if config["head_dim"] is None and dim % heads:
        raise refuse(where, "num_attention_heads", heads, f"hidden_size {dim} is not a multiple")
    head_dim = config["head_dim"] or dim // heads
    experts, top_k = mixtral.read_experts(config, where)
    moe = experts > 1 or config.get("model_type") == "mixtral"  # Mixtral has no biases
    return {
        "vocab": config["vocab_size"],
        "dim": dim,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden": config["intermediate_size"],
        "layers": config["num_hidden_layers"],
        "max_len": config["max_position_embeddings"],
        "eps": config["rms_norm_eps"],
        "rope_theta": _rope(config, where),
        "attention_bias": config["attention_bias"] and not moe,
        "mlp_bias": config["mlp_bias"] and not moe,
        "experts": experts,
        "top_k": top_k,
        "tied": config["tie_word_embeddings"],
        "qkv_bias": None,
        "naming": "hf-llama",
    }


def spec_yaml(p: Mapping[str, Any]) -> str:
    vars_ = (
        f"vocab: {p['vocab']}, dim: {p['dim']}, heads: {p['heads']}, kv_heads: {p['kv_heads']},"
        f" head_dim: {p['head_dim']}, hidden: {p['hidden']}, layers: {p['layers']},"
        f" max_len: {p['max_len']}, eps: {fmt(p['eps'])}, experts: {p.get('experts', 1)},"
        f" top_k: {p.get('top_k', 1)}"
    )
    eps = "eps"
    offset = f", offset: {fmt(p['norm_offset'])}" if p.get("norm_offset") else ""  # Gemma
    scale = ", scale: dim ** 0.5" if p.get("embed_scale") else ""  # Gemma
    head = "tie: model.embed_tokens" if p["tied"] else "bias: false"
    qkv = ""
    if p.get("qkv_bias") is not None:
        qkv = f"\n            qkv_bias: {str(p['qkv_bias']).lower()}"
    return f"""\
naming: {p.get("naming", "hf-llama")}
vars: {{{vars_}}}
input: {{shape: [{min(p["max_len"], 64)}], dtype: int64}}
blocks:
  decoder_layer:
    args: {{dim: required, heads: required, kv_heads: required, hidden: required}}
    residual:
      body:
        - rmsnorm: {{name: input_layernorm, eps: {eps}{offset}}}
        - attention:
            name: self_attn
            heads: heads
            head_dim: head_dim
            kv_heads: kv_heads
            bias: {str(p["attention_bias"]).lower()}{qkv}
            rope: true
            rope_theta: {fmt(p["rope_theta"])}
      post:
        residual:
          name: ffn
          body:
            - rmsnorm: {{name: post_attention_layernorm, eps: {eps}{offset}}}
            - mlp:
                name: mlp
                hidden: hidden
                act: {p.get("act", "silu")}
                gated: true
                bias: {str(p["mlp_bias"]).lower()}
                experts: experts
                top_k: top_k
body:
  - sequential:
      name: model
      body:
        - embedding: {{name: embed_tokens, vocab: vocab, dim: dim{scale}}}
        - repeat:
            name: layers
            times: layers
            block: decoder_layer
            args: {{dim: dim, heads: heads, kv_heads: kv_heads, hidden: hidden}}
        - rmsnorm: {{name: norm, eps: {eps}{offset}}}
  - linear: {{name: lm_head, out: vocab, {head}}}
"""


def config(arch: Arch) -> dict[str, Any]:
    emb, attn, mlp = first(arch, "embedding"), first(arch, "attention"), first(arch, "mlp")
    max_len = arch.spec.vars.get("max_len", 2048)
    theta = attn.args["rope_theta"]
    moe = mlp.args["experts"] > 1
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": emb.args["vocab"],
        "hidden_size": emb.args["dim"],
        "intermediate_size": mlp.args["hidden"],
        "num_hidden_layers": first(arch, "repeat").args["times"],
        "num_attention_heads": attn.args["heads"],
        "num_key_value_heads": attn.args["kv_heads"],
        "head_dim": attn.args["head_dim"],
        "hidden_act": "silu",
        "max_position_embeddings": int(max_len),
        "rms_norm_eps": first(arch, "rmsnorm").args["eps"],
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "rope_theta": theta,
        "attention_bias": attn.args["bias"],
        "mlp_bias": mlp.args["bias"],
        "tie_word_embeddings": bool(first(arch, "linear").args.get("tie")),
    } | (mixtral.config_fields(mlp.args["experts"], mlp.args["top_k"]) if moe else {})


LLAMA = Family("hf-llama", ("llama", "mistral", "mixtral"), KEYMAP, read, spec_yaml, config)
