"""Torch modules for the spec layer kinds that torch does not ship as-is.

Parameter and child names here are part of the checkpoint format (SPEC.md, "Names, and so
state_dict keys"), so they are chosen to match the conventional torch / Hugging Face names and
must not change. Modules carry no buffers beyond what torch's own layers carry, so a built
model's state_dict holds exactly the keys the spec promises.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "Attention",
    "Flatten",
    "GlobalAvgPool",
    "Mlp",
    "PositionEmbedding",
    "RMSNorm",
    "Residual",
    "ScaledEmbedding",
    "Sequence",
    "TiedLinear",
    "activation",
    "apply_rope",
]

# Plain nn.Flatten already flattens every dim after the batch dim.
Flatten = nn.Flatten

ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "relu": lambda _: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "gelu": lambda _: nn.GELU(),  # exact erf form, as torchvision / BERT checkpoints expect
    "gelu_tanh": lambda _: nn.GELU(approximate="tanh"),  # GPT-2's gelu_new
    "silu": lambda _: nn.SiLU(),
    "tanh": lambda _: nn.Tanh(),
    "sigmoid": lambda _: nn.Sigmoid(),
    "identity": lambda _: nn.Identity(),
}


def activation(name: str, slope: float = 0.01, approximate: str = "none") -> nn.Module:
    """Return the activation module for a spec name; `slope` is used by leaky_relu only,
    `approximate` ('none' or 'tanh') by gelu only."""
    if name == "gelu" and approximate == "tanh":
        name = "gelu_tanh"
    try:
        make = ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; expected one of {known}") from None
    return make(slope)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama style): no mean subtraction and no bias; with `offset`
    (Gemma: 1) the gain is offset + weight, applied before the cast back as Gemma does.

    Statistics are taken in at least float32 because squaring half-precision values overflows
    or loses most of their precision; the normalised input is cast back to the input dtype
    and then scaled by the gain, in that order, as Hugging Face's LlamaRMSNorm does (so a
    float32 or bf16 checkpoint computes what it was trained to). Unlike it, float64 input is
    not rounded to float32: exactness checks run in float64.
    """

    def __init__(self, dim: int, eps: float = 1e-5, offset: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.offset = offset
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma: (1 + w) applied before the cast back, in float32
            return (normed * (self.offset + self.weight.to(normed.dtype))).to(x.dtype)
        return (self.weight * normed.to(x.dtype)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class ScaledEmbedding(nn.Embedding):
    """An embedding whose output is multiplied by `scale` (Gemma: √dim), rounded to float32
    and then to the weight's dtype, as Gemma's embedding does; the key stays `weight`."""

    def __init__(self, vocab: int, dim: int, scale: float) -> None:
        super().__init__(vocab, dim)
        self.scale = scale

    def forward(self, input: Tensor) -> Tensor:
        factor = torch.tensor(self.scale, dtype=torch.float32).to(self.weight.dtype)
        return super().forward(input) * factor

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


class PositionEmbedding(nn.Module):
    """Learned absolute position embedding added to a (B, T, dim) input (GPT-2 style)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-2]
        if t > self.max_len:
            raise ValueError(
                f"sequence length {t} exceeds position_embedding max_len {self.max_len}"
            )
        return x + self.weight[:t]

    def extra_repr(self) -> str:
        return f"{self.max_len}, {self.dim}"


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding over the last dim of (..., T, head_dim), positions 0..T-1.

    Uses the "rotate_half" convention of Llama / Hugging Face, so q/k projection weights from
    those checkpoints load without permuting rows. The cos/sin table is Hugging Face's, to the
    bit: `1 / base**(2i/d)` and the angles in float32, then cast to the input dtype, in which
    the rotation runs. It is built on the fly rather than cached in buffers, which would add
    state_dict keys.
    """
    t, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embedding needs an even head_dim, got {d}")
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d))
    pos = torch.arange(t, device=x.device, dtype=torch.float32)
    angles = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Multi-head self-attention on (B, T, dim), with optional grouped-query heads and RoPE.

    Query head h reads kv head h // (heads // kv_heads), as Llama's repeat_kv does, so GQA
    checkpoints load unchanged.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        kv_heads: int | None = None,
        causal: bool = True,
        bias: bool = True,
        rope: bool = False,
        rope_base: float = 10000.0,
        qkv_bias: bool | None = None,
    ) -> None:
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        qkv = bias if qkv_bias is None else qkv_bias  # Qwen2: q/k/v biases, o_proj none
        if heads <= 0 or kv_heads <= 0 or head_dim <= 0:
            raise ValueError(
                f"heads, kv_heads and head_dim must be positive: {heads}, {kv_heads}, {head_dim}"
            )
        if heads % kv_heads:
            raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
        if rope and head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {head_dim}")
        self.dim = dim
        self.heads = heads
        self.head_dim = head_dim
        self.kv_heads = kv_heads
        self.causal = causal
        self.rope = rope
        self.rope_base = rope_base
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=qkv)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=bias)

    def _split(self, x: Tensor, n: int) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)  # (B, n, T, head_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self._split(self.q_proj(x), self.heads)
        k = self._split(self.k_proj(x), self.kv_heads)
        v = self._split(self.v_proj(x), self.kv_heads)
        if self.rope:
            q = apply_rope(q, self.rope_base)
            k = apply_rope(k, self.rope_base)
        groups = self.heads // self.kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, head_dim={self.head_dim}, kv_heads={self.kv_heads}, "
            f"causal={self.causal}, rope={self.rope}"
        )


