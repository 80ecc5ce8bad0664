"""`load_spec`: YAML file -> validated `Spec`, with `extends`, `--set` and located errors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from morphspec.errors import Mark, Problem, SpecError, closest
from morphspec.spec.expr import ExprError, check_number
from morphspec.spec.models import Spec, model_for
from morphspec.spec.normalize import normalize
from morphspec.spec.yamlpos import Loc, Located, load_yaml

__all__ = ["load_spec", "parse_set"]

MAX_EXTENDS = 32  # files in one `extends` chain: deeper is a mistake, not a design
SetArg = Mapping[str, Any] | list[str] | tuple[str, ...] | None


def parse_set(items: SetArg) -> dict[str, int | float]:
    """`['r=0.1875', 'classes=100']` (the CLI form) or a mapping -> {name: number}."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            name, sep, text = str(item).partition("=")
            if not sep or not name.strip():
                raise SpecError(f"--set takes NAME=VALUE, got '{item}'")
            pairs.append((name.strip(), text.strip()))
    out: dict[str, int | float] = {}
    for name, raw in pairs:
        value = _number(raw) if isinstance(raw, str) else raw
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = raw if len(str(raw)) <= 40 else f"{str(raw)[:37]}..."
            raise SpecError(
                f"--set {name}={shown}: the value must be a number such as 64, 0.25 or 1e-3"
            )
        try:
            out[name] = check_number(value)
        except ExprError as exc:
            raise SpecError(f"--set {name}={raw}: {exc}") from None
    return out


def _number(text: str) -> int | float | None:
    """An int or finite float written as YAML or Python would (`64`, `0.25`, `1e-1`, `1_000`),
    else None. Parsed with the safe loader only: no tags, nothing constructed."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):  # YAML 1.1 reads 1e-1 (no dot) as a string
        for parse in (int, float):
            try:
                number = parse(value)
            except ValueError:
                continue
            return number if math.isfinite(number) else None
    return None


def load_spec(path: str | Path, set: SetArg = None) -> Spec:
    """Read, merge `extends`, apply `--set` overrides and validate one spec file."""
    path = Path(path)
    doc = _load_merged(path, [])
    overrides = parse_set(set)
    vars_ = doc.data.get("vars")
    if overrides:
        if not isinstance(vars_, dict):
            vars_ = doc.data["vars"] = {}
        for name, value in overrides.items():
            if name not in vars_:
                raise SpecError(
                    f"--set {name}: the spec has no var '{name}'{closest(name, vars_)}"
                    f" (vars: {', '.join(vars_) or 'none'})",
                    doc.mark(("vars",)),
                )
            vars_[name] = value
    try:
        spec = Spec.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError([_problem(doc, err) for err in _useful(doc, exc.errors())]) from None
    spec._source = doc
    spec._path = str(path)
    spec._files = list(doc.files)
    spec._overridden = frozenset(overrides)
    return spec


def _load_merged(path: Path, chain: list[Path]) -> Located:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise SpecError(f"'extends' forms a cycle: {cycle}", Mark(str(path)))
    doc = normalize(load_yaml(path, str(path)))
    parent_name = doc.data.get("extends")
    if parent_name is None:
        return doc
    if not isinstance(parent_name, str):
        raise SpecError("'extends' takes a file path", doc.mark(("extends",)))
    parent_path = path.parent / parent_name
    if not parent_path.is_file():
        raise SpecError(
            f"'extends: {parent_name}' names no file (looked for {parent_path};"
            " the path is relative to this spec)",
            doc.mark(("extends",)),
        )
    if len(chain) >= MAX_EXTENDS:
        raise SpecError(
            f"'extends' chains more than {MAX_EXTENDS} files; merge some of them",
            doc.mark(("extends",)),
        )
    if parent_path.resolve() in (*chain, resolved):
        cycle = " -> ".join(str(p) for p in [*chain, resolved, parent_path.resolve()])
        raise SpecError(f"'extends' forms a cycle: {cycle}", doc.mark(("extends",)))
    parent = _load_merged(parent_path, [*chain, resolved])
    return _merge(parent, doc)


def _merge(parent: Located, child: Located) -> Located:
    """Child keys override the parent's; `vars` and `blocks` merge name by name."""
    data = dict(parent.data)
    files = [*child.files, *parent.files]
    out = Located(data, child.file, dict(parent.values), dict(parent.keys), files)

    def take(loc: Loc) -> None:
        for table, own in ((out.values, child.values), (out.keys, child.keys)):
            for k in [k for k in table if k[: len(loc)] == loc]:
                del table[k]
            table.update({k: m for k, m in own.items() if k[: len(loc)] == loc})

    for key, value in child.data.items():
        if (
            key in ("vars", "blocks")
            and isinstance(value, dict)
            and isinstance(data.get(key), dict)
        ):
            data[key] = {**data[key], **value}
            for name in value:
                take((key, name))
        else:
            data[key] = value
            take((key,))
    data.pop("extends", None)
    return out


