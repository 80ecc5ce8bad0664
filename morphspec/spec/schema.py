"""The JSON Schema of spec files as users write them, for editors' YAML language servers.

The pydantic models describe the fully spelled `{op: kind, ...}` form that the loader
validates after normalising. Editors see the text before that step, so the schema adds the
short forms around the generated model schemas: a layer is a bare word (`relu`), a mapping
with one key, the kind (`conv: {out: 8, kernel: 3}`), or the spelled form; a template under
`blocks:` holds `args`, `description` and exactly one layer key (or `body: [...]`).

It is draft-07 (`definitions`, no `$defs` or `prefixItems`), since that is what the YAML
language servers implement. Block names are free, so a misspelled kind written as a mapping
key passes the schema as a block call; `morph validate` catches it with a suggestion.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from morphspec.spec import models as m

__all__ = ["DRAFT_07", "schema_text", "spec_schema"]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_REF = "#/definitions/{model}"
_LAYER = {"$ref": "#/definitions/Layer"}
_LAYER_LIST = {"type": "array", "items": _LAYER}
_PLACEHOLDER = {"x-morphspec-layer": True}


def _layer_tags() -> frozenset[str]:
    return frozenset({"BlockCall", *(m.model_for(k).__name__ for k in m.LAYER_KINDS)})


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, with the layer union replaced by a reference to `Layer`."""

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        if set(schema["choices"]) == _layer_tags():
            return dict(_PLACEHOLDER)  # pydantic checks every "$ref"; swapped in afterwards
        return super().tagged_union_schema(schema)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "title": "Out" next to every field only adds noise in editors


