"""A mixture of experts as Mixtral computes it: a router `gate` (linear, no bias) scores the
experts, the top_k of the softmax are kept and renormalised to sum 1, and the output is the
weighted sum of those experts' MLPs. Child names (`gate`, `experts.<j>.<proj>`) are part of
the checkpoint format (interop/mixtral.py maps them to Hugging Face's).

The softmax runs in at least float32, as Hugging Face's router does, so a bf16 model
routes as it was trained; float64 stays float64 for the exactness checks. Identical
experts give back the dense MLP whatever the router says, since the kept weights sum to 1:
that is what makes upcycling exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from morphspec.builder.layers import Mlp

__all__ = ["MoE"]


class MoE(nn.Module):
    def __init__(
        self, dim: int, hidden: int, experts: int, top_k: int, act: str = "silu",
        gated: bool = True, bias: bool = False, act_options: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be between 1 and experts ({experts}), got {top_k}")
        self.top_k = top_k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            Mlp(dim, hidden, act, gated=gated, bias=bias, act_options=act_options)
            for _ in range(experts)
        )

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        logits = self.gate(flat)
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(flat)
        for j, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == j)
            if token.numel():
                y = expert(flat[token]) * weights[token, slot, None]
                out.index_add_(0, token, y.to(out.dtype))
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"experts={len(self.experts)}, top_k={self.top_k}"
