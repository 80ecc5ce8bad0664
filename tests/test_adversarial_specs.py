"""Hostile specs and limits: bounded expansion, located messages, never an internal error.

Every refusal: exit 1 (2 for usage), a message naming the file (FILE:LINE:COL where there
is one), no traceback, and nothing written or left behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from adversarial import MLP, invoke, refused, write

ALIAS_BOMB = """\
morphspec: 1
name: bomb
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


NESTED_REPEAT = """\
morphspec: 1
name: r
input: {shape: [4]}
body:
  - repeat: {times: 100000, body: [repeat: {times: 100000, body: [relu]}]}
"""


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    spec = write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    start = time.perf_counter()
    refused(invoke("validate", str(spec)), f"{spec}:", "MORPH_MAX_YAML_VALUES")
    assert time.perf_counter() - start < 10


def test_repeat_inside_repeat_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path, "r.yaml", NESTED_REPEAT)
    refused(invoke("validate", str(spec)), f"{spec}:5:", "MORPH_MAX_LAYERS")


def test_nested_repeats_are_refused_after_one_copy(tmp_path: Path) -> None:
    text = NESTED_REPEAT.replace("100000", "50")
    spec = write(tmp_path, "r.yaml", text)
    refused(invoke("validate", str(spec), MORPH_MAX_LAYERS="1000"), f"{spec}:5:21: 'times: 50'")
    assert invoke("validate", str(spec), MORPH_MAX_LAYERS="3000").exit_code == 0


