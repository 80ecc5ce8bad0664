"""The drift ratio: do the first optimizer steps move the student as little as the teacher?

Function preservation at step 0 is not enough: a grown network is grown to be trained. Both
models take `k` steps of the same optimizer (fresh state, same learning rate) on the same
seeded batches (random inputs, random class targets, cross-entropy over the output's
channel dimension), in train mode with dropout off. On a fixed probe batch, in the same
mode, the drift ratio is

    ‖f_student(after k) − f_teacher(before)‖ / ‖f_teacher(after k) − f_teacher(before)‖

so 1 means the growth moved the function exactly as much as training the teacher would,
and a large value means the student's first steps undo the function it inherited (a new
block whose batchnorm rescales a near-zero output to unit variance does that).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from morphspec.arch import Arch
from morphspec.defaults import MAX_LR, MAX_TRAIN_STEPS
from morphspec.errors import MorphError
from morphspec.verify import run_mode, sample_inputs

__all__ = ["DEFAULT_LR", "Drift", "OptimizerName", "drift_ratio"]

OptimizerName = Literal["sgd", "adam"]
DEFAULT_LR: dict[str, float] = {"sgd": 0.01, "adam": 1e-3}
SGD_MOMENTUM = 0.9


@dataclass(frozen=True)
class Drift:
    steps: int
    optimizer: str
    lr: float
    student_moved: float
    teacher_moved: float

    @property
    def ratio(self) -> float:
        if self.teacher_moved == 0:
            return float("inf") if self.student_moved else 1.0
        return self.student_moved / self.teacher_moved

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "drift_ratio": self.ratio}


def _check(steps: int, optimizer: str, lr: float) -> None:
    """Steps in [0, MAX_TRAIN_STEPS], a known optimizer, a finite rate in (0, MAX_LR]."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_TRAIN_STEPS:
        raise MorphError(
            f"--train-steps must be a whole number from 0 to {MAX_TRAIN_STEPS}, got {steps!r}"
        )
    if optimizer not in DEFAULT_LR:
        raise MorphError(f"--optimizer must be one of {', '.join(DEFAULT_LR)}, got {optimizer!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= MAX_LR:
        raise MorphError(f"--lr must be a finite number in (0, {MAX_LR:g}], got {lr!r}")


def _optimizer(name: OptimizerName, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)


def _loss(out: torch.Tensor, target: torch.Tensor, arch: Arch) -> torch.Tensor:
    """Cross-entropy over the output's channel dimension (the last one for sequences)."""
    if arch.output.layout == "sequence":
        out = out.transpose(1, 2)
    return nn.functional.cross_entropy(out, target)


def _targets(arch: Arch, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    shape = list(out.shape)
    channel_dim = out.dim() - 1 if arch.output.layout == "sequence" else 1
    classes = shape.pop(channel_dim)
    return torch.randint(0, classes, shape, generator=gen).to(out.device)


def _batch(arch: Arch, batch: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """One seeded batch, in the dtype and on the device of the models' parameters."""
    x = sample_inputs(arch, batch, seed)
    return (x.to(like.dtype) if x.is_floating_point() else x).to(like.device)


def _train(
    model: nn.Module, arch: Arch, name: OptimizerName, lr: float, steps: int, batch: int,
    seed: int,
) -> None:  # fmt: skip
    """`steps` steps, each on its own seeded batch drawn only when it is needed (so memory
    does not grow with the steps)."""
    opt = _optimizer(name, [p for p in model.parameters() if p.requires_grad], lr)
    gen = torch.Generator().manual_seed(seed + 1)
    like = next(model.parameters())
    with run_mode(model, "train"):
        for i in range(steps):
            x = _batch(arch, batch, seed + 1 + i, like)
            out = model(x)
            loss = _loss(out, _targets(arch, out, gen), arch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


@torch.no_grad()
def _outputs(model: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    with run_mode(model, "train"):
        return model(probe).double()


def drift_ratio(
    teacher: nn.Module,
    student: nn.Module,
    arch: Arch,
    *,
    steps: int = 1,
    optimizer: OptimizerName = "sgd",
    lr: float | None = None,
    batch: int = 32,
    seed: int = 0,
) -> Drift:
    """Train copies of both models `steps` steps on identical batches; see the module doc.
    The models passed in are not changed."""
    rate = DEFAULT_LR[optimizer] if lr is None else lr
    _check(steps, optimizer, rate)
    probe = _batch(arch, batch, seed, next(teacher.parameters()))
    t, s = copy.deepcopy(teacher), copy.deepcopy(student)
    before = _outputs(copy.deepcopy(teacher), probe)
    _train(t, arch, optimizer, rate, steps, batch, seed)
    _train(s, arch, optimizer, rate, steps, batch, seed)
    teacher_moved = float((_outputs(t, probe) - before).norm())
    student_moved = float((_outputs(s, probe) - before).norm())
    return Drift(steps, optimizer, rate, student_moved, teacher_moved)
