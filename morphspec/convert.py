"""The main job: grow a teacher checkpoint into a student checkpoint, then prove it.

Everything that can be checked from specs and headers is checked before the first tensor
moves: both specs, the plan and the family's conditions, the teacher's keys and shapes,
the output path. The student is written to a hidden file beside the output, verified from
there, and renamed into place only when it passed; nothing of the user's is removed or
overwritten on failure, and the teacher is never written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from morphspec.arch import Arch, resolve
from morphspec.checkpoint import CheckpointReader, check_keys, make_metadata, write_safetensors
from morphspec.defaults import DEFAULT_RTOL
from morphspec.errors import Mark, MorphError, NotPreservingError, closest
from morphspec.growth.apply import student_entries
from morphspec.growth.families import FAMILIES, Family, GrowOptions, RescaleMode, make_family
from morphspec.growth.init import InitMode
from morphspec.growth.plan import Plan, diff
from morphspec.interop.folder import open_checkpoint
from morphspec.spec import load_spec
from morphspec.spec.load import SetArg
from morphspec.verify import Verification, verify_checkpoints

__all__ = ["ConvertResult", "convert", "default_output", "plan_for"]


@dataclass
class ConvertResult:
    plan: Plan
    output: Path
    written: bool
    verification: Verification | None
    teacher_sha256: str | None
    family: Family

    @property
    def warnings(self) -> list[str]:
        """Why the output may not be function-preserving (empty for exact conversions)."""
        notes = list(self.family.rescaler.inexact)
        if not self.family.exact:
            notes.append(f"{self.family.name} is not function-preserving by design")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "family": self.family.name,
            "function_preserving": self.family.conditions.function_preserving,
            "rescale": [asdict(s) for s in self.family.rescaler.scales],
            "warnings": self.warnings,
            "plan": self.plan.to_json(),
            "output": str(self.output),
            "written": self.written,
            "verification": self.verification.to_json() if self.verification else None,
            "teacher_sha256": self.teacher_sha256,
        }


def plan_for(
    teacher_spec: str | Path,
    student_spec: str | Path,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
) -> tuple[Arch, Arch, Plan]:
    teacher = resolve(load_spec(teacher_spec, teacher_set))
    student = resolve(load_spec(student_spec, student_set))
    return teacher, student, diff(teacher, student)


def default_output(student_spec: str | Path, student: Arch) -> Path:
    """`<student name>.safetensors` beside the student spec."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", student.name).strip("-.") or "student"
    return Path(student_spec).parent / f"{stem}.safetensors"


def _check_output(output: Path, reader: CheckpointReader, force: bool) -> None:
    if output.is_dir():
        raise MorphError(
            f"the output {output} is a folder; give a file name such as"
            f" {output / 'student.safetensors'}",
            Mark(str(output)),
        )
    target = output.resolve()
    for path in reader.paths:
        if path.resolve() == target or (output.exists() and os.path.samefile(path, output)):
            raise MorphError(
                f"the output {output} is the teacher checkpoint; morph never writes over the"
                " teacher: choose another -o",
                Mark(str(output)),
            )
    if output.exists() and not force:
        raise MorphError(f"{output} exists; pass --force to replace it (it is replaced only after"
                         " the new file is verified)", Mark(str(output)))  # fmt: skip
    if not output.parent.is_dir():
        raise MorphError(f"the output folder {output.parent} does not exist", Mark(str(output)))


def convert(
    teacher_spec: str | Path,
    student_spec: str | Path,
    checkpoint: str | Path,
    output: str | Path | None = None,
    *,
    family: str = "r2r",
    init: InitMode = "match",
    init_scale: float = 1.0,
    seed: int = 0,
    noise: float = 0.0,
    netmorph_zero: Literal["out", "in"] = "out",
    rescale: RescaleMode = "none",
    allow_inexact: bool = False,
    force: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    samples: int = 32,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Grow `checkpoint` (of `teacher_spec`) into the student; see the module docstring."""
    teacher, student, plan = plan_for(teacher_spec, student_spec, teacher_set, student_set)
    if family not in FAMILIES:
        raise MorphError(f"unknown family '{family}'{closest(family, FAMILIES)}")
    options = GrowOptions(init, init_scale, seed, noise, netmorph_zero, rescale, allow_inexact)
    out = Path(output) if output is not None else default_output(student_spec, student)
    with open_checkpoint(checkpoint, teacher) as reader:
        check_keys(reader, teacher.state_shapes(), str(teacher_spec))
        grower = make_family(family, plan, options, reader.get)
        _check_output(out, reader, force)
        if dry_run:
            return ConvertResult(plan, out, False, None, None, grower)
        sha = reader.sha256()
        metadata = make_metadata(
            student.spec.resolved_json(),
            teacher_sha256=sha,
            family=family,
            rescale=rescale,
            seed=str(seed),
            noise=repr(noise),
            init=init,
            init_scale=repr(init_scale),
            plan=plan.dumps(),
        )
        entries = student_entries(plan, grower, reader)
        total = sum(e.nbytes for e in entries)
        report = (lambda done: progress(done, total)) if progress else None
        staging = out.parent / f".{out.name}.unverified"
        try:
            write_safetensors(staging, entries, metadata, progress=report)
            result = None
            if verify:
                result = verify_checkpoints(
                    teacher, checkpoint, student, staging, samples, seed, rtol
                )
                if not result.passed and grower.exact and not grower.rescaler.inexact:
                    raise NotPreservingError(
                        f"the student does not reproduce the teacher: rel_err {result.rel_err:.3g}"
                        f" > rtol {rtol:g} (max_abs_err {result.max_abs_err:.3g});"
                        " no output written",
                        Mark(str(student_spec)),
                    )
            os.replace(staging, out)
        finally:
            staging.unlink(missing_ok=True)
    return ConvertResult(plan, out, True, result, sha, grower)
