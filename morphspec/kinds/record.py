"""`Kind`: everything morphspec knows about one layer kind, in one record.

A record ties together what the rest of the package reads by the kind's name:

- `model`: the pydantic model of its spec entry (args and defaults; `op` a Literal of
  the kind's name), from which the spec's layer union and JSON Schema are derived;
- `shape`: its shape rule, `(args, input shape) -> (output shape, parameter shapes,
  FLOPs)` (containers have none: the resolver walks their bodies);
- `builder`: the torch module factory as a lazy `"module:attr"`, `attr(node) -> nn.Module`,
  imported only when a model is built, so the spec side never imports torch;
- `growth`: its growth rule (`KindRule`), None for a kind growth does not know;
- a few facts other modules ask about without naming the kind (below).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from morphspec.growth.rule import KindRule, check_rule

__all__ = ["Kind", "ShapeError", "ShapeRule"]


class ShapeError(ValueError):
    """A layer that cannot take its input; `field` names the argument to point at."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# (args, input TensorShape) -> (output TensorShape, parameter shapes, FLOPs). arch.nodes
# imports this package, so the shapes are Any here rather than an import cycle.
ShapeRule = Callable[[dict[str, Any], Any], tuple[Any, dict[str, tuple[int, ...]], int]]
Container = Literal["chain", "copies", "residual"]


@dataclass(frozen=True)
class Kind:
    """One layer kind; see the module docstring."""

    name: str
    model: type[BaseModel]
    shape: ShapeRule | None = None
    builder: str = ""
    """`"module:attr"`; `attr(node)` returns the torch module of a resolved node."""
    growth: KindRule | None = None
    container: Container | None = None
    """How a container holds layers: `chain` runs its children in order (sequential);
    `copies` too, the children being numbered copies that growth may append (repeat);
    `residual`: a body, a shortcut and `post`. None for a leaf."""
    real_args: frozenset[str] = frozenset()
    """Args resolved as real numbers (others that are numbers are counts)."""
    shares: str = ""
    """The arg naming a layer whose weight this one reads instead of owning (a tied head)."""
    shareable: bool = False
    """Other layers may read this one's weight (`shares`): an embedding."""
    token_ids: str = ""
    """The arg bounding the token ids this layer reads (an embedding's `vocab`)."""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        op = self.model.model_fields.get("op")
        if op is None or self.name not in getattr(op.annotation, "__args__", ()):
            raise ValueError(
                f"layer kind '{self.name}': its model {self.model.__name__} needs a field"
                f' `op: Literal["{self.name}", ...]`'
            )
        if self.growth is not None and self.growth.kind != self.name:
            raise ValueError(
                f"layer kind '{self.name}': its growth rule is for '{self.growth.kind}'"
            )
        if self.growth is not None:
            check_rule(self.growth)
        if self.container is None and self.shape is None:
            raise ValueError(f"layer kind '{self.name}' needs a shape rule")
        if ":" not in self.builder:
            raise ValueError(f"layer kind '{self.name}': builder must be 'module:attr'")

    def build(self, node: Any) -> Any:
        """The torch module of resolved `node` (imports the builder's module on first use)."""
        module, _, attr = self.builder.partition(":")
        make = getattr(importlib.import_module(module), attr)
        return make(node)
