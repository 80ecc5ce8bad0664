"""Channel spaces: the tensor dimensions that must grow together.

A channel space is a set of tensor edges that share one channel dimension. Channel-wise
ops (bias, batchnorm, activations, pooling, dropout) keep their input's space; a residual
sum joins the spaces of its two operands, so a stage's stream (shortcut included) is one
space. Each space knows the tensor dimensions that touch it:

- producers: rows that write it (a linear or conv weight's dim 0, their bias, an embedding's
  dim 1, an mlp's `down_proj` rows);
- consumers: columns that read it (dim 1 of linear and conv weights, attention and mlp
  input projections), with `mult` features per channel where a `flatten` turned a [C, H, W]
  tensor into C*H*W features (channel-major, so channel c owns columns c*H*W ... c*H*W+H*W-1);
- channel-wise parameters (batchnorm weight, bias and running stats, norm gains).

What each kind reads and writes comes from `growth/kinds.py`; this module only walks.
This is the inverse of structural pruning's dependency groups: pruning removes a coupled
group of rows and columns; growth appends one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from morphspec.arch.nodes import Arch, Node
from morphspec.growth.kinds import APPEND, Layout, ParamRole, rule_of

__all__ = ["ChannelSpace", "Role", "SpaceGraph", "space_graph"]

RoleKind = Literal["producer", "consumer", "channel"]


@dataclass(frozen=True)
class Role:
    """One dimension of one state_dict tensor that lies in a channel space."""

    key: str
    dim: int
    kind: RoleKind
    node: str
    mult: int = 1
    layout: Layout = APPEND


@dataclass
class ChannelSpace:
    """A coupled channel dimension: its edges, size and every tensor dimension it touches."""

    id: int
    size: int
    edges: list[str] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    mixing_norms: list[str] = field(default_factory=list)
    ops: list[tuple[str, str]] = field(default_factory=list)
    """(path, kind) of every channel-wise op applied to a tensor of this space."""
    frozen_by: list[str] = field(default_factory=list)
    """Layers that fix this space's width (a flatten of [T, C] interleaves channels)."""
    is_input: bool = False
    is_output: bool = False

    @property
    def label(self) -> str:
        """A readable name: the first edge that a layer writes."""
        named = [e for e in self.edges if e != "input"]
        return named[0] if named else "input"

    def producers(self) -> list[Role]:
        return [r for r in self.roles if r.kind == "producer"]

    def consumers(self) -> list[Role]:
        return [r for r in self.roles if r.kind == "consumer"]


@dataclass
class SpaceGraph:
    """Every channel space of an Arch, and for each tensor the spaces of its dimensions."""

    spaces: list[ChannelSpace]
    edge_space: dict[str, int]
    tensor_roles: dict[str, list[tuple[Role, int]]]
    input_nonneg: dict[str, bool]
    """Whether the tensor entering each node (by path) is known to be non-negative."""
    pads: dict[int, tuple[int, str]] = field(default_factory=dict)
    """For the output space of each channel_pad: its input space and the pad's path."""
    input_space: dict[str, int] = field(default_factory=dict)
    """The space of the tensor entering each node, by path (a tied head reads it)."""

    def roles(self, key: str) -> Iterator[tuple[Role, ChannelSpace]]:
        for role, sid in self.tensor_roles.get(key, []):
            yield role, self.spaces[sid]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def add(self, x: str) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


@dataclass
class _Pending:
    role: Role
    edge: str


