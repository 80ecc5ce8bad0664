"""`morph verify`: measure how far a student's outputs are from its teacher's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from morphspec.arch import resolve
from morphspec.cli.growth_options import StudentSetOpt, TeacherSetOpt, growth_option
from morphspec.cli.options import JsonOpt, SeedOpt
from morphspec.cli.output import Output
from morphspec.cli.startup import quiet_import
from morphspec.defaults import DEFAULT_RTOL, MAX_LR, MAX_TRAIN_STEPS
from morphspec.errors import EXIT_NOT_PRESERVING, Mark, Problem
from morphspec.spec import load_spec

__all__ = ["EXAMPLES", "RtolOpt", "SamplesOpt", "verify"]

EXAMPLES = """\
  morph verify teacher.yaml teacher.safetensors student.yaml student.safetensors
  morph verify t.yaml t.safetensors s.yaml s.safetensors --samples 64 --rtol 1e-4 --json
  morph verify t.yaml t.safetensors s.yaml s.safetensors --train-steps 10 --optimizer adam"""

SamplesOpt = Annotated[int, growth_option("samples")]
RtolOpt = Annotated[float, growth_option("rtol")]
TrainStepsOpt = Annotated[
    int,
    typer.Option(
        "--train-steps",
        min=0,
        max=MAX_TRAIN_STEPS,
        help="Also train copies of both models K steps on identical random batches and print"
        " the drift ratio |f_s(K) - f_t(0)| / |f_t(K) - f_t(0)| (1 = the student moves like the"
        " teacher).",
    ),
]


def _positive_or_none(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number > 0")
    return value


LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        max=MAX_LR,
        callback=_positive_or_none,
        help="Learning rate for --train-steps [default: 0.01 sgd, 0.001 adam].",
    ),
]
OptimizerOpt = Annotated[
    Literal["sgd", "adam"],
    typer.Option("--optimizer", help="Optimizer for --train-steps (sgd: momentum 0.9)."),
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
    train_steps: TrainStepsOpt = 0,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = "sgd",
    teacher_set: TeacherSetOpt = None,
    student_set: StudentSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build both models, feed both the same seeded inputs and report max_abs_err and
    rel_err = max|s - t| / max|t| in eval mode (running statistics) and in train mode
    (batch statistics, dropout off). Exit 3 when either rel_err exceeds --rtol."""
    verify_modes = quiet_import("morphspec.verify").verify_modes

    out = Output(as_json)
    teacher = resolve(load_spec(teacher_spec, teacher_set))
    student = resolve(load_spec(student_spec, student_set))
    results = verify_modes(teacher, teacher_ckpt, student, student_ckpt, samples, seed, rtol)
    data: dict[str, Any] = {"verification": results[0].to_json(), "train": results[1].to_json()}
    text = (
        "; ".join(
            f"{v.mode}: max_abs_err {v.max_abs_err:.3g}, rel_err {v.rel_err:.3g}" for v in results
        )
        + f" (rtol {rtol:g}, {samples} samples, seed {seed})"
    )
    if train_steps:
        from morphspec.api import load
        from morphspec.drift import drift_ratio

        t_model, s_model = load(teacher, teacher_ckpt), load(student, student_ckpt)
        drift = drift_ratio(
            t_model, s_model, teacher, steps=train_steps, optimizer=optimizer, lr=lr, seed=seed
        )
        data["drift"] = drift.to_json()
        data["drift_ratio"] = drift.ratio
        text += (
            f"; drift ratio {drift.ratio:.3g} after {train_steps} {optimizer} step(s),"
            f" lr {drift.lr:g}"
        )
    if not all(v.passed for v in results):
        out.fail(
            [Problem(f"not function-preserving: {text}", Mark(str(student_ckpt)))],
            EXIT_NOT_PRESERVING,
            **data,
        )
    out.result(data, f"ok: {text}")
