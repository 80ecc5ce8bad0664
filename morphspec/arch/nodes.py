"""The resolved architecture: a tree of named nodes with integer arguments and shapes.

`Arch` is the single source of truth that the builder, the growth planner and the CLI
read. It holds no torch objects, so `morph validate` and `morph summary` stay light.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from morphspec.errors import Mark
from morphspec.kinds import registry
from morphspec.spec.models import Spec

__all__ = ["Arch", "Layout", "Node", "TensorShape"]

Layout = Literal["vector", "image", "sequence", "tokens"]


@dataclass(frozen=True)
class TensorShape:
    """One sample's shape (batch left out) and where its channel dimension is.

    `vector` [C]; `image` [C, H, W] (channels first); `sequence` [T, C] (channels last);
    `tokens` [T] of int64 ids.
    """

    dims: tuple[int, ...]
    layout: Layout
    dtype: str = "float32"

    @property
    def channels(self) -> int:
        if self.layout == "tokens":
            raise ValueError("token ids have no channel dimension")
        return self.dims[0] if self.layout == "image" else self.dims[-1]

    def with_channels(self, c: int) -> TensorShape:
        if self.layout == "image":
            return TensorShape((c, *self.dims[1:]), self.layout, self.dtype)
        return TensorShape((*self.dims[:-1], c), self.layout, self.dtype)

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.dims)) + "]"


@dataclass(frozen=True, eq=False)
class Node:
    """One layer or container. `path` is its state_dict prefix ('' for the root).

    Containers: `sequential` and `repeat` hold `children`; `residual` holds its body in
    `children`, an optional `shortcut` (a sequential node; None is the identity) and `post`.
    `params` maps local parameter and buffer names to shapes (leaves only).
    """

    kind: str
    name: str
    path: str
    args: dict[str, Any]
    inp: TensorShape
    out: TensorShape
    mark: Mark
    children: tuple[Node, ...] = ()
    shortcut: Node | None = None
    post: tuple[Node, ...] = ()
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    flops: int = 0
    block: str | None = None

    def key(self, local: str) -> str:
        return f"{self.path}.{local}" if self.path else local

    def walk(self) -> Iterator[Node]:
        """This node and every node under it, in forward order."""
        yield self
        for child in self.children:
            yield from child.walk()
        if self.shortcut is not None:
            yield from self.shortcut.walk()
        for p in self.post:
            yield from p.walk()

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n.key(k): s for n in self.walk() for k, s in n.params.items()}

    @property
    def is_chain(self) -> bool:
        """Runs its children in order (a sequential or a repeat)."""
        return self.container in ("chain", "copies")

    @property
    def is_container(self) -> bool:
        return self.container is not None

    @property
    def container(self) -> Literal["chain", "copies", "residual"] | None:
        """`chain` (children run in order), `copies` (a chain of numbered copies),
        `residual`, or None for a leaf: its kind record's `container`."""
        record = registry.get(self.kind)
        return record.container if record is not None else None

    def shared_weight(self) -> str | None:
        """The path of the layer whose weight this one reads (a tied head), if any."""
        record = registry.get(self.kind)
        return self.args.get(record.shares) or None if record and record.shares else None


@dataclass(frozen=True, eq=False)
class Arch:
    """A spec resolved to concrete integers, names and shapes."""

    spec: Spec
    root: Node

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input(self) -> TensorShape:
        return self.root.inp

    @property
    def output(self) -> TensorShape:
        return self.root.out

    def nodes(self) -> Iterator[Node]:
        return self.root.walk()

    def node(self, path: str) -> Node:
        return self._by_path[path]

    @cached_property
    def _by_path(self) -> dict[str, Node]:
        return {n.path: n for n in self.nodes()}

    def state_shapes(self) -> Mapping[str, tuple[int, ...]]:
        """Every state_dict key of the built model with its shape (read-only, computed once)."""
        return self._state_shapes

    @cached_property
    def _state_shapes(self) -> Mapping[str, tuple[int, ...]]:
        return MappingProxyType(self.root.state_shapes())

    def trainable_count(self) -> int:
        return sum(_numel(s) for k, s in self.state_shapes().items() if not _is_buffer(k))

    def flops(self) -> int:
        return sum(n.flops for n in self.nodes())

    def shared_weights(self) -> dict[str, str]:
        """Layers that read another's weight (tied heads): reader path -> owner path."""
        return {n.path: tie for n in self.nodes() if (tie := n.shared_weight()) is not None}

    def vocab(self) -> int | None:
        """The token-id bound of a token model: the smallest such bound of its layers (an
        embedding's vocab), None when no layer reads token ids."""
        bounds = [
            n.args[record.token_ids]
            for n in self.nodes()
            if (record := registry.get(n.kind)) is not None and record.token_ids
        ]
        return min(bounds, default=None)


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _is_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in BUFFERS


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