# Type mismatches: when a value may take several forms (a union), pydantic reports one per
# form it is not. They are merged into one problem, or dropped where another form's error
# deeper inside the same value says what is wrong.
_MISMATCH = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "an expression string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _data_loc(data: Any, parts: list[Any]) -> tuple[Any, ...]:
    """The part of a pydantic location that names keys and indices present in `data`."""
    loc: list[Any] = []
    for part in parts:
        present = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        )
        if present:
            data = data[part]
            loc.append(part)
    return tuple(loc)


def _useful(doc: Located, errors: list[Any]) -> list[Any]:
    real = [_data_loc(doc.data, list(e["loc"])) for e in errors if e["type"] not in _MISMATCH]
    out: list[Any] = []
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in errors:
        if err["type"] not in _MISMATCH:
            out.append(err)
            continue
        here = _data_loc(doc.data, list(err["loc"]))
        if any(r[: len(here)] == here for r in real):
            continue
        wanted = _MISMATCH[err["type"]]
        if here in merged:
            if wanted not in merged[here]["wanted"]:
                merged[here]["wanted"].append(wanted)
            continue
        merged[here] = {**err, "loc": here, "wanted": [wanted]}
        out.append(merged[here])
    for err in merged.values():
        if len(err["wanted"]) > 1:
            *first, last = err["wanted"]
            err["msg"] = f"expected {', '.join(first)} or {last}, got {err['input']!r}"
    return out


def _problem(doc: Located, err: Any) -> Problem:
    """Map a pydantic error to the YAML place, dropping union tags from its location."""
    loc: list[str | int] = []
    data: Any = doc.data
    parts = list(err["loc"])
    for i, part in enumerate(parts):
        if isinstance(data, dict):
            if part in data:
                loc.append(part)
                data = data[part]
            elif i == len(parts) - 1 and err["type"] == "missing":
                loc.append(part)  # the missing key (a union tag is dropped)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            loc.append(part)
            data = data[part]
    where = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _at(doc.data, loc[:-1])
        fields = _fields_of(parent, loc)
        key = str(loc[-1])
        hint = closest(key, fields)
        allowed = f"; allowed: {', '.join(fields)}" if fields and not hint else ""
        return Problem(f"unknown key '{key}'{hint}{allowed}", doc.mark(tuple(loc), key=True))
    if kind == "missing":
        return Problem(f"'{loc[-1]}' is required here ({where})", doc.mark(tuple(loc[:-1])))
    if kind == "literal_error" and loc and loc[-1] == "op":
        return Problem(f"unknown layer kind ({err['msg']})", doc.mark(tuple(loc)))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return Problem(f"{where}: {msg}", doc.mark(tuple(loc)))


def _at(data: Any, loc: list[str | int]) -> Any:
    for part in loc:
        data = data[part]
    return data


def _fields_of(parent: Any, loc: list[str | int]) -> list[str]:
    from morphspec.spec import models

    if isinstance(parent, dict) and "op" in parent:
        cls = model_for(str(parent["op"]))
    elif not loc[:-1]:
        cls = models.Spec
    elif loc[-2:-1] == ["input"]:
        cls = models.InputSpec
    elif loc[-2:-1] == ["shortcut"]:
        cls = models.Shortcut
    elif len(loc) == 3 and loc[0] == "blocks":
        cls = models.BlockDef
    else:
        return []
    return [f for f in cls.model_fields if f != "op"]
