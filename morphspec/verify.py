"""Does the student compute what the teacher computes? Measured, not assumed.

Both models are run in eval mode (batchnorm uses its running statistics, dropout is off)
or in train mode (batchnorm normalises by the batch's own statistics; dropout stays off so
the check is deterministic), fed the same seeded inputs (standard normal for float inputs,
uniform token ids for int64), and compared: `max_abs_err = max|s - t|`,
`rel_err = max|s - t| / max|t|`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from morphspec.arch import Arch
from morphspec.defaults import DEFAULT_RTOL, DEFAULT_SAMPLES
from morphspec.errors import ArgumentError, MorphError
from morphspec.growth.kinds import rule_of
from morphspec.modes import batch_norms, both_modes, mode_free

MAX_INPUT_BYTES = 2 << 30  # seeded inputs: far more samples than a check needs
CHECK_FLOPS_PER_BYTE = 50
"""The conversion's own check may spend this many forward FLOPs (teacher and student, every
mode) per byte of student it wrote: on a 2-core x86 machine float32 forwards run at about
45 GFLOP/s per core and the conversion at 100 to 200 MB/s of CPU, so the forwards take a
fifth of the conversion or less (reading both checkpoints again costs about as much)."""
_CHUNK = 1 << 20  # outputs compared in float64 this many elements at a time

__all__ = [
    "Mode",
    "Verification",
    "check_comparable",
    "compare",
    "conversion_samples",
    "run_mode",
    "sample_inputs",
    "verify_checkpoints",
    "verify_modes",
]


Mode = Literal["eval", "train"]


@dataclass(frozen=True)
class Verification:
    max_abs_err: float
    rel_err: float
    max_abs_teacher: float
    rtol: float
    samples: int
    seed: int
    mode: Mode = "eval"

    @property
    def passed(self) -> bool:
        return self.rel_err <= self.rtol

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def sample_inputs(arch: Arch, samples: int, seed: int) -> torch.Tensor:
    """Seeded inputs for `arch`: normal floats, or token ids below the smallest vocab."""
    shape = (samples, *arch.input.dims)
    need = math.prod(shape) * 8
    if need > MAX_INPUT_BYTES:
        raise MorphError(
            f"--samples {samples} with input {arch.input} needs {need / 2**30:.1f} GiB of inputs"
            f" (limit {MAX_INPUT_BYTES / 2**30:.0f} GiB); use fewer --samples"
        )
    gen = torch.Generator().manual_seed(seed)
    if arch.input.layout == "tokens":
        vocab = arch.vocab() or 2
        return torch.randint(0, vocab, shape, generator=gen)
    return torch.randn(shape, generator=gen)


@contextmanager
def run_mode(model: nn.Module, mode: Mode) -> Iterator[nn.Module]:
    """`model` in `mode` (train mode with dropout off), its own modes restored after."""
    before = {m: m.training for m in model.modules()}
    model.train(mode == "train")
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        yield model
    finally:
        for m, training in before.items():
            m.training = training


@torch.no_grad()
def compare(
    teacher: nn.Module,
    student: nn.Module,
    inputs: torch.Tensor,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    mode: Mode = "eval",
) -> Verification:
    """rel_err of `student` against `teacher` on `inputs`. In train mode the batchnorm
    running statistics of both models are updated, as a training forward would."""
    with run_mode(teacher, mode), run_mode(student, mode):
        t = teacher(inputs)
        s = student(inputs)
    return _verdict(t, s, rtol, int(inputs.shape[0]), seed, mode)


def _verdict(
    t: torch.Tensor, s: torch.Tensor, rtol: float, samples: int, seed: int, mode: Mode
) -> Verification:
    if t.shape != s.shape:  # a ValueError to Python callers, a clean refusal to the CLI
        raise ArgumentError(
            f"teacher output {tuple(t.shape)} and student output {tuple(s.shape)} differ"
        )
    if not bool(torch.isfinite(t).all()):
        raise MorphError(
            f"the teacher itself computes NaN or infinity in {mode} mode on the seeded inputs"
            " (its weights are finite: look at its eps and scales); the student is not the"
            " cause, and nothing can be compared"
        )
    max_abs, scale = _max_errors(t.reshape(-1), s.reshape(-1))
    rel = max_abs / scale if scale > 0 else max_abs
    return Verification(max_abs, rel, scale, rtol, samples, seed, mode)


def _max_errors(t: torch.Tensor, s: torch.Tensor) -> tuple[float, float]:
    """max|s - t| and max|t| in float64, a chunk at a time: the values of converting both
    whole outputs to float64 (a float32 difference is exact there), without those copies
    (a language model's logits: samples x tokens x vocab)."""
    if not t.numel():
        return 0.0, 0.0
    errs, scales = [], []  # torch's max keeps a NaN (Python's max would drop it)
    for i in range(0, t.numel(), _CHUNK):
        a, b = t[i : i + _CHUNK].double(), s[i : i + _CHUNK].double()
        scales.append(a.abs().max())
        errs.append((b - a).abs_().max())  # not in place: .double() of float64 is no copy
    return float(torch.stack(errs).max()), float(torch.stack(scales).max())


def conversion_samples(teacher: Arch, student: Arch, student_bytes: int, modes: int) -> int:
    """How many inputs the conversion's own check feeds: as many as `CHECK_FLOPS_PER_BYTE`
    allows, at most DEFAULT_SAMPLES, at least 2 where a 1-D batchnorm is checked in train
    mode (it needs a batch) and 1 elsewhere. A growth that is not exact shows on almost any
    input (a language model's one sample is a sequence of tokens), so a few suffice to
    catch a wrong rule; `--samples` or `morph verify` (32 by default) check on more."""
    per_sample = (teacher.flops() + student.flops()) * max(1, modes)
    if per_sample <= 0:
        return DEFAULT_SAMPLES
    batch = modes > 1 and any(
        (rule := rule_of(n.kind)) is not None and rule.absorbs_scale and n.inp.layout != "image"
        for a in (teacher, student)
        for n in a.nodes()
    )  # a 1-D batch norm (running statistics) needs 2 samples in train mode; a 2-D one has
    # H x W positions each
    least = 2 if batch else 1
    return max(least, min(DEFAULT_SAMPLES, CHECK_FLOPS_PER_BYTE * student_bytes // per_sample))


def check_comparable(teacher: Arch, student: Arch) -> None:
    """Both models take the same input and give the same output shape, or a clear refusal
    (an MLP pair verified against a ResNet pair once failed deep in torch)."""
    for side in ("input", "output"):
        mine, theirs = getattr(student, side), getattr(teacher, side)
        if mine != theirs:
            raise MorphError(
                f"the student '{student.name}' has {side} {mine} but the teacher"
                f" '{teacher.name}' has {theirs}; verify compares two models of one input and"
                " output (check the order of the arguments)",
                student.spec.mark(()),
            )


def verify_checkpoints(
    teacher: Arch, teacher_ckpt: str | Path, student: Arch, student_ckpt: str | Path,
    samples: int = 32, seed: int = 0, rtol: float = DEFAULT_RTOL,
    modes: tuple[Mode, ...] = ("eval", "train"), teacher_finite: bool = False,
) -> Verification:  # fmt: skip
    """The worst of `verify_modes` (its `mode` says which)."""
    results = verify_modes(
        teacher, teacher_ckpt, student, student_ckpt, samples, seed, rtol, modes, teacher_finite
    )
    return max(results, key=lambda v: v.rel_err)


def verify_modes(
    teacher: Arch, teacher_ckpt: str | Path, student: Arch, student_ckpt: str | Path,
    samples: int = 32, seed: int = 0, rtol: float = DEFAULT_RTOL,
    modes: tuple[Mode, ...] = ("eval", "train"), teacher_finite: bool = False,
) -> list[Verification]:  # fmt: skip
    """Compare the two checkpoints' models on the same seeded inputs in each of `modes`,
    streaming each layer's tensors from its checkpoint only while it runs
    (`morphspec.streamed`), so memory stays near the largest layer plus activations rather
    than two whole models. A teacher that is not finite is refused first; a float64
    teacher is compared in float64. Models that compute the same in both modes (no batch
    statistics, no dropout of their own: a language model) run once; models whose only
    mode-dependent layers are batch norms run both modes in one pass (`modes.py`)."""
    from morphspec.checkpoint import check_finite, check_keys
    from morphspec.checkpoint.loader import pool_for
    from morphspec.interop.folder import open_checkpoint
    from morphspec.streamed import streamed_model

    check_comparable(teacher, student)
    with (
        open_checkpoint(teacher_ckpt, teacher) as t_reader,
        open_checkpoint(student_ckpt, student) as s_reader,
    ):
        check_keys(t_reader, teacher.state_shapes(), teacher.spec.path)
        check_keys(s_reader, student.state_shapes(), student.spec.path)
        if not teacher_finite:  # `convert` checked it already (1 GB: about 1 s)
            check_finite(t_reader)
        # A float64 teacher is checked in float64 (its exactness is what is promised);
        # lower precisions in float32, which their round-off already dominates.
        wide = any(t_reader.dtype(k) == torch.float64 for k in t_reader)
        dtype = torch.float64 if wide else None
        inputs = sample_inputs(teacher, samples, seed)
        if wide and inputs.is_floating_point():
            inputs = inputs.double()
        pool = pool_for(t_reader, s_reader)  # the models run one after the other
        results: list[Verification] = []
        for mode in modes:
            with (
                streamed_model(teacher, t_reader, dtype, pool) as t_model,
                streamed_model(student, s_reader, dtype, pool) as s_model,
            ):
                if results and mode_free(t_model) and mode_free(s_model):
                    results.append(replace(results[0], mode=mode))  # the same computation
                    continue
                t_norms, s_norms = batch_norms(t_model), batch_norms(s_model)
                paired = t_norms is not None and s_norms is not None and (t_norms or s_norms)
                if sorted(modes) == ["eval", "train"] and paired:
                    assert t_norms is not None and s_norms is not None
                    return _both(t_model, s_model, t_norms + s_norms, inputs, rtol, seed, modes)
                results.append(compare(t_model, s_model, inputs, rtol, seed, mode))
        return results


@torch.no_grad()
def _both(
    teacher: nn.Module, student: nn.Module, norms: list[nn.Module], inputs: torch.Tensor,
    rtol: float, seed: int, modes: tuple[Mode, ...],
) -> list[Verification]:  # fmt: skip
    """Eval and train mode in one forward of [inputs; inputs] (`modes.both_modes`)."""
    n = int(inputs.shape[0])
    doubled = torch.cat((inputs, inputs))
    with run_mode(teacher, "eval"), run_mode(student, "eval"), both_modes(norms):
        t, s = teacher(doubled), student(doubled)
    got = {
        "eval": _verdict(t[:n], s[:n], rtol, n, seed, "eval"),
        "train": _verdict(t[n:], s[n:], rtol, n, seed, "train"),
    }
    return [got[m] for m in modes]
