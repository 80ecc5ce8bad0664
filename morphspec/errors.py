"""One error type for every user mistake, so the CLI can print it and exit in one place.

Every problem carries the place it comes from (file, YAML line and column where there is
one) and, where we can tell, the fix. Exit codes are part of the CLI contract:
0 ok, 1 invalid input, 2 usage, 3 output not function-preserving.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXIT_INVALID",
    "EXIT_NOT_PRESERVING",
    "EXIT_OK",
    "EXIT_USAGE",
    "ArgumentError",
    "ArgumentTypeError",
    "CheckpointError",
    "Mark",
    "MorphError",
    "NotPreservingError",
    "PlanRefused",
    "Problem",
    "SpecError",
    "closest",
]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_NOT_PRESERVING = 3


@dataclass(frozen=True)
class Mark:
    """A place in a file; line and column are 1-based, 0 means unknown."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Problem:
    message: str
    mark: Mark | None = None

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}" if self.mark else self.message

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"message": self.message}
        if self.mark is not None:
            out.update(file=self.mark.file, line=self.mark.line, col=self.mark.col)
        return out


class MorphError(Exception):
    """A mistake in the user's input: one or more problems, each with its place."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: Problem | str | Iterable[Problem], mark: Mark | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, mark)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ArgumentError(MorphError, ValueError):
    """An API argument out of range (`samples=0`, a model on the meta device): a ValueError
    to Python callers, a located problem (exit 1) to the CLI."""


class ArgumentTypeError(MorphError, TypeError):
    """An API argument of the wrong type (a dtype given as a string): a TypeError too."""


class SpecError(MorphError):
    """A spec file that cannot be parsed, resolved or built."""


class CheckpointError(MorphError):
    """A checkpoint that is unreadable or does not match its spec."""


class PlanRefused(MorphError):
    """A teacher/student pair that the chosen growth family cannot convert exactly."""


class NotPreservingError(MorphError):
    """The converted student does not reproduce the teacher within tolerance."""

    exit_code = EXIT_NOT_PRESERVING


def closest(word: str, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
