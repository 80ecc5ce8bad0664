"""Loading specs: short forms, located errors with suggestions, `extends` and `--set`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yaml_marks import where

from morphspec import load_spec, resolve
from morphspec.errors import MorphError, SpecError
from morphspec.spec import models as m
from morphspec.spec.load import parse_set

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"
HEAD = "morphspec: 1\nname: t\n"


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, set: dict[str, float] | list[str] | None = None) -> MorphError:
    with pytest.raises(MorphError) as info:
        resolve(load_spec(path, set))
    return info.value


# -- short forms ------------------------------------------------------------------------------


def test_short_forms_normalise_to_the_spelled_form(tmp_path: Path) -> None:
    short = write(
        tmp_path,
        HEAD + "input: {shape: [3, 8, 8]}\nbody:\n"
        "  - conv: {name: c, out: 4, kernel: 3}\n"
        "  - relu\n"
        "  - global_avgpool:\n"
        "  - dropout: {p: 0.25}\n"
        "  - linear: {out: 2}\n",
        "short.yaml",
    )
    spelled = write(
        tmp_path,
        HEAD + "input: {shape: [3, 8, 8]}\nbody:\n"
        "  - {op: conv, name: c, out: 4, kernel: 3, stride: 1}\n"
        "  - {op: relu}\n"
        "  - {op: global_avgpool}\n"
        "  - {op: dropout, p: 0.25}\n"
        "  - {op: linear, out: 2, bias: true}\n",
        "spelled.yaml",
    )
    a, b = load_spec(short), load_spec(spelled)
    assert a.body == b.body
    assert [type(x) for x in a.body] == [m.Conv, m.Act, m.Reshape, m.Dropout, m.Linear]
    conv = a.body[0]
    assert isinstance(conv, m.Conv)
    assert (conv.stride, conv.padding, conv.dilation, conv.bias) == (1, 0, 1, True)
    assert resolve(a).state_shapes() == resolve(b).state_shapes()


def test_block_templates_take_one_layer_or_a_body(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD + "input: {shape: [4]}\nblocks:\n"
        "  res:\n    args: {w: required}\n    residual:\n      body: [{linear: {out: w}}]\n"
        "  seq:\n    description: two layers\n    body:\n      - linear: {out: 4}\n      - relu\n"
        "body: [{res: {w: 4}}, seq]\n",
    )
    spec = load_spec(path)
    assert isinstance(spec.blocks["res"].layer, m.Residual)
    assert spec.blocks["res"].args == {"w": "required"}
    assert isinstance(spec.blocks["seq"].layer, m.Sequential)
    assert spec.blocks["seq"].description == "two layers"
    assert isinstance(spec.body[0], m.BlockCall) and spec.body[0].model_extra == {"w": 4}
    assert set(resolve(spec).state_shapes()) == {
        "0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias",
    }  # fmt: skip


def test_every_layer_kind_of_the_spec_validates(tmp_path: Path) -> None:
    kinds = {
        "hamiltonian: {steps: 2, hidden: 4}", "midpoint: {steps: 2, hidden: 4, h: 0.5}",
        "leapfrog: {steps: 1, hidden: 4, memory: store}", "avgpool: {kernel: 2}",
        "maxpool: {kernel: 2, stride: 1, padding: 1}", "leaky_relu: {slope: 0.2}", "tanh",
        "sigmoid", "silu", "gelu", "identity", "batchnorm: {eps: 1e-3, momentum: 0.01}",
        "sequential: {body: [relu]}", "repeat: {times: 2, body: [relu]}",
        "residual: {body: [relu], post: [relu, tanh]}",
    }  # fmt: skip
    body = "".join(f"  - {k}\n" for k in sorted(kinds))
    arch = resolve(load_spec(write(tmp_path, HEAD + "input: {shape: [4, 8, 8]}\nbody:\n" + body)))
    assert {n.kind for n in arch.nodes()} >= {k.split(":")[0] for k in kinds}


def test_a_layer_with_two_keys_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "input: {shape: [4]}\nbody:\n  - linear: {out: 3}\n    relu:\n")
    err = error(path)
    assert str(err).startswith(where(path, "linear") + ": a layer is a bare word")
    assert "found keys linear, relu" in str(err)


# -- located errors with suggestions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        ("input: {shape: [4]}\nbody:\n  - linear: {out: 3, bais: false}\n",
         "bais", "unknown key 'bais' (did you mean 'bias'?)"),
        ("input: {shape: [4]}\nbdy: []\nbody: []\n", "bdy",
         "unknown key 'bdy' (did you mean 'body'?)"),
        ("input: {shape: [4], dtyp: int64}\nbody: []\n", "dtyp",
         "unknown key 'dtyp' (did you mean 'dtype'?)"),
        ("input: {shape: [4]}\nbody:\n  - residual: {body: [relu], shortcut: {nme: s}}\n",
         "nme", "unknown key 'nme' (did you mean 'name'?)"),
        ("input: {shape: [4]}\nbody:\n  - repeat: {times: 2, bdy: [relu]}\n", "bdy",
         "unknown key 'bdy' (did you mean 'body'?)"),
        ("input: {shape: [4]}\nbody:\n  - residual:\n      body: [relu]\n"
         "      post: {linear: {out: 4, bais: 1}}\n", "bais", "unknown key 'bais' (did you mean"),
        ("input: {shape: [4]}\nblocks:\n  b:\n    residual:\n      body:\n"
         "        - attention: {heads: 2, head_dim: 2, kv_head: 1}\nbody: [b]\n",
         "kv_head", "unknown key 'kv_head' (did you mean 'kv_heads'?)"),
        ("input: {shape: [4]}\nblocks:\n  b:\n    descripton: x\n    body: [relu]\nbody: [b]\n",
         "descripton", "'descripton' (did you mean 'description'?)"),
    ],
)  # fmt: skip
def test_unknown_key_names_the_closest_with_its_place(
    tmp_path: Path, text: str, needle: str, message: str
) -> None:
    path = write(tmp_path, HEAD + text)
    err = error(path)
    assert len(err.problems) == 1, str(err)
    assert str(err).startswith(where(path, needle) + ": ")
    assert message in str(err)


def test_unknown_key_without_a_close_name_lists_the_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "input: {shape: [4]}\nbody:\n  - linear: {out: 3, zzz: 1}\n")
    err = str(error(path))
    assert err.startswith(where(path, "zzz") + ": unknown key 'zzz'; allowed: name, out, bias")


@pytest.mark.parametrize(
    ("layer", "needle", "message"),
    [
        (
            "lnear: {out: 3}",
            "lnear",
            "unknown layer kind or block 'lnear' (did you mean 'linear'?)",
        ),
        ("rleu", "rleu", "unknown layer kind or block 'rleu' (did you mean 'relu'?)"),
        ("{op: batchnrm}", "batchnrm", "(did you mean 'batchnorm'?)"),
    ],
)
def test_unknown_kind_names_the_closest(
    tmp_path: Path, layer: str, needle: str, message: str
) -> None:
    path = write(tmp_path, HEAD + f"input: {{shape: [4]}}\nbody:\n  - relu\n  - {layer}\n")
    err = str(error(path))
    assert err.startswith(where(path, needle) + ": ") and message in err


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        ("input: {shape: [4]\nbody: []\n", "body", "YAML syntax error"),
        ("input: {shape: [4]}\nbody: []\nbody: []\n", "body", "duplicate key 'body'"),
        ("input: {shape: [4]}\nbody:\n  - linear: {bias: false}\n", "linear",
         "'out' is required here (body.0.out)"),
        ("input: {shape: [4]}\nbody:\n  - linear: {out: true}\n", "true",
         "expected an integer, a number or an expression string, got True"),
        ("input: {shape: [4]}\nbody:\n  - linear: {out: [3]}\n", "[3]", "got [3]"),
        ("input: {shape: [4]}\nbody:\n  - repeat: {times: 2, body: [relu], first: {x: 1}}\n",
         "repeat", "'args' and 'first' apply to a 'block' repeat only"),
        ("input: {shape: [4]}\nblocks: {b: {body: [relu]}}\nbody:\n"
         "  - repeat: {times: 2, block: b, body: [relu]}\n", "repeat", "exactly one of"),
        ("input: {shape: [4]}\nbody:\n  - conv: 3\n", "3", "the arguments of 'conv' must be"),
        ("input: {shape: [4]}\nbody:\n  - residual: {body: [relu], shortcut: {when: sometimes}}\n",
         "sometimes", "'mismatch' or 'always'"),
    ],
)  # fmt: skip
def test_invalid_documents_point_into_the_file(
    tmp_path: Path, text: str, needle: str, message: str
) -> None:
    path = write(tmp_path, HEAD + text)
    err = error(path)
    assert len(err.problems) == 1, str(err)
    assert str(err).startswith(where(path, needle, nth=2 if "duplicate" in message else 1))
    assert message in str(err)


def test_format_version_and_required_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "morphspec: 2\nname: t\ninput: {shape: [4]}\nbody: []\n")
    assert str(error(path)).startswith(where(path, "2") + ": morphspec: Input should be 1")
    path = write(tmp_path, "morphspec: 1\ninput: {shape: [4]}\nbody: []\n")
    assert "'name' is required here" in str(error(path))
    assert "empty" in str(error(write(tmp_path, "")))
    assert "a spec is a mapping" in str(error(write(tmp_path, "- relu\n")))
    assert "file not found" in str(error(tmp_path / "nowhere.yaml"))


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD + "input: {shape: [4]}\nbody:\n  - linear: {out: 3, bais: 1}\n"
        "  - conv: {out: 3, kernal: 3}\n",
    )
    err = error(path)
    messages = [str(p) for p in err.problems]
    assert any(p.startswith(where(path, "bais")) for p in messages)
    assert any(p.startswith(where(path, "kernal")) and "'kernel'" in p for p in messages)


# -- extends -------------------------------------------------------------------------------------


def test_extends_overrides_vars_and_name_and_keeps_the_rest(tmp_path: Path) -> None:
    write(
        tmp_path,
        "morphspec: 1\nname: base\ndescription: the teacher\nvars: {w: 4, k: 2}\n"
        "input: {shape: [4]}\nbody:\n  - linear: {name: fc, out: w*k}\n",
        "base/base.yaml",
    )
    child = write(
        tmp_path, "morphspec: 1\nname: child\nextends: ../base/base.yaml\nvars: {w: 8}\n",
        "students/child.yaml",
    )  # fmt: skip
    spec = load_spec(child)
    assert spec.name == "child"
    assert spec.description == "the teacher"
    assert spec.vars == {"w": 8, "k": 2}
    assert resolve(spec).state_shapes()["fc.weight"] == (16, 4)
    resolved = json.loads(spec.resolved_json())
    assert "extends" not in resolved and resolved["vars"] == {"w": 8, "k": 2}


def test_extends_chain_and_errors_point_at_the_parent(tmp_path: Path) -> None:
    base = write(
        tmp_path,
        "morphspec: 1\nname: a\nvars: {w: 4}\ninput: {shape: [4]}\nbody:\n  - linear: {out: w/3}\n",
        "a.yaml",
    )
    write(tmp_path, "morphspec: 1\nname: b\nextends: a.yaml\nvars: {w: 6}\n", "b.yaml")
    c = write(tmp_path, "morphspec: 1\nname: c\nextends: b.yaml\n", "c.yaml")
    assert resolve(load_spec(c)).state_shapes()["0.weight"] == (2, 4)
    err = str(error(c, set={"w": 7}))
    assert err.startswith(where(base, "w/3") + ": 'out' must be a positive integer, but 'w/3' =")


def test_extends_cycles_are_detected(tmp_path: Path) -> None:
    a = write(tmp_path, "morphspec: 1\nname: a\nextends: b.yaml\n", "a.yaml")
    b = write(tmp_path, "morphspec: 1\nname: b\nextends: a.yaml\ninput: {shape: [4]}\n", "b.yaml")
    err = str(error(a))
    assert err.startswith(where(b, "a.yaml") + ": 'extends' forms a cycle: ")
    assert err.endswith(f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}")
    itself = write(tmp_path, "morphspec: 1\nname: s\nextends: s.yaml\n", "s.yaml")
    assert str(error(itself)).startswith(where(itself, "s.yaml") + ": 'extends' forms a cycle")


def test_extends_of_a_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "morphspec: 1\nname: a\nextends: nope.yaml\n")
    err = str(error(path))
    assert err.startswith(where(path, "nope.yaml") + ": 'extends: nope.yaml' names no file")


def test_extends_merges_blocks_by_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEAD + "input: {shape: [4]}\nblocks:\n  a: {body: [relu]}\n  b: {body: [tanh]}\n"
        "body: [a, b]\n",
        "base.yaml",
    )
    child = write(
        tmp_path, "morphspec: 1\nname: c\nextends: base.yaml\nblocks:\n  b: {body: [sigmoid]}\n",
        "child.yaml",
    )  # fmt: skip
    arch = resolve(load_spec(child))
    assert [n.kind for n in arch.nodes() if not n.is_container] == ["relu", "sigmoid"]


def test_spec_md_student_example(tmp_path: Path) -> None:
    student = load_spec(SPECS / "spec_example_wide.yaml")
    assert (student.name, student.vars) == ("resnet-cifar10-wide", {"r": 0.1875, "classes": 10})
    assert resolve(student).state_shapes()["fc.weight"] == (10, 24)


def test_spec_example_is_the_spec_md_text_verbatim() -> None:
    spec_md = ROOT / "docs" / "spec.md"  # the repository's copy of SPEC.md
    text = spec_md.read_text(encoding="utf-8")
    first = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert (SPECS / "spec_example.yaml").read_text(encoding="utf-8") == first
    student = text.split("```yaml\n", 2)[2].split("```", 1)[0]
    assert (SPECS / "spec_example_wide.yaml").read_text(encoding="utf-8").endswith(student)


# -- --set ---------------------------------------------------------------------------------------


def test_set_overrides_vars(tmp_path: Path) -> None:
    path = SPECS / "spec_example.yaml"
    assert load_spec(path, set=["r=0.1875"]).vars == {"r": 0.1875, "classes": 10}
    assert load_spec(path, set=["classes=100", "r=0.25"]).vars == {"r": 0.25, "classes": 100}
    assert load_spec(path, set={"classes": 3}).vars["classes"] == 3
    assert isinstance(load_spec(path, set=["classes=7"]).vars["classes"], int)
    assert resolve(load_spec(path, set=["r=0.25"])).state_shapes()["conv1.weight"] == (16, 3, 7, 7)


def test_set_applies_to_vars_of_an_extended_spec() -> None:
    spec = load_spec(SPECS / "spec_example_wide.yaml", set=["r=0.25"])
    assert spec.vars["r"] == 0.25 and spec.name == "resnet-cifar10-wide"


def test_set_of_an_unknown_var_suggests_the_closest() -> None:
    path = SPECS / "resnet_cifar10.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path, set=["clases=3"])
    err = str(info.value)
    assert err.startswith(where(path, "{r: 0.125"))
    assert (
        "--set clases: the spec has no var 'clases' (did you mean 'classes'?) (vars: r, classes)"
        in err
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [("r", "--set takes NAME=VALUE"), ("=1", "--set takes NAME=VALUE"),
     ("r=abc", "the value must be a number"), ("r=true", "the value must be a number"),
     ("r=", "the value must be a number")],
)  # fmt: skip
def test_set_values_must_be_numbers(item: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_set([item])


@pytest.mark.parametrize("levels", [40, 400])
def test_absurdly_deep_yaml_is_a_clear_error_not_a_crash(tmp_path: Path, levels: int) -> None:
    body = "relu"
    for _ in range(levels):
        body = "{sequential: {body: [" + body + "]}}"
    path = tmp_path / "deep.yaml"
    path.write_text(f"morphspec: 1\nname: x\ninput: {{shape: [3]}}\nbody:\n  - {body}\n")
    with pytest.raises(SpecError, match="nests"):
        load_spec(path)
