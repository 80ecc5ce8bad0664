"""`morph validate`: parse and resolve spec files without torch, for editors and CI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from morphspec.arch import Arch, resolve
from morphspec.cli.options import JsonOpt, SetOpt
from morphspec.cli.output import Output, problem_json
from morphspec.errors import Mark, MorphError, Problem
from morphspec.spec import load_spec

__all__ = ["EXAMPLES", "validate"]

EXAMPLES = """\
  morph validate examples/specs/*.yaml
  morph validate student.yaml --set r=0.25
  morph validate specs/*.yaml --json | jq '.problems[]'"""

FilesArg = Annotated[
    list[Path],
    typer.Argument(metavar="FILE", help="Spec files to check.", show_default=False),
]


@dataclass
class Report:
    """One file's verdict: the resolved Arch, or every problem found in it."""

    file: str
    arch: Arch | None = None
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        if self.arch is None:
            return {"file": self.file, "ok": False, "problems": self.json_problems()}
        return {
            "file": self.file,
            "ok": True,
            "name": self.arch.name,
            "params": self.arch.trainable_count(),
        }

    def json_problems(self) -> list[dict[str, Any]]:
        return [problem_json(p, self.file) for p in self.problems]


def check(path: Path, set_: list[str] | None) -> Report:
    """Load and resolve one file; a MorphError becomes the report's problems."""
    report = Report(str(path))
    try:
        report.arch = resolve(load_spec(path, set_))
    except MorphError as err:
        report.problems = [Problem(p.message, p.mark or Mark(str(path))) for p in err.problems]
    return report


def validate(files: FilesArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Check spec files: YAML, keys, expressions, names and shapes, without building models.

    Prints every problem of every file as FILE:LINE:COL: message and exits 1 if there is
    any, else one ok line per file.
    """
    out = Output(as_json)
    reports = [check(path, set_) for path in files]
    bad = [r for r in reports if r.problems]
    if not out.json:
        for r in reports:
            if r.arch is not None:
                out.out.print(_ok_line(r.file, r.arch), soft_wrap=True)
    if bad:
        problems = [p for r in bad for p in r.problems]
        note = f"{len(problems)} problem(s) in {len(bad)} of {len(reports)} file(s)"
        out.fail(problems, note=note, files=[r.to_json() for r in reports])
    out.result({"files": [r.to_json() for r in reports]})


def _ok_line(file: str, arch: Arch) -> Text:
    params = f"{arch.trainable_count():,} parameters"
    return Text.assemble(
        (f"{file}: ", "bold"),
        ("ok", "green"),
        f" ({arch.name}, {params}, {arch.input} -> {arch.output})",
    )
