"""`morph convert`: grow a teacher checkpoint into a student checkpoint, verified."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from morphspec.cli.growth_options import (
    StudentArg,
    StudentSetOpt,
    TeacherArg,
    TeacherSetOpt,
    merge_sets,
    plan_table,
)  # fmt: skip
from morphspec.cli.options import ForceOpt, JsonOpt, SeedOpt, SetOpt
from morphspec.cli.output import Output
from morphspec.cli.verify import RtolOpt, SamplesOpt
from morphspec.defaults import DEFAULT_RTOL

__all__ = ["EXAMPLES", "convert"]

EXAMPLES = """\
  morph convert examples/specs/resnet_cifar10.yaml examples/specs/resnet_cifar18.yaml \\
      teacher.safetensors
  morph convert mlp.yaml mlp_wide.yaml mlp.safetensors -o wide.safetensors --seed 3 --json
  morph convert t.yaml s.yaml t.safetensors --dry-run"""

CkptArg = Annotated[
    Path,
    typer.Argument(metavar="CKPT", help="The teacher checkpoint (safetensors or sharded index)."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", metavar="OUT",
        help="Student checkpoint to write [default: <student name>.safetensors beside STUDENT].",
        show_default=False,
    ),
]  # fmt: skip
FamilyOpt = Annotated[
    Literal["r2r", "net2net", "netmorph", "randpad"],
    typer.Option("--family", help="Growth family; `morph families` shows their conditions."),
]


def _finite(value: float) -> float:
    """Refuse inf and nan, which would only produce a non-finite student."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


NoiseOpt = Annotated[
    float,
    typer.Option(
        "--noise",
        min=0.0,
        callback=_finite,
        help="Symmetry-breaking noise of this relative size, placed where it keeps the function.",
    ),
]
NetmorphZeroOpt = Annotated[
    Literal["out", "in"],
    typer.Option(
        "--netmorph-zero",
        help="netmorph: zero the new consumer columns (out) or the new producer rows (in).",
    ),
]
RescaleOpt = Annotated[
    Literal["none", "default_vt", "vt_constraint_old_shape", "vt_constraint_new_shape"],
    typer.Option(
        "--rescale", help="Variance-transfer rescaling of widened hidden layers, kept exact."
    ),
]
AllowInexactOpt = Annotated[
    bool,
    typer.Option(
        "--allow-inexact",
        help="Rescale even where no exact compensation exists; report the deviation.",
    ),
]
InitOpt = Annotated[
    Literal["match", "he"],
    typer.Option("--init", help="Scale of free parameters: match the existing weights, or He."),
]
InitScaleOpt = Annotated[
    float,
    typer.Option(
        "--init-scale",
        min=0.0,
        callback=_finite,
        help="Multiplies the scale of free parameters.",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and plan; write nothing.")]
NoVerifyOpt = Annotated[
    bool,
    typer.Option("--no-verify", help="Skip the check that the student reproduces the teacher."),
]


def convert(
    teacher: TeacherArg,
    student: StudentArg,
    checkpoint: CkptArg,
    output: OutOpt = None,
    family: FamilyOpt = "r2r",
    init: InitOpt = "match",
    init_scale: InitScaleOpt = 1.0,
    seed: SeedOpt = 0,
    noise: NoiseOpt = 0.0,
    netmorph_zero: NetmorphZeroOpt = "out",
    rescale: RescaleOpt = "none",
    allow_inexact: AllowInexactOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    no_verify: NoVerifyOpt = False,
    rtol: RtolOpt = DEFAULT_RTOL,
    samples: SamplesOpt = 32,
    set_: SetOpt = None,
    teacher_set: TeacherSetOpt = None,
    student_set: StudentSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grow CKPT, a checkpoint of TEACHER, into a checkpoint of STUDENT that computes the same
    function. Everything is checked before a tensor moves; the output is written beside its
    destination, verified (unless --no-verify) and only then renamed into place. The teacher
    is never written. Exit 3, with no output written, when the student misses --rtol."""
    from morphspec.convert import convert as run

    out = Output(as_json)
    with out.progress() as bar:
        task = bar.add_task("writing student", total=None, visible=sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run(
            teacher, student, checkpoint, output,
            family=family, init=init, init_scale=init_scale, seed=seed, noise=noise,
            netmorph_zero=netmorph_zero, rescale=rescale, allow_inexact=allow_inexact, force=force,
            dry_run=dry_run, verify=not no_verify, rtol=rtol, samples=samples,
            teacher_set=merge_sets(set_, teacher_set), student_set=merge_sets(set_, student_set),
            progress=progress,
        )  # fmt: skip
    if not as_json:
        out.out.print(plan_table(result.plan))
    for warning in result.warnings:
        out.warn(warning)
    v = result.verification
    if result.written:
        if v is None:
            checked = "; not verified (--no-verify)"
        else:
            sign = "<=" if v.passed else ">"
            checked = f"; rel_err {v.rel_err:.3g} {sign} rtol {v.rtol:g} ({v.samples} samples)"
        text = f"wrote {result.output}{checked}"
    else:
        text = f"dry run: would write {result.output}"
    out.result(result.to_json(), text)
