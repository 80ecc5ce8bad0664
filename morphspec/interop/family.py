"""What a Hugging Face model family is to morphspec: a key converter and a config mapping.

Each family (one module each: `gpt2`, `llama`) declares its `KeyMap` and the typed
`config.json` fields it reads (`hfconfig.Field`s, which its `read` checks first), reads them
into the few numbers and switches a spec needs (refusing, by field, what the spec format
cannot express), writes the spec, and maps a resolved spec back to `config.json` fields.
Export checks that last mapping by round trip: the spec written from the config it produces
must resolve to the same layers, keys and shapes, so a spec of another shape is refused
instead of exported under wrong names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from morphspec.arch import Arch
from morphspec.arch.nodes import Node
from morphspec.errors import Mark, MorphError
from morphspec.interop.keymap import KeyMap

__all__ = ["Family", "first", "refuse"]

Config = Mapping[str, Any]


@dataclass(frozen=True)
class Family:
    naming: str  # the spec's `naming:` value
    model_types: tuple[str, ...]  # config.json `model_type`s read with this family
    keymap: KeyMap
    read: Callable[[Config, Mark], dict[str, Any]]  # config -> spec parameters
    spec_yaml: Callable[[Mapping[str, Any]], str]  # spec parameters -> the spec's YAML body
    config: Callable[[Arch], dict[str, Any]]  # a resolved spec -> config.json fields


def refuse(where: Mark, field: str, value: Any, why: str) -> MorphError:
    """A config field the spec format cannot express, named with its value and the reason."""
    return MorphError(f"unsupported option {field} = {value!r}: {why}", where)


def first(arch: Arch, kind: str) -> Node:
    """The first layer of a kind (families have one shape, so the first stands for all)."""
    for node in arch.nodes():
        if node.kind == kind:
            return node
    raise MorphError(f"spec '{arch.name}' has no {kind} layer", arch.spec.mark(("body",)))


def fmt(value: float) -> str:
    """A float as YAML the spec loader reads back to the same float (YAML 1.1 wants a dot
    before an exponent: `1e-05` would be a string, `1.0e-05` is a float)."""
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text
