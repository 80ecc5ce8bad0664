"""What the Hugging Face tests share: HF's RMSNorm kept in float64 (it rounds to float32
by design), and the warnings transformers logs. Import it after
`pytest.importorskip("transformers")`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral

__all__ = ["float64_rmsnorm", "transformers_warnings"]


def _rms64(self: Any, h: torch.Tensor) -> torch.Tensor:
    return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


@contextmanager
def float64_rmsnorm() -> Iterator[None]:
    saved = modeling_llama.LlamaRMSNorm.forward, modeling_mistral.MistralRMSNorm.forward
    modeling_llama.LlamaRMSNorm.forward = _rms64  # type: ignore[method-assign]
    modeling_mistral.MistralRMSNorm.forward = _rms64  # type: ignore[method-assign]
    try:
        yield
    finally:
        modeling_llama.LlamaRMSNorm.forward, modeling_mistral.MistralRMSNorm.forward = saved


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
