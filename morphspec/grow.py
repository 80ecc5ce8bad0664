"""`morphspec.grow`: grow a teacher in-process, for training loops; no files.

`grow` and `morph convert` share one path: both specs are resolved and diffed, the family
checks its conditions and the teacher's keys and shapes are checked before any tensor is
made (`prepare`); then `student_entries` makes the student tensor by tensor. `convert`
streams those entries to a file; `grow` loads them into a built student module, verifies
it in eval *and* train mode, and maps the optimizer's state onto the student's parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from morphspec.arch import Arch, resolve
from morphspec.checkpoint import check_keys
from morphspec.defaults import DEFAULT_RTOL, DEFAULT_SAMPLES
from morphspec.errors import Mark, MorphError, NotPreservingError, closest
from morphspec.growth.apply import StateSource, TensorSource, student_entries
from morphspec.growth.families import FAMILIES, Family, GrowOptions, RescaleMode, make_family
from morphspec.growth.init import InitMode
from morphspec.growth.plan import Plan, diff
from morphspec.spec import Spec, load_spec
from morphspec.spec.load import SetArg
from morphspec.verify import Verification, compare, sample_inputs

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = ["GrowResult", "grow", "plan_for", "prepare"]

SpecLike = Spec | Arch | str | Path


def _arch(spec: SpecLike, set_: SetArg) -> Arch:
    if isinstance(spec, Arch):
        return spec
    return resolve(spec if isinstance(spec, Spec) else load_spec(spec, set_))


def plan_for(
    teacher_spec: SpecLike,
    student_spec: SpecLike,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
) -> tuple[Arch, Arch, Plan]:
    """Resolve both specs and diff them (torch-free work, refused with YAML places)."""
    teacher = _arch(teacher_spec, teacher_set)
    student = _arch(student_spec, student_set)
    return teacher, student, diff(teacher, student)


def prepare(
    teacher_spec: SpecLike,
    student_spec: SpecLike,
    source: TensorSource,
    family: str,
    options: GrowOptions,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
) -> tuple[Plan, Family]:
    """Everything checked before a tensor moves: specs, plan, the family's conditions and
    the teacher's keys and shapes. Shared by `grow` and `convert`."""
    teacher, _, plan = plan_for(teacher_spec, student_spec, teacher_set, student_set)
    if family not in FAMILIES:
        raise MorphError(f"unknown family '{family}'{closest(family, FAMILIES)}")
    check_keys(source, teacher.state_shapes(), _label(teacher_spec, teacher))
    return plan, make_family(family, plan, options, source.get)


def _label(spec: SpecLike, arch: Arch) -> str:
    return str(spec) if isinstance(spec, (str, Path)) else arch.name


@dataclass
class GrowResult:
    """What `grow` made. `student` is ready to train; `optimizer` (when one was given)
    continues the teacher's optimizer over the student's parameters."""

    student: nn.Module
    plan: Plan
    family: Family
    verification: Verification | None
    """Eval mode (batchnorm on running statistics)."""
    train_verification: Verification | None
    """Train mode (batchnorm on the batch's statistics, dropout off)."""
    optimizer: Optimizer | None = None
    optimizer_state: dict[str, Any] | None = None
    """What `load_state_dict` of a new optimizer of the teacher's class over
    `student.parameters()` takes (the param groups keep their hyperparameters)."""

    @property
    def rel_err(self) -> float | None:
        """The largest rel_err over the modes the family is exact in (None if unverified)."""
        checks = (self.verification, self.train_verification)
        errs = [v.rel_err for v in checks if v and v.mode in self.family.modes]
        return max(errs) if errs else None

    @property
    def warnings(self) -> list[str]:
        """Why the student may not be function-preserving (empty for exact growth)."""
        return self.family.warnings()


