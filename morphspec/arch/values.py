"""Numbers in a spec: evaluate an argument's expression against the vars and args in
scope, check it (a positive count, a real), and point a bad value at the right YAML line,
which may be in another file when a student `extends` its teacher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphspec.errors import Mark, SpecError
from morphspec.spec import models as m
from morphspec.spec.expr import ExprError, Number, check_number, evaluate, names_in
from morphspec.spec.yamlpos import Loc

__all__ = ["Values"]


class Values:
    """The evaluation half of the resolver: one spec's marks and vars."""

    def __init__(self, spec: m.Spec):
        self.spec = spec

    def mark(self, loc: Loc, key: bool = False) -> Mark:
        return self.spec.mark(loc, key)

    # -- numbers ---------------------------------------------------------------------
    def blame(self, value: Any, loc: Loc, env: Mapping[str, Number]) -> tuple[Mark, str]:
        """Where to point for a bad value: at the expression, or, when a var it uses was set
        in another file (a student that `extends` its teacher), at that var's line."""
        here = self.mark(loc)
        if not isinstance(value, str):
            return here, ""
        for name in names_in(value):
            if name not in self.spec.vars or name in self.spec.overridden:
                continue
            if env.get(name) != self.spec.vars[name]:
                continue
            set_at = self.mark(("vars", name))
            if set_at.file != here.file:
                return set_at, f" (var '{name}' is set here; the expression is at {here})"
        return here, ""

    def fail(self, message: str, value: Any, loc: Loc, env: Mapping[str, Number]) -> SpecError:
        mark, note = self.blame(value, loc, env)
        return SpecError(message + note, mark)

    def number(self, value: Any, loc: Loc, env: Mapping[str, Number]) -> Number:
        if isinstance(value, bool):
            raise SpecError(f"expected a number, got {value}", self.mark(loc))
        try:
            if isinstance(value, int | float):
                return check_number(value)
            return evaluate(str(value), env)
        except ExprError as exc:
            raise self.fail(f"in '{value}': {exc}", value, loc, env) from None

    def count(self, value: Any, loc: Loc, env: Mapping[str, Number], what: str) -> int:
        """A positive integer, such as a channel count; show the expression and its value."""
        got = self.number(value, loc, env)
        if float(got).is_integer() and got >= 1:
            return int(got)
        shown = f"'{value}' = {got}" if isinstance(value, str) else str(got)
        fix = "wrap it in floor() or round()" if got >= 1 else "check the vars it uses"
        raise self.fail(f"{what} must be a positive integer, but {shown}; {fix}", value, loc, env)

    def natural(self, value: Any, loc: Loc, env: Mapping[str, Number], what: str) -> int:
        got = self.number(value, loc, env)
        if float(got).is_integer() and got >= 0:
            return int(got)
        raise self.fail(f"{what} must be a non-negative integer, got {got}", value, loc, env)

    def real(self, value: Any, loc: Loc, env: Mapping[str, Number]) -> float:
        return float(self.number(value, loc, env))
