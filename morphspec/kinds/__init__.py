"""Layer kinds: one record per kind, and the ways to add one from outside the package.

`register_kind(Kind(...))` adds a kind; a distribution can also name a module or a `Kind`
under the entry-point group `morphspec.kinds`, which the `morph` command line loads at
start (`load_plugins`). See docs/design.md for a worked example
(examples/plugins/scale_kind.py). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from morphspec.growth.rule import APPEND, KindRule, Layout, ParamRole, Tie
from morphspec.kinds.plugins import ENTRY_POINT_GROUP, load_plugins
from morphspec.kinds.record import Kind, ShapeError, ShapeRule
from morphspec.kinds.registry import all_kinds, get, names, register_kind, unregister_kind

__all__ = [
    "APPEND",
    "ENTRY_POINT_GROUP",
    "Kind",
    "KindRule",
    "LayerArgs",
    "Layout",
    "ParamRole",
    "ShapeError",
    "ShapeRule",
    "TensorShape",
    "Tie",
    "all_kinds",
    "get",
    "load_plugins",
    "names",
    "register_kind",
    "unregister_kind",
]


def __getattr__(name: str) -> Any:
    # Imported on use: these modules import the registry themselves (no import cycle).
    # LayerArgs: the base of a kind's spec model; TensorShape: what a shape rule takes.
    if name == "LayerArgs":
        from morphspec.spec.models import LayerArgs

        return LayerArgs
    if name == "TensorShape":
        from morphspec.arch.nodes import TensorShape

        return TensorShape
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