def grow(
    teacher: nn.Module | Mapping[str, torch.Tensor],
    teacher_spec: SpecLike,
    student_spec: SpecLike,
    *,
    optimizer: Optimizer | None = None,
    family: str = "r2r",
    init: InitMode = "match",
    init_scale: float = 1.0,
    seed: int = 0,
    noise: float = 0.0,
    netmorph_zero: Literal["out", "in"] = "out",
    rescale: RescaleMode = "none",
    allow_inexact: bool = False,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    samples: int = DEFAULT_SAMPLES,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
) -> GrowResult:
    """Grow `teacher` (a module built from `teacher_spec`, or its state_dict) into a module
    of `student_spec` that computes the same function, in the teacher's train/eval mode,
    device and dtype. The same options, checks and refusals as `morph convert`.

    With `optimizer` (torch Adam, AdamW or SGD over the teacher's parameters), the result
    also carries an optimizer of the same class over the student's parameters whose state
    follows the growth (see `morphspec.growth.optim`). Verification (on by default) raises
    NotPreservingError when an exact family misses `rtol` in eval or train mode.
    """
    from morphspec.builder import build_arch

    module = teacher if isinstance(teacher, nn.Module) else None
    state = dict(module.state_dict() if module is not None else teacher)  # type: ignore[arg-type]
    source = StateSource(state)
    options = GrowOptions(init, init_scale, seed, noise, netmorph_zero, rescale, allow_inexact)
    plan, grower = prepare(
        teacher_spec, student_spec, source, family, options, teacher_set, student_set
    )
    t_arch, s_arch = plan.teacher, plan.student
    device = next(iter(state.values())).device if state else torch.device("cpu")
    grown = {
        e.key: _owned(e.produce(), state.get(e.key)) for e in student_entries(plan, grower, source)
    }
    student = build_arch(s_arch)
    student.load_state_dict(grown, strict=True, assign=True)
    student.to(device)
    training = module.training if module is not None else False
    student.train(training)

    ver = train_ver = None
    if verify:
        reference = build_arch(t_arch)
        copies = {k: v.detach().clone() for k, v in state.items()}
        reference.load_state_dict(copies, strict=True, assign=True)
        reference.to(device)
        ver, train_ver = verify_modules(reference, student, t_arch, samples, seed, rtol)
        exact = grower.exact and not grower.rescaler.inexact
        for mode, v in (("eval", ver), ("train", train_ver)):
            if exact and not v.passed and mode in grower.modes:
                raise NotPreservingError(
                    f"the student does not reproduce the teacher in {mode} mode: rel_err"
                    f" {v.rel_err:.3g} > rtol {rtol:g} (max_abs_err {v.max_abs_err:.3g})",
                    Mark(_label(student_spec, s_arch)),
                )
    result = GrowResult(student, plan, grower, ver, train_ver)
    if optimizer is not None:
        from morphspec.growth.optim import map_optimizer

        if module is None:
            raise MorphError(
                "mapping an optimizer's state needs the teacher as a module (its parameter"
                " order ties the optimizer's state to names); pass the nn.Module"
            )
        result.optimizer, result.optimizer_state = map_optimizer(optimizer, module, student, grower)
    return result


def _owned(tensor: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
    """`tensor`, copied when it is the teacher's own (an unchanged tensor is passed through),
    so that training one model never moves the other."""
    if teacher is not None and tensor.data_ptr() == teacher.data_ptr():
        return tensor.clone()
    return tensor


def verify_modules(
    teacher: nn.Module, student: nn.Module, arch: Arch, samples: int, seed: int, rtol: float
) -> tuple[Verification, Verification]:
    """Compare copies of both models on seeded inputs in eval and in train mode (batch
    statistics, dropout off); the models themselves are left untouched."""
    param = next(teacher.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    inputs = sample_inputs(arch, samples, seed)
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    inputs = inputs.to(device)
    t, s = copy.deepcopy(teacher), copy.deepcopy(student)
    evaluated = compare(t, s, inputs, rtol, seed)
    trained = compare(t, s, inputs, rtol, seed, mode="train")
    return evaluated, trained
