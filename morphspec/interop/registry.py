"""The closed set of Hugging Face families: by spec `naming` and by config `model_type`."""

from __future__ import annotations

from morphspec.interop.family import Family
from morphspec.interop.gpt2 import GPT2
from morphspec.interop.llama import LLAMA
from morphspec.interop.qwen2 import QWEN2

__all__ = ["BY_MODEL_TYPE", "BY_NAMING", "FAMILIES"]

FAMILIES: tuple[Family, ...] = (GPT2, LLAMA, QWEN2)
BY_NAMING = {f.naming: f for f in FAMILIES}
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
