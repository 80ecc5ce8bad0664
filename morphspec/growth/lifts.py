"""Norm-preserving lifts: widening a stream that passes through layernorm or rmsnorm.

A norm's statistics mix the channels of its input, so R2R's (U, U) pairs, Net2Net's
random copies and NetMorph's zeros all change them. The **duplication lift** keeps them:
widening a space from n to n' = k·n channels, every tensor of the space carries k copies
of the teacher's, `x -> [x, x, ..., x]`:

- producers (embedding columns, position embedding columns, o_proj and down_proj rows,
  biases) and channel-wise parameters (norm gains and shifts) are repeated k times;
- a norm of [x, ..., x] sees mean (1/kn)·k·Σx = μ and variance (1/kn)·k·Σ(x−μ)² = σ²
  (rms likewise), so it normalises every copy exactly as before, with the same eps, and
  its repeated gain and shift give [y, ..., y];
- consumers (q/k/v, up/gate projections, an untied head) read k copies of each channel:
  columns W/k each (Net2Net, NetMorph; W/2 is exact in binary floating point), or, in
  R2R, W/k + R_j on copies j ≥ 1 and W/k − ΣR_j on the first, R free: the copies sum to
  W·x whatever R is;
- a head tied to the embedding (`linear: {tie: ...}`) reads the embedding's repeated
  columns [E, ..., E], so it would compute k·E·y: the norm right before it gets gain and
  shift divided by k, and the head reads [y/k, ..., y/k], which sums to E·y.

Other widths (n' not a multiple of n) have no exact lift here and are refused with the
reason; so is a tied head whose stream widens without a lift (its columns are the
embedding's, which the family's rule cannot also make consumer columns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from morphspec.arch.nodes import Arch, Node
from morphspec.errors import Problem
from morphspec.growth.graph import SpaceGraph

if TYPE_CHECKING:
    import torch

__all__ = ["check_lifts", "lift_consume", "lift_produce"]

_NORMS = ("layernorm", "rmsnorm")


def check_lifts(
    student: Arch, graph: SpaceGraph, sizes: dict[int, int], exact: bool,
    lifts: dict[int, int], scaled: dict[str, int],
) -> list[Problem]:  # fmt: skip
    """Record the duplication factor of each widened space that passes through a norm
    (`lifts`) and the norm tensors a tied head needs divided (`scaled`), or refuse."""
    problems: list[Problem] = []
    for space in graph.spaces:
        a = sizes[space.id]
        if not (a and space.size > a and space.mixing_norms and exact):
            continue
        norm = student.node(space.mixing_norms[0])
        if space.size % a:
            problems.append(Problem(
                f"channel space '{space.label}' ({a} -> {space.size} channels) passes through"
                f" {norm.kind} '{norm.path}', whose statistics mix channels. The exact lift"
                f" here copies every channel the same number of times (x -> [x, x]), which"
                f" keeps mean and variance only for a multiple of {a}: grow to"
                f" {2 * a} (or {3 * a}, ...), or keep the width",
                norm.mark,
            ))  # fmt: skip
            continue
        lifts[space.id] = space.size // a
    order = leaf_list(student.root)
    for i, head in enumerate(order):
        if head.kind != "linear" or not head.args.get("tie"):
            continue
        emb = student.node(head.args["tie"])
        sid = next(sp.id for r, sp in graph.roles(emb.key("weight")) if r.kind == "producer")
        reads = graph.input_space[head.path]
        grows = {s for s in (sid, reads) if graph.spaces[s].size > sizes[s]}
        if not grows or not exact:
            continue
        if grows != {sid} or sid != reads or sid not in lifts:
            problems.append(Problem(
                f"'{head.path}' is tied to '{emb.path}' (tie), and the tied pair widens"
                f" ({sizes[sid]} -> {graph.spaces[sid].size} channels) without the"
                " duplication lift of a normalised stream that both write and read: the"
                " embedding's new columns would have to be written and read at once, which"
                " no family's rule makes exact. Untie the head in both specs, or keep the"
                " width",
                head.mark,
            ))  # fmt: skip
            continue
        before = order[i - 1] if i else None
        if before is None or before.kind not in _NORMS or not before.params:
            problems.append(Problem(
                f"'{head.path}' is tied to '{emb.path}', whose columns the duplication lift"
                " repeats, so the head would read k·E·y; a layernorm or rmsnorm with a gain"
                " right before the head absorbs 1/k, and there is none",
                head.mark,
            ))  # fmt: skip
            continue
        for p in before.params:
            scaled[before.key(p)] = lifts[sid]
    return problems


def lift_produce(v: torch.Tensor, d: int, a: int, k: int) -> None:
    """Repeat the first `a` entries of dimension `d` k times (producers, gains)."""
    old = v.narrow(d, 0, a)
    for j in range(1, k):
        v.narrow(d, j * a, a).copy_(old)


def lift_consume(v: torch.Tensor, d: int, a: int, k: int, split: bool) -> None:
    """Columns W/k on every copy, or (`split`) W/k + R_j on copies j ≥ 1 and W/k − ΣR_j on
    the first, R_j the values already drawn for the new columns."""
    base = v.narrow(d, 0, a) / k
    total = torch_zeros_like(base)
    for j in range(1, k):
        new = v.narrow(d, j * a, a)
        if split:
            total.add_(new)
            new.add_(base)
        else:
            new.copy_(base)
    v.narrow(d, 0, a).copy_(base - total)


def torch_zeros_like(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape)


def leaf_list(root: Node) -> list[Node]:
    """The layers of `root` in execution order (containers left out)."""
    return [n for n in root.walk() if n.kind not in ("sequential", "repeat", "residual")]
