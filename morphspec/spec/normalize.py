"""Turn the short layer forms into the `{op: ...}` form the models validate, keeping marks.

`relu` -> `{op: relu}`; `conv: {out: 8}` -> `{op: conv, out: 8}`; a template under `blocks:`
-> `{args, description, layer}`. Marks move with the values, so errors still point at the
text the user wrote.
"""

from __future__ import annotations

from typing import Any

from morphspec.errors import SpecError, closest
from morphspec.spec.yamlpos import Loc, Located

__all__ = ["normalize"]

_LAYER_LISTS = ("body",)


def normalize(doc: Located) -> Located:
    """A new Located whose data is in the fully spelled form."""
    if not isinstance(doc.data, dict):
        raise SpecError("a spec is a mapping that starts with 'morphspec: 1'", doc.mark(()))
    out = Located({}, doc.file, files=list(doc.files))
    _move(doc, (), out, ())
    data: dict[str, Any] = {}
    for key, value in doc.data.items():
        if key == "body":
            data[key] = _layers(doc, ("body",), out, ("body",))
        elif key == "blocks" and isinstance(value, dict):
            data[key] = {}
            _move(doc, ("blocks",), out, ("blocks",))
            for name in value:
                data[key][name] = _block(doc, ("blocks", name), out, ("blocks", name))
        else:
            data[key] = _copy(doc, (key,), out, (key,))
    out.data = data
    return out


def _get(doc: Located, loc: Loc) -> Any:
    value = doc.data
    for part in loc:
        value = value[part]
    return value


def _move(doc: Located, src: Loc, out: Located, dst: Loc) -> None:
    if src in doc.values:
        out.values[dst] = doc.values[src]
    if src in doc.keys:
        out.keys[dst] = doc.keys[src]


def _copy(doc: Located, src: Loc, out: Located, dst: Loc) -> Any:
    """Copy a plain value and the marks of everything under it."""
    _move(doc, src, out, dst)
    value = _get(doc, src)
    if isinstance(value, dict):
        return {k: _copy(doc, (*src, k), out, (*dst, k)) for k in value}
    if isinstance(value, list):
        return [_copy(doc, (*src, i), out, (*dst, i)) for i in range(len(value))]
    return value


def _layers(doc: Located, src: Loc, out: Located, dst: Loc) -> Any:
    value = _get(doc, src)
    _move(doc, src, out, dst)
    if not isinstance(value, list):
        return _copy(doc, src, out, dst)  # the model reports the wrong type
    return [_layer(doc, (*src, i), out, (*dst, i)) for i in range(len(value))]


def _layer(doc: Located, src: Loc, out: Located, dst: Loc) -> Any:
    value = _get(doc, src)
    _move(doc, src, out, dst)
    if isinstance(value, str):
        out.values[(*dst, "op")] = doc.mark(src)
        return {"op": value}
    if not isinstance(value, dict) or "op" in value:
        return _fields(doc, src, out, dst) if isinstance(value, dict) else value
    if len(value) != 1:
        raise SpecError(
            "a layer is a bare word ('relu') or a mapping with exactly one key, the layer kind"
            f" ('conv: {{out: 8, kernel: 3}}'); found keys {', '.join(map(str, value))}",
            doc.mark(src),
        )
    ((kind, _),) = value.items()
    return _keyed(doc, src, kind, out, dst)


def _keyed(doc: Located, src: Loc, kind: str, out: Located, dst: Loc) -> dict[str, Any]:
    """The single-key form: `kind: {args}` found under `src`."""
    args = _get(doc, (*src, kind))
    out.values[(*dst, "op")] = doc.mark((*src, kind), key=True)
    out.keys[(*dst, "op")] = doc.mark((*src, kind), key=True)
    if args is None:
        return {"op": kind}
    if not isinstance(args, dict):
        raise SpecError(
            f"the arguments of '{kind}' must be a mapping such as '{kind}: {{name: x}}'",
            doc.mark((*src, kind)),
        )
    return {"op": kind, **_fields(doc, (*src, kind), out, dst)}


def _fields(doc: Located, src: Loc, out: Located, dst: Loc) -> dict[str, Any]:
    """Copy a layer's arguments, normalising nested layer lists (body, shortcut, post)."""
    value = _get(doc, src)
    result: dict[str, Any] = {}
    for key, item in value.items():
        s, d = (*src, key), (*dst, key)
        if key == "body":
            result[key] = _layers(doc, s, out, d)
        elif key == "post":
            result[key] = (
                _layers(doc, s, out, d) if isinstance(item, list) else _layer(doc, s, out, d)
            )
        elif key == "shortcut" and isinstance(item, dict):
            _move(doc, s, out, d)
            result[key] = {
                k: _layers(doc, (*s, k), out, (*d, k))
                if k == "body"
                else _copy(doc, (*s, k), out, (*d, k))
                for k in item
            }
        else:
            result[key] = _copy(doc, s, out, d)
    return result


def _block(doc: Located, src: Loc, out: Located, dst: Loc) -> Any:
    value = _get(doc, src)
    _move(doc, src, out, dst)
    if not isinstance(value, dict):
        raise SpecError("a block is a mapping of 'args' and one layer", doc.mark(src))
    result: dict[str, Any] = {}
    layer_keys = [k for k in value if k not in ("args", "description")]
    for key in ("args", "description"):
        if key in value:
            result[key] = _copy(doc, (*src, key), out, (*dst, key))
    if len(layer_keys) != 1:
        typo = next((k for k in layer_keys if closest(str(k), ("args", "description"))), None)
        hint = f"; '{typo}'{closest(str(typo), ('args', 'description'))}" if typo else ""
        raise SpecError(
            "a block holds 'args' and exactly one layer (such as 'residual: {...}' or"
            f" 'body: [...]'); found {', '.join(map(str, layer_keys)) or 'none'}{hint}",
            doc.mark((*src, typo), key=True) if typo is not None else doc.mark(src),
        )
    (kind,) = layer_keys
    out.values[(*dst, "layer")] = doc.mark((*src, kind), key=True)
    if kind == "body":
        layers = _layers(doc, (*src, "body"), out, (*dst, "layer", "body"))
        out.values[(*dst, "layer", "op")] = doc.mark((*src, kind), key=True)
        result["layer"] = {"op": "sequential", "body": layers}
    else:
        result["layer"] = _keyed(doc, src, kind, out, (*dst, "layer"))
    return result
