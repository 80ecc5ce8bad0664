"""Transformer specs for growth tests: GPT-style (layernorm, learned positions, GELU) and
Llama-style (rmsnorm, RoPE, SwiGLU, grouped-query), nested or flat blocks, tied or not."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import morphspec
from morphspec.spec.load import load_spec

__all__ = ["build_teacher", "transformer_spec"]


def transformer_spec(
    style: str = "gpt", dim: int = 16, heads: int = 2, kv_heads: int | None = None,
    head_dim: int = 8, layers: int = 1, hidden: int = 24, flat: bool = False,
    tie: bool = False, post_norm: bool = False, vocab: int = 32, seq: int = 8,
    eps: float = 1e-5,
) -> str:  # fmt: skip
    """The YAML text of a small decoder."""
    llama = style == "llama"
    norm = "rmsnorm" if llama else "layernorm"
    ln = f"eps: {eps!r}, name"
    kv = f", kv_heads: {kv_heads}" if kv_heads is not None else ""
    attn = f"attention: {{name: attn, heads: {heads}, head_dim: {head_dim}{kv}" + (
        ", bias: false, rope: true}" if llama else "}"
    )
    mlp = (
        f"mlp: {{name: mlp, hidden: {hidden}, act: silu, gated: true, bias: false}}"
        if llama
        else f"mlp: {{name: mlp, hidden: {hidden}, act: gelu}}"
    )
    if post_norm:
        block = f"""
    residual:
      body:
        - {attn}
      post:
        - {norm}: {{{ln}: ln_1}}"""
    elif flat:
        block = f"""
    sequential:
      body:
        - residual:
            name: a
            body:
              - {norm}: {{{ln}: ln_1}}
              - {attn}
        - residual:
            name: ffn
            body:
              - {norm}: {{{ln}: ln_2}}
              - {mlp}"""
    else:
        block = f"""
    residual:
      body:
        - {norm}: {{{ln}: ln_1}}
        - {attn}
      post:
        residual:
          name: ffn
          body:
            - {norm}: {{{ln}: ln_2}}
            - {mlp}"""
    pos = "" if llama else f"\n        - position_embedding: {{name: wpe, max_len: {seq}}}"
    head = "{name: lm_head, out: vocab, bias: false" + (", tie: transformer.wte}" if tie else "}")
    return f"""morphspec: 1
name: {style}-test
vars: {{vocab: {vocab}, dim: {dim}}}
input: {{shape: [{seq}], dtype: int64}}
blocks:
  blk:
    args: {{}}{block}
body:
  - sequential:
      name: transformer
      body:
        - embedding: {{name: wte, vocab: vocab, dim: dim}}{pos}
        - repeat: {{name: h, times: {layers}, block: blk}}
        - {norm}: {{{ln}: ln_f}}
  - linear: {head}
"""


def build_teacher(
    text: str, path: Any, dtype: torch.dtype = torch.float64, seed: int = 0
) -> nn.Module:
    """The spec's model with seeded weights and random norm gains and shifts, in `dtype`."""
    path.write_text(text, encoding="utf-8")
    torch.manual_seed(seed)
    model = morphspec.build(load_spec(path)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or "norm" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype))
    return model
