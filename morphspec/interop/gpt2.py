"""GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm, fused q/k/v in Conv1D layout.

The spec mirrors `examples/specs/gpt_mini.yaml`. Hugging Face's Conv1D computes `x W + b`
with `W` stored `[in, out]`, so every weight is transposed, and `c_attn` is q, k and v
stacked along the output (after transposing back: rows q, then k, then v).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.arch import Arch
from morphspec.errors import Mark
from morphspec.interop.family import Config, Family, first, fmt, refuse
from morphspec.interop.hfconfig import Field, flag, optional, parse, positive, size, text
from morphspec.interop.keymap import KeyMap, Rule

__all__ = ["GPT2"]

_H = "transformer.h.{i}."
KEYMAP = KeyMap(
    "hf-gpt2",
    (
        Rule(("transformer.wte.weight",), "transformer.wte.weight"),
        Rule(("transformer.wpe.weight",), "transformer.wpe.weight"),
        Rule((_H + "ln_1.{w}",), _H + "ln_1.{w}"),
        Rule(
            tuple(_H + f"attn.{p}_proj.weight" for p in "qkv"),
            _H + "attn.c_attn.weight",
            ("concat", "transpose"),
        ),
        Rule(
            tuple(_H + f"attn.{p}_proj.bias" for p in "qkv"), _H + "attn.c_attn.bias", ("concat",)
        ),
        Rule((_H + "attn.o_proj.{w}",), _H + "attn.c_proj.{w}", ("transpose",)),
        Rule((_H + "ffn.ln_2.{w}",), _H + "ln_2.{w}"),
        Rule((_H + "ffn.mlp.up_proj.{w}",), _H + "mlp.c_fc.{w}", ("transpose",)),
        Rule((_H + "ffn.mlp.down_proj.{w}",), _H + "mlp.c_proj.{w}", ("transpose",)),
        Rule(("transformer.ln_f.{w}",), "transformer.ln_f.{w}"),
        Rule(("lm_head.weight",), "lm_head.weight"),
    ),
    ignore=(_H + "attn.bias", _H + "attn.masked_bias", "lm_head.weight"),
    optional_prefix="transformer.",
)

_ACTS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


FIELDS = (
    *(Field(n, size) for n in ("vocab_size", "n_embd", "n_head", "n_layer")),
    Field("n_positions", size, 1024),
    Field("n_inner", optional(size), None),
    Field("layer_norm_epsilon", positive, 1e-5),
    Field("activation_function", text, "gelu_new"),
    Field("tie_word_embeddings", flag, True),
    Field("scale_attn_weights", flag, True),
    Field("scale_attn_by_inverse_layer_idx", flag, False),
    Field("add_cross_attention", flag, False),
)


def read(raw: Config, where: Mark) -> dict[str, Any]:
    """The spec parameters of a config, its `FIELDS` checked by type first."""
    config = parse(raw, FIELDS, where)
    act = config["activation_function"]
    if act not in _ACTS:
        raise refuse(where, "activation_function", act, "morph builds gelu_new and gelu")
    for field, ok in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if config[field] != ok:
            raise refuse(where, field, config[field], f"the spec's attention has it {ok}")
    dim, heads = config["n_embd"], config["n_head"]
    if dim % heads:
        raise refuse(where, "n_head", heads, f"n_embd {dim} is not a multiple of it")
    return {
        "vocab": config["vocab_size"],
        "dim": dim,
        "heads": heads,
        "layers": config["n_layer"],
        "max_len": config["n_positions"],
        "hidden": config["n_inner"],
        "approximate": _ACTS[act],
        "eps": config["layer_norm_epsilon"],
        "tied": config["tie_word_embeddings"],
    }


def spec_yaml(p: Mapping[str, Any]) -> str:
    hidden = "hidden" if p["hidden"] is not None else "4*dim"
    vars_ = f"vocab: {p['vocab']}, dim: {p['dim']}, heads: {p['heads']}, layers: {p['layers']}"
    vars_ += f", max_len: {p['max_len']}" + (f", hidden: {p['hidden']}" if p["hidden"] else "")
    vars_ += f", eps: {fmt(p['eps'])}"
    act = "gelu" if p["approximate"] == "none" else "{gelu: {approximate: tanh}}"
    head = "tie: transformer.wte" if p["tied"] else "bias: false"
    eps = "eps"
    return f"""\
naming: hf-gpt2
vars: {{{vars_}}}
input: {{shape: [{min(p["max_len"], 64)}], dtype: int64}}
blocks:
  gpt_block:
    args: {{dim: required, heads: required, hidden: required}}
    residual:
      body:
        - layernorm: {{name: ln_1, eps: {eps}}}
        - attention: {{name: attn, heads: heads, head_dim: dim // heads}}
      post:
        residual:
          name: ffn
          body:
            - layernorm: {{name: ln_2, eps: {eps}}}
            - mlp: {{name: mlp, hidden: hidden, act: {act}}}
body:
  - sequential:
      name: transformer
      body:
        - embedding: {{name: wte, vocab: vocab, dim: dim}}
        - position_embedding: {{name: wpe, max_len: max_len}}
        - repeat:
            name: h
            times: layers
            block: gpt_block
            args: {{dim: dim, heads: heads, hidden: {hidden}}}
        - layernorm: {{name: ln_f, eps: {eps}}}
  - linear: {{name: lm_head, out: vocab, {head}}}
"""


def config(arch: Arch) -> dict[str, Any]:
    emb, attn, mlp = first(arch, "embedding"), first(arch, "attention"), first(arch, "mlp")
    dim = emb.args["dim"]
    approximate = mlp.args.get("act_options", {}).get("approximate", "none")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": emb.args["vocab"],
        "n_embd": dim,
        "n_head": attn.args["heads"],
        "n_layer": first(arch, "repeat").args["times"],
        "n_positions": first(arch, "position_embedding").args["max_len"],
        "n_inner": None if mlp.args["hidden"] == 4 * dim else mlp.args["hidden"],
        "activation_function": "gelu_new" if approximate == "tanh" else "gelu",
        "layer_norm_epsilon": first(arch, "layernorm").args["eps"],
        "tie_word_embeddings": bool(first(arch, "linear").args.get("tie")),
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
    }


GPT2 = Family("hf-gpt2", ("gpt2",), KEYMAP, read, spec_yaml, config)