def spec_schema() -> dict[str, Any]:
    """The draft-07 JSON Schema of a spec file (what `morph schema` prints)."""
    kinds = _model_kinds()
    models: list[type[BaseModel]] = [*kinds, m.BlockCall, m.BlockDef, m.Spec]
    _, generated = models_json_schema(
        [(model, "validation") for model in models],
        ref_template=_REF,
        schema_generator=_Generator,
    )
    defs: dict[str, Any] = _swap_placeholder(generated["$defs"])
    all_kinds = list(m.LAYER_KINDS)
    word_kinds = [k for model, ks in kinds.items() if not _required_args(defs, model) for k in ks]
    args_refs: dict[str, Any] = {}
    for model, model_kinds in kinds.items():
        name = f"{model.__name__}Args"
        defs[name] = _args_of(defs[model.__name__], f"arguments of {', '.join(model_kinds)}")
        ref = {"$ref": _REF.format(model=name)}
        no_args = not _required_args(defs, model)
        for kind in model_kinds:
            args_refs[kind] = {"anyOf": [ref, {"type": "null"}]} if no_args else ref
    defs["BlockCall"] = _block_call(defs["BlockCall"], all_kinds)
    defs["BlockArgs"] = {
        "description": "arguments of a template from 'blocks:' (its args, and a name)",
        "anyOf": [_args_of(defs["BlockCall"], None), {"type": "null"}],
    }
    defs["Layer"] = _layer(word_kinds, all_kinds, args_refs, list(kinds))
    defs["BlockDef"] = _block_def(defs["BlockDef"], args_refs)
    spec = defs.pop("Spec")
    spec.pop("title", None)
    spec["required"] = ["morphspec", "name"]
    spec["if"] = {"required": ["extends"]}  # a student that extends a parent inherits these
    spec["else"] = {"required": ["input", "body"]}
    return {
        "$schema": DRAFT_07,
        "title": "morphspec spec",
        "description": "A network declared in YAML for morphspec, format version 1 (SPEC.md).",
        **spec,
        "definitions": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    """`spec_schema()` as the committed file holds it: indented, key order kept, newline."""
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def _swap_placeholder(value: Any) -> Any:
    if value == _PLACEHOLDER:
        return dict(_LAYER)
    if isinstance(value, dict):
        return {k: _swap_placeholder(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_placeholder(v) for v in value]
    return value


def _model_kinds() -> dict[type[BaseModel], list[str]]:
    """Each layer model with the kinds (`op` values) it stands for, in registry order."""
    out: dict[type[BaseModel], list[str]] = {}
    for kind in m.LAYER_KINDS:
        out.setdefault(m.model_for(kind), []).append(kind)
    return out


def _required_args(defs: dict[str, Any], model: type[BaseModel]) -> list[str]:
    return [f for f in defs[model.__name__].get("required", []) if f != "op"]


def _args_of(model_schema: dict[str, Any], description: str | None) -> dict[str, Any]:
    """A spelled-form model schema without `op`: the value of the single-key form."""
    out = copy.deepcopy(model_schema)
    out.pop("title", None)
    out["properties"].pop("op", None)
    required = [f for f in out.pop("required", []) if f != "op"]
    if required:
        out["required"] = required
    out.setdefault("additionalProperties", False)
    if description:
        out["description"] = description
    return out


_TEMPLATE_ARG = {
    "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}],
    "description": "a number, a bool, or an expression over vars and args",
}


def _block_call(generated: dict[str, Any], all_kinds: list[str]) -> dict[str, Any]:
    """A template use in spelled form: `op` is any name that is not a built-in kind."""
    out = copy.deepcopy(generated)
    out["properties"]["op"] = {
        "type": "string",
        "not": {"enum": all_kinds},
        "description": "the name of a template under 'blocks:'",
    }
    out["additionalProperties"] = _TEMPLATE_ARG
    return out


def _layer(
    word_kinds: list[str],
    all_kinds: list[str],
    args_refs: dict[str, Any],
    models: list[type[BaseModel]],
) -> dict[str, Any]:
    spelled = [model.__name__ for model in models] + ["BlockCall"]
    word = {
        "anyOf": [
            {"enum": word_kinds, "description": "a layer kind whose arguments all have defaults"},
            {"type": "string", "not": {"enum": all_kinds}, "description": "a template name"},
        ]
    }
    keyed = {
        "type": "object",
        "description": "a mapping with one key, the layer kind, holding its arguments",
        "properties": args_refs,
        "additionalProperties": {"$ref": _REF.format(model="BlockArgs")},
        "propertyNames": {"not": {"const": "op"}},
        "minProperties": 1,
        "maxProperties": 1,
    }
    spelled_form = {
        "type": "object",
        "description": "the fully spelled form {op: kind, ...}",
        "required": ["op"],
        "anyOf": [{"$ref": _REF.format(model=name)} for name in spelled],
    }
    return {
        "description": "a layer: a bare word ('relu'), a mapping with one key, the kind"
        " ('conv: {out: 8, kernel: 3}'), or the spelled form ('{op: conv, out: 8, kernel: 3}')",
        "anyOf": [word, keyed, spelled_form],
    }


def _block_def(generated: dict[str, Any], args_refs: dict[str, Any]) -> dict[str, Any]:
    """A template: `args`, `description` and exactly one layer key, or `body: [layers]`."""
    props = generated["properties"]
    one_layer = {"args": props["args"], "description": props["description"]}
    counts = {
        "if": {"required": ["args", "description"]},
        "then": {"minProperties": 3, "maxProperties": 3},
        "else": {
            "if": {"anyOf": [{"required": ["args"]}, {"required": ["description"]}]},
            "then": {"minProperties": 2, "maxProperties": 2},
            "else": {"minProperties": 1, "maxProperties": 1},
        },
    }
    return {
        "title": "BlockDef",
        "description": "a template: 'args' (the value 'required' marks an argument without"
        " default), an optional 'description', and exactly one layer: a kind as key"
        " ('residual: {...}'), another template's name, or 'body: [layers]'",
        "type": "object",
        "properties": {**one_layer, "body": _LAYER_LIST, **args_refs},
        "additionalProperties": {"$ref": _REF.format(model="BlockArgs")},
        **counts,
    }
