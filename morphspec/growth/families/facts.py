"""What checking a plan records for filling (`Facts`), and small helpers every family
module shares: a node's registry rule, channel views, and the layers of a new copy."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from morphspec.arch.nodes import Node
from morphspec.growth.graph import ChannelSpace
from morphspec.growth.groups import InsideFill
from morphspec.growth.kinds import KindRule, rule_of
from morphspec.growth.lifts import Lift
from morphspec.growth.segments import SegmentFacts

__all__ = ["Facts", "channel_view", "leaves", "rule_or_fail", "units_of"]


@dataclass
class Facts:
    """What checking a plan found that filling reads: made fresh by each `check`, kept by
    the family once, never changed while tensors are filled."""

    sizes: dict[int, int]
    """Each student space's size in the teacher; identity layers carry it into spaces
    written only by new layers."""
    identity_layers: dict[str, Node] = field(default_factory=dict)
    zero_keys: set[str] = field(default_factory=set)
    """Tensors that start at zero: new residual blocks' last layers (or last norm's gain)."""
    zero_rows: set[str] = field(default_factory=set)
    """Weights whose every row must output zero (R2R's paired last layer of a new block)."""
    segments: SegmentFacts = field(default_factory=SegmentFacts)
    """Placement, ties and reversible steps (growth/segments.py)."""
    units: dict[int, tuple[ChannelSpace, int]] = field(default_factory=dict)
    """Heads and kv spaces filled by whole kv groups: the proxy space of groups and the
    entries per group (growth/groups.py)."""
    repeats: dict[int, tuple[int, int]] = field(default_factory=dict)
    """kv spaces whose heads repeat: (factor, head_dim)."""
    lifts: dict[int, Lift] = field(default_factory=dict)
    """Spaces through a norm widened by a norm-preserving lift (growth/lifts.py)."""
    scaled: dict[str, float] = field(default_factory=dict)
    """Norm tensors divided by a factor: fills' gains, the norm before a tied head."""
    inside: dict[str, InsideFill] = field(default_factory=dict)
    """Attention tensors whose head_dim grows: entries appended inside every head."""
    routers: dict[str, int] = field(default_factory=dict)
    """Routers of mixtures whose experts grow: the teacher's expert count, 0 when new
    (growth/experts.py)."""

    def widened(self, space: ChannelSpace) -> bool:
        return space.size > self.sizes[space.id]


def rule_or_fail(node: Node) -> KindRule:
    rule = rule_of(node.kind)
    assert rule is not None, f"{node.kind} has no growth rule (the planner refuses it)"
    return rule


def channel_view(x: torch.Tensor, dim: int, mult: int) -> tuple[torch.Tensor, int]:
    """`x` with dimension `dim` split into (channels, mult), sharing memory."""
    if mult == 1:
        return x, dim
    shape = list(x.shape)
    shape[dim : dim + 1] = [shape[dim] // mult, mult]
    return x.view(shape), dim


def leaves(nodes: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        out.extend(leaves(n.children) if n.is_chain else [n])
    return out


def units_of(node: Node) -> list[Node]:
    """A new repeat copy as the blocks it is made of: a `body:` repeat wraps each copy's
    layers in a sequential, so a copy of `[residual]` is that one residual."""
    if node.container == "chain" and node.children:
        units = [unit for child in node.children for unit in units_of(child)]
        if all(u.container == "residual" for u in units):
            return units
    return [node]