class _Builder:
    """Walks the Arch forward, naming each tensor edge by the node that wrote it."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.size: dict[str, int] = {}
        self.pending: list[_Pending] = []
        self.norms: list[tuple[str, str]] = []
        self.ops: list[tuple[str, str, str]] = []
        self.frozen: list[tuple[str, str]] = []
        self.nonneg: dict[str, bool] = {}
        self.input_nonneg: dict[str, bool] = {}
        self.pads: list[tuple[str, str, str]] = []
        self.input_edge: dict[str, str] = {}

    def edge(self, name: str, size: int, nonneg: bool = False) -> str:
        self.uf.add(name)
        self.size[name] = size
        self.nonneg[name] = nonneg
        return name

    def role(self, node: Node, r: ParamRole, edge: str, mult: int = 1) -> None:
        role = Role(node.key(r.param), r.dim, r.role, node.path, mult, r.layout)
        self.pending.append(_Pending(role, edge))

    def walk(self, node: Node, edge: str, mult: int) -> tuple[str, int]:
        kind = node.kind
        self.input_nonneg[node.path] = self.nonneg.get(edge, False)
        self.input_edge[node.path] = edge
        if node.is_chain:
            for child in node.children:
                edge, mult = self.walk(child, edge, mult)
            return edge, mult
        if node.container == "residual":
            return self.residual(node, edge, mult)
        nonneg = self.nonneg.get(edge, False)
        rule = rule_of(kind)
        if rule is None:
            # Unknown to growth: the planner refuses it if it has parameters; without, its
            # output is a new space that nothing grows.
            return self.edge(node.path, node.out.channels), 1
        if rule.flow == "keep":
            edges = {"in": edge, **self.inner(node, rule.inner)}
            for r in rule.roles_of(node.params):
                self.role(node, r, edges[r.space], mult if r.space == "in" else 1)
            if rule.mixes_channels:
                self.norms.append((node.path, edge))
            self.ops.append((node.path, kind, edge))
            self.nonneg[edge] = rule.nonneg_out or (rule.keeps_nonneg and nonneg)
            return edge, mult
        if rule.flow == "flatten":
            if node.inp.layout == "image":
                return edge, mult * node.inp.dims[1] * node.inp.dims[2]
            if node.inp.layout == "vector":
                return edge, mult
            # [T, C] -> [T*C] puts channel c at t*C + c: new channels would interleave with
            # old ones, so the space before it must keep its width.
            self.frozen.append((node.path, edge))
            out = self.edge(node.path, node.out.channels)
            return out, 1
        if rule.freezes_input:
            self.frozen.append((node.path, edge))
        out = self.edge(node.path, node.out.channels if node.out.layout != "tokens" else 0)
        edges = {"in": edge, "out": out, **self.inner(node, rule.inner)}
        if rule.pads:
            self.pads.append((node.path, edge, out))
        for r in rule.roles_of(node.params):
            self.role(node, r, edges[r.space], mult if r.space == "in" else 1)
        return out, 1

    def inner(self, node: Node, inner: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
        """An edge per inner space of `node` (an mlp's or a reversible unit's hidden)."""
        return {
            name: self.edge(f"{node.path}.{name}", math.prod(node.args[a] for a in args))
            for name, args in inner.items()
        }

    def residual(self, node: Node, edge: str, mult: int) -> tuple[str, int]:
        in_nonneg = self.nonneg.get(edge, False)
        inner, imult = edge, mult
        for child in node.children:
            inner, imult = self.walk(child, inner, imult)
        if node.shortcut is None:
            self.uf.union(edge, inner)
            joined = in_nonneg and self.nonneg.get(inner, False)
        else:
            short, _ = self.walk(node.shortcut, edge, mult)
            self.uf.union(short, inner)
            joined = self.nonneg.get(short, False) and self.nonneg.get(inner, False)
        self.nonneg[inner] = joined
        for post in node.post:
            inner, imult = self.walk(post, inner, imult)
        return inner, imult


def space_graph(arch: Arch) -> SpaceGraph:
    """The channel spaces of `arch`; space ids are stable for a given Arch."""
    b = _Builder()
    first = "input"
    b.edge(first, arch.input.channels if arch.input.layout != "tokens" else 0)
    last, _ = b.walk(arch.root, first, 1)
    roots: dict[str, int] = {}
    spaces: list[ChannelSpace] = []
    edge_space: dict[str, int] = {}
    for name in b.size:
        root = b.uf.find(name)
        if root not in roots:
            roots[root] = len(spaces)
            spaces.append(ChannelSpace(len(spaces), b.size[name]))
        sid = roots[root]
        spaces[sid].edges.append(name)
        edge_space[name] = sid
    tensor_roles: dict[str, list[tuple[Role, int]]] = {}
    for p in b.pending:
        sid = edge_space[p.edge]
        spaces[sid].roles.append(p.role)
        tensor_roles.setdefault(p.role.key, []).append((p.role, sid))
    for path, edge in b.norms:
        spaces[edge_space[edge]].mixing_norms.append(path)
    for path, edge in b.frozen:
        spaces[edge_space[edge]].frozen_by.append(path)
    for path, kind, edge in b.ops:
        spaces[edge_space[edge]].ops.append((path, kind))
    spaces[edge_space[first]].is_input = True
    spaces[edge_space[last]].is_output = True
    pads = {edge_space[out]: (edge_space[inp], path) for path, inp, out in b.pads}
    inputs = {path: edge_space[e] for path, e in b.input_edge.items()}
    return SpaceGraph(spaces, edge_space, tensor_roles, dict(b.input_nonneg), pads, inputs)
