"""The scale and the randomness of free parameters (the U, c and Z of the growth rule).

A uniform draw with standard deviation s is `U(-√3·s, √3·s)`: the variance of U(-a, a)
is a²/3, so a = √3·s. (The R2R paper writes U(-s/√3, s/√3), whose standard deviation is
s/3; that is a slip.) `match` takes s from the existing weights of the same tensor, or of
the same tensor in the previous block for a new block, as the R2R paper does (its
appendix E shows He-scaled new weights destabilise training); `he` uses √(2 / fan_in).

Every tensor gets its own generator, seeded from the user's seed and the tensor's key,
so the output does not depend on the order tensors are written or on sharding.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from morphspec.growth.options import InitMode

__all__ = [
    "InitMode", "add_normal", "generator", "he_std", "std_of", "tensor_std", "uniform_into",
    "wide_draws",
]  # fmt: skip

CHUNK = 1 << 20  # elements per float64 work buffer: 8 MB, below glibc's mmap threshold


def generator(seed: int, key: str, salt: str = "") -> torch.Generator:
    """A generator whose stream depends only on (seed, key, salt)."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _chunks(x: torch.Tensor) -> list[torch.Tensor]:
    """Views covering `x` (contiguous or not) of at most about CHUNK elements each, in a
    fixed order, so a draw into them needs only a small float64 buffer."""
    if x.numel() == 0:
        return []
    if x.is_contiguous():
        flat = x.view(-1)
        return [flat[i : i + CHUNK] for i in range(0, flat.numel(), CHUNK)]
    rows = max(1, CHUNK // max(1, x[0].numel()))
    return [x.narrow(0, i, min(rows, x.shape[0] - i)) for i in range(0, x.shape[0], rows)]


_WIDE = ContextVar("wide_draws", default=False)
_LOW = (torch.float16, torch.bfloat16)


@contextmanager
def wide_draws() -> Iterator[None]:
    """Within it, `uniform_into` on a float16 or bfloat16 view draws float64 values a chunk
    at a time and rounds each once: the values a float64 copy of the whole tensor would
    get and then round (torch draws one 64-bit number per float64 element, in the view's
    order, so chunks in that order continue one stream), without that copy."""
    token = _WIDE.set(True)
    try:
        yield
    finally:
        _WIDE.reset(token)


def _uniform_wide(x: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    parts = _chunks(x)
    buffer = torch.empty(max(p.numel() for p in parts), dtype=torch.float64)
    for part in parts:
        wide = buffer[: part.numel()].view(part.shape)
        part.copy_(wide.uniform_(-bound, bound, generator=gen))


def uniform_into(x: torch.Tensor, std: float, gen: torch.Generator) -> None:
    """Fill `x` (any view) with U(-√3·std, √3·std), drawn directly in `x`'s dtype.

    Free parameters need no float64: nothing is derived from them, and a pair's halves
    are copies (or negations) of one stored value, so they are equal after rounding. One
    in-place draw is about 7x faster than drawing float64 and casting, and needs no buffer.
    The bound is computed in float64; torch rounds it once to the storage dtype's range.
    """
    if x.numel() == 0:
        return
    bound = math.sqrt(3.0) * std
    if _WIDE.get() and x.dtype in _LOW:
        _uniform_wide(x, bound, gen)
        return
    x.uniform_(-bound, bound, generator=gen)


def add_normal(x: torch.Tensor, std: float, gen: torch.Generator) -> None:
    """Add N(0, std²) noise to `x` (any view) in place, chunk by chunk, drawn in `x`'s dtype."""
    for part in _chunks(x):
        part.add_(torch.empty(part.shape, dtype=x.dtype).normal_(0.0, std, generator=gen))


def std_of(t: torch.Tensor) -> float:
    """The standard deviation of `t`, accumulated in float64 chunk by chunk (no full copy).

    One pass: each chunk is converted into one reused float64 buffer (8 MB), whose Σx and
    Σx² (a BLAS dot) are added up, then var = (Σx² - (Σx)²/n) / (n - 1). That formula
    cancels when |mean| is far above the spread; then the exact two-pass version runs
    instead. About 4x faster than two passes, and 2x faster than torch's float64-accumulating
    `sum(dtype=...)` on float16.
    """
    flat = t.reshape(-1)
    n = flat.numel()
    if n < 2:
        return 0.0
    buffer = torch.empty(min(n, CHUNK), dtype=torch.float64)
    s1 = s2 = 0.0
    for start in range(0, n, CHUNK):
        part = flat[start : start + CHUNK]
        wide = buffer[: part.numel()].copy_(part)
        s1 += float(wide.sum())
        s2 += float(torch.dot(wide, wide))
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1)
    if var > 1e-6 * mean * mean:
        return math.sqrt(var)
    return _std_two_pass(flat, mean)


def _std_two_pass(flat: torch.Tensor, mean: float) -> float:
    """Σ(x - mean)² in float64 chunks: exact where the one-pass formula would cancel."""
    n = flat.numel()
    sq = 0.0
    for start in range(0, n, CHUNK):
        part = flat[start : start + CHUNK].to(torch.float64, copy=True)
        sq += float(part.sub_(mean).square_().sum())
    return math.sqrt(sq / (n - 1))


def he_std(shape: tuple[int, ...]) -> float:
    """√(2 / fan_in) for a weight of `shape` (rows are outputs; 1-D tensors get 0)."""
    if len(shape) < 2:
        return 0.0
    fan_in = math.prod(shape[1:])
    return math.sqrt(2.0 / fan_in) if fan_in else 0.0


def tensor_std(
    existing: float | None, shape: tuple[int, ...], mode: InitMode, scale: float
) -> float:
    """The standard deviation for the new entries of a tensor of `shape`.

    `existing` is the spread of the teacher's tensor (or of the previous block's for a new
    block), None when there is none. With `match`, a missing or constant weight falls back
    to He; a bias keeps its spread (0 when the existing biases are all equal, so new biases
    start at 0).
    """
    if mode == "match" and existing is not None and (existing > 0 or len(shape) < 2):
        return existing * scale
    return he_std(shape) * scale
