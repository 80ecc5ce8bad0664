"""The closed set of Hugging Face families: by spec `naming` and by config `model_type`."""

from __future__ import annotations

from morphspec.interop.family import Family
from morphspec.interop.gemma import GEMMA
from morphspec.interop.gpt2 import GPT2
from morphspec.interop.llama import LLAMA
from morphspec.interop.phi3 import PHI3
from morphspec.interop.qwen2 import QWEN2

__all__ = ["BY_MODEL_TYPE", "BY_NAMING", "FAMILIES", "REFUSED"]

FAMILIES: tuple[Family, ...] = (GPT2, LLAMA, QWEN2, GEMMA, PHI3)
BY_NAMING = {f.naming: f for f in FAMILIES}
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}

REFUSED: dict[str, tuple[str, str]] = {
    "qwen2_moe": (
        "shared_expert_intermediate_size",
        "Qwen2-MoE adds a shared expert behind a sigmoid gate to every token's routed"
        " experts (and does not renormalise the top-k weights); the spec's mixture is"
        " Mixtral's, all experts routed",
    ),
    "gemma2": (
        "final_logit_softcapping",
        "Gemma 2 soft-caps its attention and final logits with tanh and alternates sliding"
        " windows, which the spec cannot express",
    ),
}
"""Model types close to a family but refused, with the config field that says why."""
