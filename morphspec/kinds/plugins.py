"""Layer kinds from installed distributions: the entry-point group `morphspec.kinds`.

An entry point names a module (`scale = my_pkg.scale_kind`: importing it registers its
kinds) or a `Kind` record (`scale = my_pkg.scale_kind:SCALE`: registered here). The
command line loads them at start, before reading any spec, without importing torch, so
`morph validate` in a project's CI knows the project's own kinds.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from morphspec.errors import MorphError
from morphspec.kinds.record import Kind
from morphspec.kinds.registry import register_kind

__all__ = ["ENTRY_POINT_GROUP", "load_plugins"]

ENTRY_POINT_GROUP = "morphspec.kinds"
_LOADED: set[tuple[str, str]] = set()


def load_plugins() -> list[str]:
    """Load every entry point of the group once; the names of the kinds each registered.

    A plugin that fails to import, or names something that is not a module or a `Kind`,
    is a MorphError naming the entry point and its distribution."""
    loaded: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in _LOADED:
            continue
        loaded.append(_load(ep))
        _LOADED.add((ep.name, ep.value))
    return loaded


def _load(ep: EntryPoint) -> str:
    dist = f" (distribution {ep.dist.name})" if ep.dist is not None else ""
    where = f"layer-kind plugin '{ep.name} = {ep.value}'{dist}"
    try:
        obj = ep.load()
    except Exception as exc:  # a plugin's own failure, reported as bad input
        raise MorphError(
            f"{where} failed to load: {type(exc).__name__}: {exc}; fix or uninstall it"
        ) from None
    if isinstance(obj, Kind):
        try:
            register_kind(obj)
        except ValueError as exc:
            raise MorphError(f"{where}: {exc}") from None
        return obj.name
    if ep.attr is None:
        return ep.name  # a module: importing it registered its kinds
    raise MorphError(
        f"{where} names a {type(obj).__name__}; it must name a module or a morphspec.kinds.Kind"
    )
