"""The expression language of specs: arithmetic over vars and template args, never code.

Specs travel inside checkpoints, so an expression must not be able to run anything.
We parse with `ast` in `eval` mode and walk an allow-list of node types: numbers,
names, `+ - * / // ** ( )`, unary minus, and calls to `floor ceil round min max`.
Powers and results are bounded so `9**9**9` fails fast instead of hanging.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping

__all__ = ["ExprError", "Number", "check_number", "evaluate", "names_in"]

Number = int | float

MAX_LENGTH = 500
MAX_MAGNITUDE = 1e18
MAX_EXPONENT = 64
MAX_DIGITS = 30  # round(x, n): |n| beyond this is no rounding at all, and 10**n is slow


class ExprError(ValueError):
    """An expression that is malformed or uses something outside the language."""


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not float(ndigits).is_integer():
        raise ExprError(f"round(): the digits must be an integer, got {ndigits}")
    if abs(ndigits) > MAX_DIGITS:
        raise ExprError(f"round(): {ndigits} digits is beyond the limit of ±{MAX_DIGITS}")
    return round(x, int(ndigits))


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "floor": lambda x: math.floor(x),
    "ceil": lambda x: math.ceil(x),
    "round": _round,
    "min": min,
    "max": max,
}

_BINOPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
}


def evaluate(text: str, env: Mapping[str, Number]) -> Number:
    """Evaluate `text` with the names in `env`; raise ExprError with a readable reason."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning 'invalid decimal literal' on '1e'
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression '{text}': {exc.msg}") from None
    try:
        return _check(_eval(tree.body, env))
    except RecursionError:
        raise ExprError(f"expression '{text}' is nested too deeply") from None


def names_in(text: str) -> list[str]:
    """The names an expression uses (empty when it does not parse), for error messages."""
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return []
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})


def check_number(value: Number) -> Number:
    """A plain number from YAML or --set, held to the bounds of expression results."""
    try:
        return _check(value)
    except OverflowError:
        raise ExprError("number too large") from None


def _check(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("expression gives a non-finite number")
    if abs(value) > MAX_MAGNITUDE:
        # a huge int cannot be formatted as a float ('.3g' raises OverflowError)
        shown = f"{value:.3g}" if abs(value) < 1e300 else "a number beyond 1e300"
        raise ExprError(f"expression gives {shown}, beyond the limit of {MAX_MAGNITUDE:.0e}")
    return value


def _eval(node: ast.AST, env: Mapping[str, Number]) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExprError(f"only numbers are allowed, not {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in FUNCTIONS:
            raise ExprError(f"'{node.id}' is a function: call it as {node.id}(...)")
        known = ", ".join(sorted(env)) or "none"
        raise ExprError(f"unknown name '{node.id}' (known: {known})")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise ExprError(f"exponent {right} is larger than {MAX_EXPONENT}")
            if left < 0 and not float(right).is_integer():
                raise ExprError("a negative number to a fractional power is not real")
        try:
            return _check(_BINOPS[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except OverflowError:
            raise ExprError("number too large") from None
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExprError(f"only the functions {', '.join(FUNCTIONS)} may be called")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"{node.func.id}() takes plain positional arguments")
        args = [_eval(a, env) for a in node.args]
        try:
            return _check(FUNCTIONS[node.func.id](*args))
        except TypeError as exc:
            raise ExprError(f"{node.func.id}(): {exc}") from None
    raise ExprError(f"'{type(node).__name__}' is not allowed in expressions")
