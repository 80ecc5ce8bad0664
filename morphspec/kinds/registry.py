"""The one registry of layer kinds: name -> `Kind` record (no torch, no pydantic here).

The built-in kinds are registered on first read (`morphspec.kinds.builtin`), never at
import, so this module and the ones that import it stay free of import cycles. Modules
that derive tables from the registry (the spec's layer union) subscribe and are told
whenever a kind is added or removed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from morphspec.kinds.record import Kind

__all__ = ["all_kinds", "get", "names", "register_kind", "subscribe", "unregister_kind"]

_KINDS: dict[str, Kind] = {}
_LISTENERS: list[Callable[[], None]] = []
_state = "empty"  # -> "loading" (built-ins being registered) -> "ready"


def _ensure() -> None:
    global _state
    if _state != "empty":
        return
    _state = "loading"
    try:
        importlib.import_module("morphspec.kinds.builtin")
    except BaseException:
        _state = "empty"
        raise
    _state = "ready"  # nothing was built from the registry while it loaded: no one to tell


def _notify() -> None:
    if _state == "ready":
        for listener in _LISTENERS:
            listener()


def subscribe(listener: Callable[[], None]) -> None:
    """Call `listener` after every kind added or removed (not for the built-ins, which are
    in before anything reads the registry)."""
    _LISTENERS.append(listener)


def register_kind(kind: Kind, *, replace: bool = False) -> Kind:
    """Add `kind` to the registry, so specs, shapes, builders and growth know it.

    A name already taken is refused unless `replace` is set (registering the very same
    record again is a no-op, so importing a plugin twice is harmless)."""
    _ensure()
    known = _KINDS.get(kind.name)
    if known is kind:
        return kind
    if known is not None and not replace:
        raise ValueError(f"layer kind '{kind.name}' is already registered; pass replace=True")
    tag = kind.model.__name__
    for other in _KINDS.values():
        if (
            other.name != kind.name
            and other.model.__name__ == tag
            and other.model is not kind.model
        ):
            raise ValueError(
                f"layer kind '{kind.name}': its model class name '{tag}' is already the model"
                f" of '{other.name}'; give the model class another name"
            )
    _KINDS[kind.name] = kind
    _notify()
    return kind


def unregister_kind(name: str) -> None:
    """Remove kind `name` (tests and plugin reloading; built-ins are never removed)."""
    _ensure()
    if _KINDS.pop(name, None) is not None:
        _notify()


def get(name: str) -> Kind | None:
    """The record of kind `name`, None when no kind has that name."""
    _ensure()
    return _KINDS.get(name)


def all_kinds() -> Iterator[Kind]:
    """Every record, in registration order (built-ins first)."""
    _ensure()
    return iter(list(_KINDS.values()))


def names() -> tuple[str, ...]:
    _ensure()
    return tuple(_KINDS)
