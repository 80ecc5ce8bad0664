"""A Hugging Face `config.json`, read through a typed model before any family sees it.

Each family declares the fields it reads as `Field`s (a name, a check, a default), in its
own module; `parse` checks them all and returns the typed values, so a family's `read`
never meets a string where a size belongs. The checks are shared: `size` (a whole number
>= 1, never a bool, a float or a string), `positive` (a finite number > 0: an epsilon of 0
or below makes NaN), `flag`, `text`, `mapping`, `optional(check)`. Every refusal is one
line naming the field, its value and what it must be. `read_config_json` refuses a FIFO or
device before opening it, a file over 16 MiB, JSON that is not an object, or that nests
deeper than a config does. Torch-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphspec.checkpoint.regular import read_regular
from morphspec.errors import Mark, MorphError

__all__ = [
    "COMMON",
    "REQUIRED",
    "Field",
    "checked",
    "flag",
    "mapping",
    "optional",
    "parse",
    "positive",
    "read_config_json",
    "size",
    "text",
    "texts",
]

MAX_CONFIG_BYTES = 16 << 20
MAX_DEPTH = 32  # real configs nest 3 or 4 levels (rope_parameters, quantization_config)
REQUIRED: Any = object()


class Bad(ValueError):
    """A value a check refuses: what the field must be."""


def size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Bad("must be a whole number >= 1")
    return value


def positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad("must be a number")
    if not math.isfinite(value) or value <= 0:
        raise Bad("must be a finite number > 0 (0 or below makes NaN)")
    return float(value)


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad("must be true or false")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad("must be a string")
    return value


def texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Bad("must be a list of strings")
    return value


def mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad("must be an object ({...})")
    return value


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`check`, or None for a null value."""

    def either(value: Any) -> Any:
        return None if value is None else check(value)

    return either


@dataclass(frozen=True)
class Field:
    """One config.json field a family reads: its check, and its default when absent."""

    name: str
    check: Callable[[Any], Any]
    default: Any = REQUIRED

    def read(self, config: Mapping[str, Any], where: Mark) -> Any:
        if self.name not in config:
            if self.default is REQUIRED:
                raise MorphError(f"config.json lacks {self.name}, which the spec needs", where)
            return self.default
        return checked(self.name, config[self.name], self.check, where)


def checked(name: str, value: Any, check: Callable[[Any], Any], where: Mark) -> Any:
    """`check(value)`, or a one-line refusal naming the field (for nested fields too)."""
    try:
        return check(value)
    except Bad as e:
        shown = json.dumps(value, allow_nan=True)[:60] if _plain(value) else type(value).__name__
        raise MorphError(f"config.json field {name} {e}, got {shown}", where) from None


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


COMMON = (Field("model_type", text), Field("architectures", optional(texts), None))


def parse(config: Mapping[str, Any], fields: Sequence[Field], where: Mark) -> dict[str, Any]:
    """The config with `COMMON` and `fields` checked and defaults filled in."""
    return {**config, **{f.name: f.read(config, where) for f in (*COMMON, *fields)}}


def read_config_json(path: Path) -> dict[str, Any]:
    """config.json as a dict: a regular file of at most 16 MiB holding a JSON object that
    nests at most 32 levels."""
    where = Mark(str(path))
    raw = read_regular(path, MAX_CONFIG_BYTES, "config.json")
    try:
        config = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise MorphError(f"config.json nests deeper than {MAX_DEPTH} levels", where) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise MorphError(f"config.json is not readable JSON ({e})", where) from None
    if not isinstance(config, dict):
        raise MorphError(
            f"config.json must hold a JSON object ({{...}}), not a {type(config).__name__}", where
        )
    if _depth(config) > MAX_DEPTH:
        raise MorphError(f"config.json nests deeper than {MAX_DEPTH} levels", where)
    return config


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                todo += [(c, d + 1) for c in (v.values() if isinstance(v, dict) else v)]
    return deepest
