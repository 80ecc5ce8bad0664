"""Qwen2 (`Qwen2ForCausalLM`): a Llama whose q, k and v projections carry biases and whose
o_proj has none (the spec's `qkv_bias: true` beside `bias: false`). Tensor names are
Llama's, so the key map is Llama's under this family's name.

Its config says `use_sliding_window` (false in every released model) beside a
`sliding_window` size; the window only matters when it is used and shorter than the
positions, and that case is refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.arch import Arch
from morphspec.errors import Mark
from morphspec.interop import llama
from morphspec.interop.family import Config, Family
from morphspec.interop.keymap import KeyMap

__all__ = ["QWEN2"]

KEYMAP = KeyMap("hf-qwen2", llama.KEYMAP.rules, llama.KEYMAP.ignore)


def read(config: Config, where: Mark) -> dict[str, Any]:
    llama.check_act(config, where)
    types = config.get("layer_types") or ()
    used = bool(config.get("use_sliding_window")) or "sliding_attention" in types
    llama.check_window(config, where, used)
    return {
        **llama.read_common(config, where),
        "attention_bias": False,
        "qkv_bias": True,
        "naming": "hf-qwen2",
    }


def spec_yaml(p: Mapping[str, Any]) -> str:
    return llama.spec_yaml(p)


def config(arch: Arch) -> dict[str, Any]:
    # a spec of another bias layout fails export's round trip, which names the layer
    out = {k: v for k, v in llama.config(arch).items() if k not in ("attention_bias", "mlp_bias")}
    return {
        **out,
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "use_sliding_window": False,
        "sliding_window": None,
        "layer_types": ["full_attention"] * out["num_hidden_layers"],  # one per layer
    }


QWEN2 = Family("hf-qwen2", ("qwen2",), KEYMAP, read, spec_yaml, config)
