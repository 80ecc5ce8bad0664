"""`morphspec.grow`: grow a teacher in-process, for training loops; no files.

`grow` and `morph convert` share one path: both specs are resolved and diffed, the family
checks its conditions and the teacher's keys and shapes are checked before any tensor is
made (`diff`, then `prepare`); then `student_entries` makes the student tensor by tensor. `convert`
streams those entries to a file; `grow` loads them into a built student module, verifies
it in eval *and* train mode, and maps the optimizer's state onto the student's parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from morphspec.arch import Arch, resolve
from morphspec.arguments import check_optimizer, check_options, check_teacher
from morphspec.checkpoint import check_keys
from morphspec.checkpoint.finite import check_finite_tensors
from morphspec.defaults import DEFAULT_SAMPLES
from morphspec.errors import CheckpointError, Mark, MorphError, NotPreservingError, closest
from morphspec.growth.apply import StateSource, TensorSource, student_entries
from morphspec.growth.families import FAMILIES, Family, make_family
from morphspec.growth.interleave import interleave
from morphspec.growth.options import GrowOptions
from morphspec.growth.plan import Plan, diff
from morphspec.spec import Spec, load_spec
from morphspec.spec.load import SetArg
from morphspec.verify import Verification, compare, sample_inputs

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = ["GrowResult", "grow", "prepare"]

SpecLike = Spec | Arch | str | Path


def _arch(spec: SpecLike, set_: SetArg) -> Arch:
    if isinstance(spec, Arch):
        return spec
    return resolve(spec if isinstance(spec, Spec) else load_spec(spec, set_))


def prepare(plan: Plan, source: TensorSource, options: GrowOptions, teacher_label: str) -> Family:
    """What is checked after the plan and before a tensor moves: the family and its
    conditions, and the teacher's keys and shapes. Shared by `grow` and `convert`, which
    both plan first (so a refused plan never opens a checkpoint)."""
    if options.family not in FAMILIES:
        raise MorphError(f"unknown family '{options.family}'{closest(options.family, FAMILIES)}")
    check_keys(source, plan.teacher.state_shapes(), teacher_label)
    _check_dtypes(source, teacher_label)
    return make_family(options.family, plan, options, source.get)


def _check_dtypes(source: TensorSource, label: str) -> None:
    """Weights are floating point (an int32 teacher once failed deep inside torch); only a
    scalar counter such as batchnorm's `num_batches_tracked` may be an integer."""
    for key in source.keys():  # noqa: SIM118 - a TensorSource has keys(), no __iter__
        dtype = source.dtype(key)
        if not dtype.is_floating_point and source.shape(key) != ():
            raise CheckpointError(
                f"tensor '{key}' of the teacher is {str(dtype).removeprefix('torch.')}; growth"
                " needs floating-point weights (float16, bfloat16, float32 or float64): cast"
                " the checkpoint first",
                Mark(label),
            )


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
    options: GrowOptions | None = None,
    verify: bool = True,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
    **option_values: Any,
) -> GrowResult:
    """Grow `teacher` (a module built from `teacher_spec`, or its state_dict) into a module
    of `student_spec` that computes the same function, in the teacher's train/eval mode,
    device and dtype. The same options (`GrowOptions`: `family`, `seed`, `noise`, `rtol`,
    ..., as `options` or as keywords of the same names), checks and refusals as
    `morph convert`.

    A model sharded with FSDP2 (`fully_shard`, DTensor parameters) comes back sharded the
    same way, on the same mesh, and so does its optimizer (`morphspec.distributed.fsdp`);
    every rank of the job calls `grow`.

    With `optimizer` (torch Adam, AdamW or SGD over the teacher's parameters), the result
    also carries an optimizer of the same class over the student's parameters whose state
    follows the growth (see `morphspec.growth.optim`). Verification (on by default) raises
    NotPreservingError when an exact family misses `rtol` in eval or train mode.
    """
    from morphspec.builder import build_arch

    if isinstance(teacher, nn.Module) and _sharded(teacher):
        from morphspec.distributed.fsdp import grow_sharded

        return grow_sharded(
            teacher, teacher_spec, student_spec, optimizer=optimizer, options=options,
            verify=verify, teacher_set=teacher_set, student_set=student_set, **option_values,
        )  # fmt: skip
    module = teacher if isinstance(teacher, nn.Module) else None
    check_optimizer(optimizer)
    state = dict(check_teacher(teacher))
    source = StateSource(state)
    opts = (options or GrowOptions()).with_values(**option_values)
    check_options(opts)
    seed, rtol, samples = opts.seed, opts.rtol, opts.samples or DEFAULT_SAMPLES
    t_arch = _arch(teacher_spec, teacher_set)
    plan = diff(t_arch, _arch(student_spec, student_set))
    if opts.interleave:
        plan = interleave(plan)
    grower = prepare(plan, source, opts, _label(teacher_spec, t_arch))
    tensors = ((k, source.get(k, copy=False)) for k in state)
    check_finite_tensors(tensors, Mark(source.path))
    t_arch, s_arch = plan.teacher, plan.student
    device = next(iter(state.values())).device if state else torch.device("cpu")
    grown = {
        e.key: _owned(e.produce(), state.get(grower.source_key(plan.source_key(e.key))))
        for e in student_entries(plan, grower, source)
    }
    student = build_arch(s_arch)
    student.load_state_dict(grown, strict=True, assign=True)
    student.to(device)
    training = module.training if module is not None else False
    student.train(training)
    _keep_frozen(student, module, plan)

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


def _sharded(module: nn.Module) -> bool:
    """Parameters are DTensors (FSDP2): growth goes through `distributed/fsdp.py`."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _keep_frozen(student: nn.Module, teacher: nn.Module | None, plan: Plan) -> None:
    """A student parameter grown from a frozen teacher parameter stays frozen."""
    if teacher is None:
        return
    frozen = {name for name, p in teacher.named_parameters() if not p.requires_grad}
    for name, p in student.named_parameters():
        if plan.source_key(name) in frozen:
            p.requires_grad_(False)


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
