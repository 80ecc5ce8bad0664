"""`morph verify`: measure how far a student's outputs are from its teacher's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from morphspec.arch import resolve
from morphspec.cli.growth_options import StudentSetOpt, TeacherSetOpt
from morphspec.cli.options import JsonOpt, SeedOpt
from morphspec.cli.output import Output
from morphspec.defaults import DEFAULT_RTOL
from morphspec.errors import EXIT_NOT_PRESERVING, Mark, Problem
from morphspec.spec import load_spec

__all__ = ["EXAMPLES", "RtolOpt", "SamplesOpt", "verify"]

EXAMPLES = """\
  morph verify teacher.yaml teacher.safetensors student.yaml student.safetensors
  morph verify t.yaml t.safetensors s.yaml s.safetensors --samples 64 --rtol 1e-4 --json"""

SamplesOpt = Annotated[
    int, typer.Option("--samples", min=1, max=100_000, help="Inputs to compare on.")
]
RtolOpt = Annotated[
    float, typer.Option("--rtol", min=0.0, help="Pass when max|s-t| / max|t| is at most this.")
]
CkptArg = Annotated[Path, typer.Argument(metavar="CKPT", help="A safetensors checkpoint.")]
SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="A spec file.")]


def verify(
    teacher_spec: SpecArg,
    teacher_ckpt: CkptArg,
    student_spec: SpecArg,
    student_ckpt: CkptArg,
    samples: SamplesOpt = 32,
    seed: SeedOpt = 0,
    rtol: RtolOpt = DEFAULT_RTOL,
    teacher_set: TeacherSetOpt = None,
    student_set: StudentSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build both models in eval mode, feed both the same seeded inputs and report
    max_abs_err and rel_err = max|s - t| / max|t|. Exit 3 when rel_err exceeds --rtol."""
    from morphspec.verify import verify_checkpoints

    out = Output(as_json)
    teacher = resolve(load_spec(teacher_spec, teacher_set))
    student = resolve(load_spec(student_spec, student_set))
    result = verify_checkpoints(teacher, teacher_ckpt, student, student_ckpt, samples, seed, rtol)
    text = (
        f"max_abs_err {result.max_abs_err:.3g}, rel_err {result.rel_err:.3g}"
        f" (rtol {rtol:g}, {samples} samples, seed {seed})"
    )
    if not result.passed:
        out.fail(
            [Problem(f"not function-preserving: {text}", Mark(str(student_ckpt)))],
            EXIT_NOT_PRESERVING,
            verification=result.to_json(),
        )
    out.result({"verification": result.to_json()}, f"ok: {text}")
