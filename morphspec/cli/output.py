"""The one output sink of every command: results on stdout, talk and problems on stderr.

With `--json` a command prints exactly one JSON document on stdout and nothing else, so CI
can parse it: `{"ok": true, ...}` from `result()`, or `{"ok": false, "problems": [...]}`
from `fail()`. Without it, results are rich renderables (tables) on stdout, and talk,
warnings and problems go to stderr, problems as `FILE:LINE:COL: message` lines that
editors and CI annotators understand.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console, RenderableType
from rich.progress import Progress
from rich.text import Text

from morphspec.errors import EXIT_INVALID, Mark, Problem

__all__ = ["Output", "problem_json", "to_json"]


class Output:
    """Where one command run writes; create it first thing with the command's `--json` flag."""

    def __init__(self, as_json: bool = False) -> None:
        self.json = as_json
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=False)
        self.err = Console(file=sys.stderr, highlight=False)
        self._done = False

    # -- results -------------------------------------------------------------------------
    def result(self, data: Mapping[str, Any], human: RenderableType | None = None) -> None:
        """The command's result, once: `data` as JSON with `--json`, else `human` on stdout
        (a plain string is printed as is, never parsed as rich markup)."""
        self._once()
        if self.json:
            self._emit({"ok": True, **data})
        elif isinstance(human, str):
            self.out.print(Text(human), soft_wrap=True)
        elif human is not None:
            self.out.print(human)

    def fail(
        self,
        problems: Iterable[Problem],
        exit_code: int = EXIT_INVALID,
        *,
        note: str | None = None,
        **data: Any,
    ) -> NoReturn:
        """Report problems and exit: one `{"ok": false, ...}` document, or lines on stderr
        followed by `note` (a closing remark for people)."""
        problems = list(problems)
        self._once()
        if self.json:
            self._emit({"ok": False, "problems": [problem_json(p) for p in problems], **data})
        else:
            for p in problems:
                self.problem(p)
            if note:
                self.talk(note)
        raise typer.Exit(exit_code)

    # -- talk (stderr) -------------------------------------------------------------------
    def problem(self, p: Problem) -> None:
        """One `FILE:LINE:COL: message` line on stderr (human mode)."""
        where = (f"{p.mark}: ", "bold") if p.mark is not None else ("error: ", "bold red")
        self.err.print(Text.assemble(where, p.message), soft_wrap=True)

    def talk(self, message: str | Text) -> None:
        """Progress notes for people; silent with `--json`."""
        if not self.json:
            self.err.print(message, soft_wrap=True, markup=False)

    def warn(self, message: str) -> None:
        """A warning on stderr, in both modes (stdout stays one document)."""
        self.err.print(Text.assemble(("warning: ", "bold yellow"), message), soft_wrap=True)

    def progress(self) -> Progress:
        """A transient rich progress display on stderr (off with `--json`)."""
        return Progress(console=self.err, transient=True, disable=self.json)

    # -- internals -----------------------------------------------------------------------
    def _once(self) -> None:
        if self._done:
            raise RuntimeError("a command printed two results; --json allows exactly one")
        self._done = True

    def _emit(self, doc: Mapping[str, Any]) -> None:
        sys.stdout.write(to_json(doc) + "\n")
        sys.stdout.flush()


def problem_json(p: Problem, default_file: str | None = None) -> dict[str, Any]:
    """`{"file", "line", "col", "message"}` with every key present (line/col 0 if unknown)."""
    mark = p.mark or Mark(default_file or "")
    return {"file": mark.file or None, "line": mark.line, "col": mark.col, "message": p.message}


def to_json(doc: Mapping[str, Any]) -> str:
    """Strict JSON: tuples become lists, paths strings, NaN and infinities the strings
    "NaN", "Infinity", "-Infinity" (bare NaN is not JSON)."""
    return json.dumps(_plain(doc), indent=2, ensure_ascii=False, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Path):
        return str(value)
    return value
