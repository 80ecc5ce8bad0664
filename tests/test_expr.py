"""The expression language: arithmetic over vars and template args, and never code."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morphspec import load_spec, resolve
from morphspec.errors import SpecError
from morphspec.spec.expr import ExprError, evaluate


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 - 10", -3),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("-2 ** 2", -4),  # as in Python: the power binds tighter than unary minus
        ("+3", 3),
        ("floor(2.7)", 2),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("round(2.5)", 2),  # Python's round: halves to even
        ("round(3.5)", 4),
        ("round(2.345, 2)", 2.35),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("max(floor(64 * 0.1875), 1)", 12),
        ("1e-5", 1e-5),
        ("  4  ", 4),
    ],
)
def test_arithmetic(text: str, value: float) -> None:
    got = evaluate(text, {})
    assert got == pytest.approx(value)
    assert type(got) is type(value)


def test_names_come_from_the_environment() -> None:
    env = {"r": 0.125, "width": 16}
    assert evaluate("floor(64*r)", env) == 8
    assert evaluate("width * 2 + r * 8", env) == 33
    with pytest.raises(ExprError, match="unknown name 'widht' \\(known: r, width\\)"):
        evaluate("widht", env)


def test_floor_of_a_width_multiplier_is_an_int() -> None:
    value = evaluate("floor(128*r)", {"r": 0.1875})
    assert value == 24 and isinstance(value, int)


def test_vars_and_template_args_in_a_spec(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "morphspec: 1\nname: e\nvars: {r: 0.5, base: 10}\ninput: {shape: [4]}\n"
        "blocks:\n  b:\n    args: {width: required, k: 'base // 2'}\n"
        "    body:\n      - linear: {name: fc, out: 'max(width * k, ceil(r))'}\n"
        "body:\n  - b: {name: one, width: 'floor(4 * r)'}\n  - b: {name: two, width: 3, k: 1}\n"
    )
    shapes = resolve(load_spec(spec)).state_shapes()
    assert shapes["one.fc.weight"] == (10, 4)  # floor(4 * 0.5) * (10 // 2)
    assert shapes["two.fc.weight"] == (3, 10)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("__import__('os')", "only the functions"),
        ("__import__('os').system('true')", "only the functions"),
        ("(1).__class__", "Attribute"),
        ("().__class__.__bases__[0].__subclasses__()", "only the functions"),
        ("().__class__.__bases__[0]", "Subscript"),
        ("floor.__globals__", "Attribute"),
        ("lambda: 1", "Lambda"),
        ("(lambda x: x)(1)", "only the functions"),
        ("[x for x in (1, 2)]", "ListComp"),
        ("sum(x for x in (1, 2))", "only the functions"),
        ("{x: 1 for x in (1,)}", "DictComp"),
        ("[1, 2][0]", "Subscript"),
        ("'abc'", "only numbers"),
        ("b'abc'", "only numbers"),
        ("f'{1}'", "JoinedStr"),
        ("max(1, key=2)", "plain positional"),
        ("max(*(1, 2))", "plain positional"),
        ("True + 1", "only numbers"),
        ("None", "only numbers"),
        ("1j", "only numbers"),
        ("...", "only numbers"),
        ("1 if 1 else 0", "IfExp"),
        ("1 < 2", "Compare"),
        ("1 and 2", "BoolOp"),
        ("not 1", "UnaryOp"),
        ("~1", "UnaryOp"),
        ("7 % 3", "BinOp"),
        ("1 << 3", "BinOp"),
        ("(x := 1)", "NamedExpr"),
        ("open", "unknown name"),
        ("eval('1')", "only the functions"),
        ("exec", "unknown name"),
        ("floor", "is a function"),
        ("floor(1)(2)", "only the functions"),
        ("import os", "cannot parse"),
        ("x = 1", "cannot parse"),
        ("1; 2", "cannot parse"),
        ("", "cannot parse"),
        ("1 +", "cannot parse"),
        ("1\x002", "cannot parse"),
    ],
)
def test_code_is_never_run(text: str, reason: str) -> None:
    with pytest.raises(ExprError, match=reason):
        evaluate(text, {"x": 1})


@pytest.mark.parametrize(
    "text",
    [
        "9**9**9",
        "9**9**9**9",
        "2**65",
        "10**18 * 10",
        "(10**18)**64",
        "2**64",
        "max(10**18, 10**18) * 2",
        "1e308 * 10",
        "1e999",
        "4.9e-324 ** -1",
        "1e-300 ** -64",
        "ceil(1e-320 ** -1)",
        "99999999999999999999999",
        "-(2**63)",
        "2 ** 2 ** 2 ** 2 ** 2",
        "1" * 400,
        "(" * 300 + "1" + ")" * 300,
        "2**" * 160 + "2",
    ],
)
def test_huge_numbers_and_deep_nesting_fail_fast(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExprError):
        evaluate(text, {})
    assert time.perf_counter() - start < 0.5


def test_deep_but_valid_nesting_evaluates() -> None:
    assert evaluate("-" * 499 + "1", {}) == -1
    assert evaluate("1+" * 249 + "1", {}) == 250
    assert evaluate("(" * 150 + "2" + ")" * 150, {}) == 2


def test_long_text_is_refused_before_parsing() -> None:
    with pytest.raises(ExprError, match="longer than"):
        evaluate("1+" * 1000 + "1", {})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** (1/3)", "not real"),
        ("min()", "min\\(\\)"),
        ("floor(1, 2)", "floor\\(\\)"),
        ("round()", "round\\(\\)"),
    ],
)
def test_arithmetic_errors_are_expr_errors(text: str, reason: str) -> None:
    with pytest.raises(ExprError, match=reason):
        evaluate(text, {})


def test_spec_error_shows_the_expression_and_its_place(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "morphspec: 1\nname: e\ninput: {shape: [4]}\nbody:\n"
        "  - linear: {out: \"__import__('os').getcwd()\"}\n"
    )
    with pytest.raises(SpecError) as info:
        resolve(load_spec(spec))
    assert str(info.value).startswith(f"{spec}:5:19: in '__import__('os').getcwd()': ")


_PIECES = st.sampled_from(
    [*"0123456789+-*/().,_ eE", "**", "//", "x", "r", "floor", "ceil", "round", "min", "max",
     "__import__", "'", '"', "[", "]", "{", "}", "lambda", ":", "=", "for", "in", "if", "%",
     "\x00", "\\", "\n", "#", "@", "~", "<", "not", ".__class__", "9**9**9", "1e308", "j"]
)  # fmt: skip


@settings(max_examples=400, deadline=1000)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_random_token_soup_raises_only_expr_error(text: str) -> None:
    try:
        value = evaluate(text, {"x": 3, "r": 0.5})
    except ExprError:
        return
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert math.isfinite(value) and abs(value) <= 1e18


@settings(max_examples=300, deadline=1000)
@given(st.text(max_size=60))
def test_random_text_raises_only_expr_error(text: str) -> None:
    try:
        value = evaluate(text, {"x": 3})
    except ExprError:
        return
    assert isinstance(value, int | float) and not isinstance(value, bool)