class Mlp(nn.Module):
    """Transformer feed-forward block; gated=True with act=silu is Llama's SwiGLU."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: str = "gelu",
        gated: bool = False,
        bias: bool = True,
        act_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.gated = gated
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.gate_proj: nn.Linear | None = nn.Linear(dim, hidden, bias=bias) if gated else None
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = activation(act, **(act_options or {}))

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class TiedLinear(nn.Module):
    """A linear layer without a bias whose weight is an embedding's (a tied LM head).

    It keeps the embedding module in a plain list, not as a child, so the shared weight has
    one key (the embedding's) and loading, `to()` and optimisers see one Parameter.
    """

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self._tied: list[nn.Module] = []

    def tie(self, embedding: nn.Module) -> None:
        self._tied[:] = [embedding]

    @property
    def weight(self) -> Tensor:
        if not self._tied:
            raise RuntimeError(f"tied linear: its embedding '{self.source}' was never attached")
        w = self._tied[0].weight
        assert isinstance(w, Tensor)
        return w

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"tie={self.source}"


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C): mean over the spatial dims, as before a classifier head."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def _unique(names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate child name {name!r}")
        seen.add(name)


class Residual(nn.Module):
    """post(body(x) + shortcut(x)), shortcut defaulting to identity.

    Body, shortcut and post layers are all direct children under their own names (no `body.`
    level), so keys read `layer1.0.conv1.weight` and `layer1.0.downsample.0.weight` exactly as
    in torchvision's ResNet. The body order is kept separately from the child registry.
    """

    def __init__(
        self,
        body: list[tuple[str, nn.Module]],
        shortcut: tuple[str, nn.Module] | None = None,
        post: list[tuple[str, nn.Module]] | None = None,
    ) -> None:
        super().__init__()
        post = post or []
        if not body:
            raise ValueError("residual body must hold at least one layer")
        extra = [shortcut[0]] if shortcut is not None else []
        _unique([n for n, _ in body] + extra + [n for n, _ in post])
        for name, module in [*body, *([shortcut] if shortcut else []), *post]:
            self.add_module(name, module)
        self.body_names: tuple[str, ...] = tuple(n for n, _ in body)
        self.shortcut_name: str | None = shortcut[0] if shortcut is not None else None
        self.post_names: tuple[str, ...] = tuple(n for n, _ in post)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for name in self.body_names:
            y = self.get_submodule(name)(y)
        skip = x if self.shortcut_name is None else self.get_submodule(self.shortcut_name)(x)
        y = y + skip
        for name in self.post_names:
            y = self.get_submodule(name)(y)
        return y


class Sequence(nn.Sequential):
    """nn.Sequential with explicit child names (words or digits), which become key segments."""

    def __init__(self, children: list[tuple[str, nn.Module]]) -> None:
        _unique(n for n, _ in children)
        super().__init__(OrderedDict(children))
