"""The committed JSON Schema is current, draft-07, accepts every valid spec and rejects typos."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from morphspec.arch import resolve
from morphspec.cli.app import app
from morphspec.spec import load_spec
from morphspec.spec.schema import DRAFT_07, schema_text, spec_schema

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "schemas" / "morphspec.schema.json"
EXAMPLES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))

# Forms the examples may not cover: every layer form, templates calling templates, a
# bare-word template, spelled layers, shortcut bodies, a list `post`, a block `body:`.
SAMPLES = {
    "forms": """\
        morphspec: 1
        name: forms
        vars: {w: 8}
        input: {shape: [4, 8, 8]}
        blocks:
          unit:
            args: {width: required, stride: 1}
            description: a conv unit
            residual:
              body:
                - conv: {name: conv, out: width, kernel: 3, stride: stride, padding: 1}
                - batchnorm:
              shortcut: {name: proj, when: always}
              post: [relu, {op: identity}]
          pair:
            args: {width: w}
            body: [unit: {width: width}, {op: unit, width: width}]
          wrapped:
            pair: {name: inner}
        body:
          - conv: {out: w, kernel: 3, padding: 1}
          - leaky_relu: {slope: 0.2}
          - pair: {width: 8}
          - wrapped
          - {op: unit, width: 8, stride: 2}
          - hamiltonian: {steps: 2, hidden: 4, h: 0.5, memory: store}
          - residual:
              body: [{conv: {out: 8, kernel: 3, padding: 1}}]
              shortcut: {body: [avgpool: {kernel: 1}, conv: {out: 8, kernel: 1}]}
          - sequential: {name: head, body: [maxpool: {kernel: 2}, flatten, dropout]}
          - repeat: {times: 2, body: [linear: {out: 8}, gelu]}
          - op: linear
            out: 4
            bias: false
        """,
    "transformer": """\
        morphspec: 1
        name: lm
        vars: {d: 32}
        input: {shape: [8], dtype: int64}
        body:
          - embedding: {vocab: 50, dim: d}
          - position_embedding: {max_len: 16}
          - repeat:
              name: layers
              times: 2
              body:
                - residual:
                    body: [rmsnorm, attention: {heads: 4, head_dim: 8, kv_heads: 2, rope: true}]
                - residual:
                    body: [layernorm: {eps: 1e-6}, mlp: {hidden: 4*d, act: silu, gated: true}]
          - linear: {out: 50, bias: false}
        """,
}

HEAD = "morphspec: 1\nname: x\ninput: {shape: [4]}\n"
TYPOS = {
    "top_level_key": HEAD + "bodyy: [relu]\n",
    "layer_argument": HEAD + "body: [linear: {out: 8, biass: true}]\n",
    "spelled_argument": HEAD + "body: [{op: linear, outt: 8}]\n",
    "input_key": "morphspec: 1\nname: x\ninput: {shap: [4]}\nbody: [relu]\n",
    "shortcut_key": HEAD + "body: [residual: {body: [relu], shortcut: {whn: always}}]\n",
    "block_key": HEAD + "blocks: {b: {arsg: {w: 1}, body: [relu]}}\nbody: [b]\n",
    "bare_kind_with_required_args": HEAD + "body: [linear]\n",
    "two_layer_keys": HEAD + "body: [{linear: {out: 4}, relu: {}}]\n",
    "activation_value": HEAD + "body: [mlp: {hidden: 8, act: swish}]\n",
}


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator: Any, doc: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_committed_schema_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), (
        "schemas/morphspec.schema.json is stale;"
        " run `morph schema -o schemas/morphspec.schema.json`"
    )


def test_schema_is_draft_07() -> None:
    schema = spec_schema()
    assert schema["$schema"] == DRAFT_07
    text = schema_text()
    assert "$defs" not in text and "prefixItems" not in text and "x-morphspec" not in text
    refs = _refs(schema)
    assert refs and all(r.startswith("#/definitions/") for r in refs)
    assert {r.removeprefix("#/definitions/") for r in refs} <= set(schema["definitions"])


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(validator: Any, path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _errors(validator, doc) == []


def test_examples_carry_the_schema_line() -> None:
    for path in EXAMPLES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path.name


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_validate_and_load(validator: Any, tmp_path: Path, name: str) -> None:
    text = textwrap.dedent(SAMPLES[name])
    assert _errors(validator, yaml.safe_load(text)) == []
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    resolve(load_spec(path))  # the loader agrees that the sample is valid


def test_student_with_extends_needs_no_body(validator: Any) -> None:
    doc = {"morphspec": 1, "name": "wide", "extends": "base.yaml", "vars": {"r": 0.25}}
    assert _errors(validator, doc) == []
    assert _errors(validator, {"morphspec": 1, "name": "x"})  # input and body required


@pytest.mark.parametrize("name", TYPOS)
def test_typos_fail(validator: Any, name: str) -> None:
    assert _errors(validator, yaml.safe_load(TYPOS[name]))


def test_cli_prints_and_writes_the_schema(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert result.stdout == schema_text()
    json.loads(result.stdout)
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text(encoding="utf-8") == schema_text()
    assert result.stdout == ""
