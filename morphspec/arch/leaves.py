"""Shape rules, parameter shapes and FLOPs of the built-in leaf kinds, without torch.

Each rule is named by its kind's record (morphspec/kinds/builtin.py); `make` looks the
rule up there, so a registered kind's own rule is used the same way.

FLOPs count forward multiply-adds × 2 of the matrix products and convolutions, per sample;
element-wise work (norms, activations, pooling, bias) is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from morphspec.arch.nodes import Node, TensorShape
from morphspec.errors import Mark
from morphspec.kinds import registry
from morphspec.kinds.record import ShapeError

__all__ = ["COUNT_ARGS", "REAL_ARGS", "ShapeError", "make"]

REAL_ARGS = frozenset({"eps", "momentum", "slope", "p", "h", "rope_theta", "scale", "offset"})
COUNT_ARGS = frozenset(
    {"out", "kernel", "stride", "dilation", "heads", "head_dim", "kv_heads", "hidden",
     "vocab", "dim", "max_len", "steps", "times"}
)  # fmt: skip

Shapes = dict[str, tuple[int, ...]]
Rule = Callable[[dict[str, Any], TensorShape], tuple[TensorShape, Shapes, int]]


def _need(shape: TensorShape, kind: str, *layouts: str) -> None:
    if shape.layout in layouts:
        return
    if shape.layout == "image" and "vector" in layouts:
        raise ShapeError(
            f"needs a flat input but gets an image tensor {shape} (channels, height, width);"
            " add 'flatten' or 'global_avgpool' before it"
        )
    if shape.layout == "tokens":
        raise ShapeError(f"gets token ids {shape}; add an 'embedding' first")
    names = {"vector": "[C]", "image": "[C, H, W]", "sequence": "[T, C]", "tokens": "[T] ids"}
    want = " or ".join(names[x] for x in layouts)
    raise ShapeError(f"needs a {want} input but gets {shape}")


def _affine(c: int, bias: bool) -> Shapes:
    return {"weight": (c,), "bias": (c,)} if bias else {"weight": (c,)}


def _linear(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "linear", "vector", "sequence")
    cin, out = x.channels, a["out"]
    # A tied head (`tie`) reads its embedding's weight and owns no key.
    params: Shapes = {} if a.get("tie") else {"weight": (out, cin)}
    if a["bias"]:
        params["bias"] = (out,)
    rows = x.dims[0] if x.layout == "sequence" else 1
    return x.with_channels(out), params, 2 * rows * cin * out


def _spatial(size: int, k: int, s: int, p: int, d: int, field: str) -> int:
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ShapeError(
            f"kernel {k} (dilation {d}, padding {p}) is larger than the input size {size}", field
        )
    return out


def _conv(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "conv", "image")
    c, h, w = x.dims
    k, s, p, d = a["kernel"], a["stride"], a["padding"], a["dilation"]
    ho, wo = _spatial(h, k, s, p, d, "kernel"), _spatial(w, k, s, p, d, "kernel")
    params: Shapes = {"weight": (a["out"], c, k, k)}
    if a["bias"]:
        params["bias"] = (a["out"],)
    return TensorShape((a["out"], ho, wo), "image"), params, 2 * a["out"] * c * k * k * ho * wo


def _batchnorm(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "batchnorm", "vector", "image")
    c = x.channels
    params = {
        **_affine(c, True),
        "running_mean": (c,),
        "running_var": (c,),
        "num_batches_tracked": (),
    }
    return x, params, 0


def _norm(bias_default: bool) -> Rule:
    def rule(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
        _need(x, "norm", "vector", "sequence")
        return x, _affine(x.channels, a.get("bias", bias_default)), 0

    return rule


def _same(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    if x.layout == "tokens":
        raise ShapeError(f"gets token ids {x}; add an 'embedding' first")
    return x, {}, 0


def _pool(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "pool", "image")
    c, h, w = x.dims
    k, p = a["kernel"], a["padding"]
    s = a["stride"] if a["stride"] is not None else k
    a["stride"] = s
    if p > k // 2:
        raise ShapeError(f"padding {p} must be at most half the kernel {k}", "padding")
    return (
        TensorShape(
            (c, _spatial(h, k, s, p, 1, "kernel"), _spatial(w, k, s, p, 1, "kernel")), "image"
        ),
        {},
        0,
    )


def _global_avgpool(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "global_avgpool", "image")
    return TensorShape((x.dims[0],), "vector"), {}, 0


def _flatten(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    if x.layout == "tokens":
        raise ShapeError(f"gets token ids {x}; add an 'embedding' first")
    n = 1
    for d in x.dims:
        n *= d
    return TensorShape((n,), "vector"), {}, 0


def _embedding(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    if x.layout != "tokens":
        raise ShapeError(f"needs int64 token ids ([T], input dtype int64) but gets {x}")
    return TensorShape((x.dims[0], a["dim"]), "sequence"), {"weight": (a["vocab"], a["dim"])}, 0


def _position(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "position_embedding", "sequence")
    if x.dims[0] > a["max_len"]:
        raise ShapeError(
            f"the sequence has {x.dims[0]} positions, more than max_len {a['max_len']}", "max_len"
        )
    return x, {"weight": (a["max_len"], x.channels)}, 0


def _attention(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "attention", "sequence")
    t, dim = x.dims
    heads, hd = a["heads"], a["head_dim"]
    kv = a["kv_heads"] if a["kv_heads"] is not None else heads
    a["kv_heads"] = kv
    if heads % kv:
        raise ShapeError(f"heads ({heads}) must be divisible by kv_heads ({kv})", "kv_heads")
    if a["rope"] and hd % 2:
        raise ShapeError(f"rotary embedding needs an even head_dim, got {hd}", "head_dim")
    if a.get("rope_theta", 1.0) <= 0:
        raise ShapeError(f"rope_theta must be positive, got {a['rope_theta']}", "rope_theta")
    if a.get("qkv_bias") is None:
        a["qkv_bias"] = a["bias"]
    params: Shapes = {}
    for proj, rows, cols in (("q_proj", heads * hd, dim), ("k_proj", kv * hd, dim),
                             ("v_proj", kv * hd, dim), ("o_proj", dim, heads * hd)):  # fmt: skip
        params[f"{proj}.weight"] = (rows, cols)
        if a["bias"] if proj == "o_proj" else a["qkv_bias"]:
            params[f"{proj}.bias"] = (rows,)
    proj_flops = 2 * t * dim * (2 * heads * hd + 2 * kv * hd)
    return x, params, proj_flops + 2 * 2 * t * t * heads * hd


def _mlp(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    _need(x, "mlp", "vector", "sequence")
    dim, hidden = x.channels, a["hidden"]
    experts, top_k = a.setdefault("experts", 1), a.setdefault("top_k", 1)
    if experts < 1:
        raise ShapeError(f"experts must be at least 1, got {experts}", "experts")
    if not 1 <= top_k <= experts:
        raise ShapeError(f"top_k must be between 1 and experts ({experts}), got {top_k}", "top_k")
    mats = [("up_proj", hidden, dim), ("down_proj", dim, hidden)]
    if a["gated"]:
        mats.insert(1, ("gate_proj", hidden, dim))
    prefixes = [""] if experts == 1 else [f"experts.{j}." for j in range(experts)]
    params: Shapes = {"gate.weight": (experts, dim)} if experts > 1 else {}
    for prefix in prefixes:
        for proj, rows, cols in mats:
            params[f"{prefix}{proj}.weight"] = (rows, cols)
            if a["bias"]:
                params[f"{prefix}{proj}.bias"] = (rows,)
    rows = x.dims[0] if x.layout == "sequence" else 1
    router = 2 * rows * dim * experts if experts > 1 else 0
    return x, params, 2 * rows * dim * hidden * len(mats) * top_k + router


def _channel_pad(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
    if x.layout == "tokens":
        raise ShapeError(f"gets token ids {x}; add an 'embedding' first")
    if a["out"] < x.channels:
        raise ShapeError(
            f"pads channels, so 'out' must be at least the input's {x.channels}, got {a['out']}",
            "out",
        )
    return x.with_channels(a["out"]), {}, 0


def _reversible(kind: str) -> Rule:
    """Keys per step (SPEC.md): hamiltonian `k1.weight b1 k2.weight b2`, each K mapping one
    channel half to `hidden`; midpoint and leapfrog `k.weight b`, K mapping all channels."""

    def rule(a: dict[str, Any], x: TensorShape) -> tuple[TensorShape, Shapes, int]:
        _need(x, kind, "image")
        c, h, w = x.dims
        if kind == "hamiltonian" and c % 2:
            raise ShapeError(
                f"splits its input into two channel halves, so needs an even count, got {c};"
                " put a 'channel_pad' before it"
            )
        if a["kernel"] % 2 == 0:
            raise ShapeError(
                f"needs an odd kernel so that padding (kernel-1)/2 keeps the size,"
                f" got {a['kernel']}",
                "kernel",
            )
        k, hid = a["kernel"], a["hidden"]
        inner = c // 2 if kind == "hamiltonian" else c
        pairs = (("k1", "b1"), ("k2", "b2")) if kind == "hamiltonian" else (("k", "b"),)
        params: Shapes = {}
        for step in range(a["steps"]):  # torch's order: a step's own biases, then its Ks
            for _, bias in pairs:
                params[f"{step}.{bias}"] = (hid,)
            for kernel, _ in pairs:
                params[f"{step}.{kernel}.weight"] = (hid, inner, k, k)
        per_pair = 2 * 2 * hid * inner * k * k * h * w  # K and its transpose
        return x, params, a["steps"] * len(pairs) * per_pair

    return rule


def make(
    kind: str, name: str, path: str, args: dict[str, Any], inp: TensorShape, mark: Mark
) -> Node:
    """A leaf node with its output shape, parameter shapes and FLOPs."""
    record = registry.get(kind)
    if record is None or record.shape is None:
        raise KeyError(f"no shape rule for layer kind '{kind}'")
    args = dict(args)
    eps = args.get("eps")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise ShapeError(
            f"eps must be a finite number > 0 (0 or below makes NaN), got {eps}", "eps"
        )
    out, params, flops = record.shape(args, inp)
    return Node(kind, name, path, args, inp, out, mark, params=params, flops=flops)