def test_layer_limit_can_be_raised_and_lowered(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    refused(invoke("validate", str(spec), MORPH_MAX_LAYERS="2"), "limit of 2")
    assert invoke("validate", str(spec), MORPH_MAX_LAYERS="3").exit_code == 0


@pytest.mark.parametrize("digits", ["-1000000000", "31", "0.5"])
def test_round_digits_are_bounded(tmp_path: Path, digits: str) -> None:
    text = MLP.replace("out: width", f"out: 'round(8, {digits})'")
    spec = write(tmp_path, "t.yaml", text)
    refused(invoke("validate", str(spec)), f"{spec}:6:", "round()")


def test_init_checks_the_size_before_allocating(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("width: 8", "width: 1e9"))
    out = tmp_path / "big.safetensors"
    refused(invoke("init", str(spec), "-o", str(out)), f"{spec}: ", "MORPH_MAX_PARAMS")
    assert not out.exists()
    small = write(tmp_path, "small.yaml", MLP)
    refused(invoke("init", str(small), "-o", str(out), MORPH_MAX_PARAMS="50"), "limit of 50")
    assert not out.exists()


def test_huge_plain_numbers_are_refused(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        "t.yaml",
        MLP.replace("width: 8", "width: 8").replace("out: 3", "out: 1" + "0" * 30),
    )
    refused(invoke("validate", str(spec)), f"{spec}:8:", "beyond the limit")


def test_integers_too_long_to_read_are_located(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("width: 8", "width: " + "9" * 5000))
    refused(invoke("validate", str(spec)), f"{spec}:3:15: cannot read this value")
    err = refused(
        invoke("validate", str(write(tmp_path, "u.yaml", MLP)), "--set", "width=" + "9" * 5000)
    )
    assert len(err) < 300


def test_extends_chains_are_bounded(tmp_path: Path) -> None:
    for i in range(40):
        write(tmp_path, f"e{i}.yaml", f"morphspec: 1\nname: e\nextends: e{i + 1}.yaml\n")
    write(tmp_path, "e40.yaml", MLP)
    refused(invoke("validate", str(tmp_path / "e0.yaml")), "'extends' chains more than 32 files")
    assert invoke("validate", str(tmp_path / "e20.yaml")).exit_code == 0


@pytest.mark.parametrize("byte", ["\x07", "\x00", "\x1b"])
def test_control_bytes_are_located_and_do_not_stop_validate(tmp_path: Path, byte: str) -> None:
    bad = write(tmp_path, "bad.yaml", MLP.replace("name: mlp", f"name: ml{byte}p"))
    good = write(tmp_path, "good.yaml", MLP)
    result = invoke("validate", str(bad), str(good))
    refused(result, f"{bad}:2:9: control character U+{ord(byte):04X}")
    assert f"{good}: ok" in result.stdout


@pytest.mark.parametrize(
    "value",
    ["[", "!!python/object/apply:os.system ['true']", "abc", ".nan", ".inf", "1e400", "true"],
)
def test_bad_set_values_are_refused(tmp_path: Path, value: str) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    refused(invoke("validate", str(spec), "--set", f"width={value}"), "--set width=")


@pytest.mark.parametrize(("value", "width"), [("1e1", 10), ("16", 16), ("1.6e1", 16)])
def test_set_accepts_numbers_in_any_notation(tmp_path: Path, value: str, width: int) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    result = invoke("summary", str(spec), "--set", f"width={value}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == 4 * width + width + width * 3 + 3


def test_set_r_1e_minus_1_is_a_float(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("{width: 8}", "{width: 8, r: 1}"))
    assert invoke("validate", str(spec), "--set", "r=1e-1").exit_code == 0


@pytest.mark.parametrize("special", ["/dev/zero", "FIFO", "DIR"])
def test_specs_must_be_regular_files(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "FIFO":
        path = tmp_path / "fifo.yaml"
        os.mkfifo(path)
    elif special == "DIR":
        path = tmp_path
    good = write(tmp_path, "good.yaml", MLP)
    result = invoke("validate", str(path), str(good))
    refused(result, f"{path}: ", "not a regular file")
    assert f"{good}: ok" in result.stdout


def test_oversized_spec_is_refused_before_reading(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP + "# " + "x" * 2000 + "\n")
    refused(invoke("validate", str(spec), MORPH_MAX_SPEC_BYTES="1000"), "MORPH_MAX_SPEC_BYTES")
    assert invoke("validate", str(spec)).exit_code == 0


def test_input_shape_takes_expressions(tmp_path: Path) -> None:
    text = """\
    morphspec: 1
    name: lm
    vars: {ctx: 8, half: 2}
    input: {shape: ['ctx * half'], dtype: int64}
    body: [embedding: {vocab: 10, dim: 4}]
    """
    spec = write(tmp_path, "lm.yaml", text)
    result = invoke("summary", str(spec), "--json", "--set", "ctx=4")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input"] == [8]
    bad = write(tmp_path, "bad.yaml", text.replace("half: 2", "half: 0.5").replace("8", "3"))
    refused(invoke("validate", str(bad)), f"{bad}:4:17: input size 0 must be a positive integer")


def test_extends_refusal_points_at_the_student(tmp_path: Path) -> None:
    t = write(tmp_path, "t.yaml", MLP)
    s = write(tmp_path, "s.yaml", "morphspec: 1\nname: s\nextends: t.yaml\nvars: {width: 0}\n")
    err = refused(invoke("validate", str(s)), f"{s}:4:")
    assert f"{t}:6:" in err  # the expression's place is named too
    # a value the student did not set still points at the base
    s2 = write(tmp_path, "s2.yaml", "morphspec: 1\nname: s\nextends: t.yaml\nvars: {other: 0}\n")
    bad = write(tmp_path, "t.yaml", MLP.replace("out: 3", "out: 0"))
    assert bad == t
    refused(invoke("validate", str(s2)), f"{t}:8:")


# -- issue 18: limits that escaped, values that make NaN ------------------------------------
REVERSIBLE = """\
morphspec: 1
name: rev
input: {shape: [4, 8, 8]}
body:
  - hamiltonian: {name: unit, steps: 10000000, hidden: 4, h: 0.1}
"""


@pytest.mark.parametrize("kind", ["hamiltonian", "midpoint", "leapfrog"])
def test_reversible_steps_count_toward_the_layer_limit(tmp_path: Path, kind: str) -> None:
    spec = write(tmp_path, "rev.yaml", REVERSIBLE.replace("hamiltonian", kind))
    start = time.perf_counter()
    refused(invoke("validate", str(spec)), f"{spec}:5:", "'steps: 10000000'", "MORPH_MAX_LAYERS")
    assert time.perf_counter() - start < 10
    few = write(
        tmp_path, "few.yaml", REVERSIBLE.replace("10000000", "3").replace("hamiltonian", kind)
    )
    refused(invoke("validate", str(few), MORPH_MAX_LAYERS="3"), "limit of 3")
    assert invoke("validate", str(few), MORPH_MAX_LAYERS="5").exit_code == 0


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "-5", "0", "ten", "0x10"])
def test_limits_take_ascii_digits_only(tmp_path: Path, value: str) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    result = invoke("validate", str(spec), MORPH_MAX_LAYERS=value)
    refused(result, f"MORPH_MAX_LAYERS={value!r} is not a positive whole number (digits 0-9)")
    assert invoke("validate", str(spec), MORPH_MAX_LAYERS=" 12 ").exit_code == 0


@pytest.mark.parametrize("eps", ["0", "-1e-5", "-1", ".nan", ".inf"])
@pytest.mark.parametrize("layer", ["layernorm", "rmsnorm", "batchnorm"])
def test_norm_eps_that_makes_nan_is_refused(tmp_path: Path, layer: str, eps: str) -> None:
    shape = "[4, 6, 6]" if layer == "batchnorm" else "[4]"
    text = f"""\
    morphspec: 1
    name: n
    input: {{shape: {shape}}}
    body:
      - {layer}: {{name: norm, eps: {eps}}}
    """
    spec = write(tmp_path, "n.yaml", text)
    err = refused(invoke("validate", str(spec)), f"{spec}:5:")
    words = "non-finite number" if eps in (".nan", ".inf") else "eps must be a finite number > 0"
    assert words in err, err
