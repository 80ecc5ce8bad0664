"""What the Hugging Face tests share: HF's RMSNorm kept in float64 (it rounds to float32
by design), and the warnings transformers logs. Import it after
`pytest.importorskip("transformers")`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.models.gemma import modeling_gemma
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.mixtral import modeling_mixtral
from transformers.models.phi3 import modeling_phi3
from transformers.models.qwen2 import modeling_qwen2

__all__ = ["float64_rmsnorm", "transformers_warnings"]


def _rms64(self: Any, h: torch.Tensor) -> torch.Tensor:
    return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


_NORMS: list[type[Any]] = [
    modeling_llama.LlamaRMSNorm,
    modeling_mistral.MistralRMSNorm,
    modeling_qwen2.Qwen2RMSNorm,
    modeling_mixtral.MixtralRMSNorm,
    modeling_phi3.Phi3RMSNorm,
]


def _gemma64(self: Any, h: torch.Tensor) -> torch.Tensor:
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)) * (1.0 + self.weight)


@contextmanager
def float64_rmsnorm() -> Iterator[None]:
    saved = [cls.forward for cls in _NORMS]
    gemma = modeling_gemma.GemmaRMSNorm.forward
    for cls in _NORMS:
        cls.forward = _rms64
    modeling_gemma.GemmaRMSNorm.forward = _gemma64  # type: ignore[method-assign]
    try:
        yield
    finally:
        for cls, forward in zip(_NORMS, saved, strict=True):
            cls.forward = forward
        modeling_gemma.GemmaRMSNorm.forward = gemma  # type: ignore[method-assign]


@contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """Warnings transformers logs (its logger does not propagate, so caplog misses them)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)
