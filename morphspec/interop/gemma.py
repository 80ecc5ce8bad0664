"""Gemma version 1 (`GemmaForCausalLM`): a Llama with three differences, each a spec option
rather than new code: RMSNorm gains are 1 + w (`rmsnorm: {offset: 1.0}`, weights stored
around 0), the embedding's output is scaled by √hidden_size (`embedding: {scale: dim **
0.5}`, rounded to float32 then to the weights' dtype, as Gemma does), and the MLP's gate is
tanh-approximated GELU (`gelu_pytorch_tanh`). The head is tied by default. Names are
Llama's.

Refused, by field: `use_bidirectional_attention`, activations other than GELU, rope
scaling (as for Llama). Gemma 2 and later are other model types (registry.REFUSED).
Growing d_model changes the embedding's scale (√dim), which growth refuses by argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.arch import Arch
from morphspec.errors import Mark
from morphspec.interop import llama
from morphspec.interop.family import Config, Family, refuse
from morphspec.interop.keymap import KeyMap

__all__ = ["GEMMA"]

KEYMAP = KeyMap("hf-gemma", llama.KEYMAP.rules, llama.KEYMAP.ignore)
_ACTS = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu": "none"}


def read(config: Config, where: Mark) -> dict[str, Any]:
    act = config.get("hidden_act") or config.get("hidden_activation") or "gelu_pytorch_tanh"
    if act not in _ACTS:
        raise refuse(where, "hidden_act", act, "Gemma's MLP is gated GELU")
    if config.get("use_bidirectional_attention"):
        raise refuse(
            where,
            "use_bidirectional_attention",
            config["use_bidirectional_attention"],
            "the spec's decoder attention is causal",
        )
    params = llama.read_common({**config, "tie_word_embeddings": config.get(
        "tie_word_embeddings", True)}, where)  # fmt: skip
    return {
        **params,
        "mlp_bias": False,
        "naming": "hf-gemma",
        "norm_offset": 1.0,
        "embed_scale": True,
        "act": "gelu" if _ACTS[act] == "none" else "{gelu: {approximate: tanh}}",
    }


def spec_yaml(p: Mapping[str, Any]) -> str:
    return llama.spec_yaml(p)


def config(arch: Arch) -> dict[str, Any]:
    out = {k: v for k, v in llama.config(arch).items() if k != "mlp_bias"}
    mlp = next(n for n in arch.nodes() if n.kind == "mlp")
    tanh = mlp.args.get("act_options", {}).get("approximate", "none") == "tanh"
    return {
        **out,
        "architectures": ["GemmaForCausalLM"],
        "model_type": "gemma",
        "hidden_act": "gelu_pytorch_tanh" if tanh else "gelu",
    }


GEMMA = Family("hf-gemma", ("gemma",), KEYMAP, read, spec_yaml, config)
