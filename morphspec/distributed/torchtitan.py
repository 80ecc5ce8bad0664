"""torchtitan's Llama names, read from a DCP checkpoint into an `hf-llama` spec.

torchtitan saves its model's own state_dict keys at the top level of the DCP directory.
Pinned from torchtitan's source (`torchtitan/models/llama3/state_dict_adapter.py`,
`from_hf_map`, v0.3.0; the older names, before `qkv_linear` and `lm_head`, are accepted too):

    spec key (hf-llama)                               torchtitan key
    model.embed_tokens.weight                         tok_embeddings.weight
    model.layers.N.input_layernorm.weight             layers.N.attention_norm.weight
    model.layers.N.self_attn.{q,k,v}_proj.weight      layers.N.attention.qkv_linear.w{q,k,v}.weight
                                                      (older: layers.N.attention.w{q,k,v}.weight)
    model.layers.N.self_attn.o_proj.weight            layers.N.attention.wo.weight
    model.layers.N.ffn.post_attention_layernorm.weight  layers.N.ffn_norm.weight
    model.layers.N.ffn.mlp.{gate,up,down}_proj.weight layers.N.feed_forward.w{1,3,2}.weight
    model.norm.weight                                 norm.weight
    lm_head.weight                                    lm_head.weight (older: output.weight)

torchtitan's RoPE rotates interleaved pairs (complex multiplication), Hugging Face's and
the spec's rotate halves; torchtitan's adapter turns its wq/wk into HF's with
`w.view(h, d // h // 2, 2, n).transpose(1, 2).reshape(d, n)` (h heads, d rows), and so
does this view. The package itself could not be used to check logits here (it needs
`spmd_types`, `torchdata` and more), so these names and the permutation are pinned from
its source, not measured against its model (docs/distributed.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch

from morphspec.arch import Arch
from morphspec.checkpoint.reader import CheckpointReader
from morphspec.distributed.dcp_source import DCPSource
from morphspec.errors import CheckpointError, Mark, Problem

__all__ = ["TITAN_NAMES", "TorchtitanView", "is_torchtitan", "permute_to_hf"]

_L = "model.layers.{i}."
TITAN_NAMES: dict[str, tuple[str, ...]] = {
    "model.embed_tokens.weight": ("tok_embeddings.weight",),
    _L + "input_layernorm.weight": ("layers.{i}.attention_norm.weight",),
    **{
        _L + f"self_attn.{p}_proj.weight": (
            f"layers.{{i}}.attention.qkv_linear.w{p}.weight",
            f"layers.{{i}}.attention.w{p}.weight",
        )
        for p in "qkv"
    },
    _L + "self_attn.o_proj.weight": ("layers.{i}.attention.wo.weight",),
    _L + "ffn.post_attention_layernorm.weight": ("layers.{i}.ffn_norm.weight",),
    _L + "ffn.mlp.gate_proj.weight": ("layers.{i}.feed_forward.w1.weight",),
    _L + "ffn.mlp.up_proj.weight": ("layers.{i}.feed_forward.w3.weight",),
    _L + "ffn.mlp.down_proj.weight": ("layers.{i}.feed_forward.w2.weight",),
    "model.norm.weight": ("norm.weight",),
    "lm_head.weight": ("lm_head.weight", "output.weight"),
}
_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def is_torchtitan(source: DCPSource) -> bool:
    return "tok_embeddings.weight" in source


def permute_to_hf(w: torch.Tensor, heads: int) -> torch.Tensor:
    """torchtitan's interleaved-RoPE rows of q or k (heads x head_dim) in HF's order."""
    d, n = w.shape
    return w.view(heads, d // heads // 2, 2, n).transpose(1, 2).reshape(d, n).contiguous()


class TorchtitanView(CheckpointReader):
    """A torchtitan DCP checkpoint in an hf-llama spec's keys (q and k permuted)."""

    def __init__(self, source: DCPSource, arch: Arch) -> None:
        self._stack, self._handles, self._index, self._sha = source._stack, {}, None, None
        self.source = source
        self.path = source.path
        self._shapes = arch.state_shapes()
        attn = next(n for n in arch.nodes() if n.kind == "attention")
        self._heads = {"q": int(attn.args["heads"]), "k": int(attn.args["kv_heads"])}
        self._titan: dict[str, str] = {}
        problems: list[Problem] = []
        for key in sorted(self._shapes):
            m = _LAYER.match(key)
            pattern = _LAYER.sub(_L, key, count=1) if m else key
            names = [n.format(i=m.group(1)) if m else n for n in TITAN_NAMES.get(pattern, ())]
            found = next((n for n in names if n in source), None)
            if found is None:
                where = f" (torchtitan: {names[0]})" if names else ""
                problems.append(Problem(f"missing tensor for '{key}'{where}", Mark(str(self.path))))
            else:
                self._titan[key] = found
        if problems:
            raise CheckpointError(problems[:10])

    @property
    def paths(self) -> list[Path]:
        return self.source.paths

    @property
    def metadata(self) -> dict[str, str]:
        return {}

    def keys(self) -> list[str]:
        return sorted(self._titan)

    def __contains__(self, key: object) -> bool:
        return key in self._titan

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._titan)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.source.shape(self._titan[key])

    def dtype(self, key: str) -> torch.dtype:
        return self.source.dtype(self._titan[key])

    def nbytes(self, key: str) -> int:
        return self.source.nbytes(self._titan[key])

    def get(self, key: str, copy: bool = True) -> torch.Tensor:
        w = self.source.get(self._titan[key])
        for p, heads in self._heads.items():
            if key.endswith(f"self_attn.{p}_proj.weight"):
                return permute_to_hf(w, heads)
        return w
