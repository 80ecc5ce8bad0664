"""Does the student compute what the teacher computes? Measured, not assumed.

Both models are built in eval mode (batchnorm uses its running statistics, dropout is off),
fed the same seeded inputs (standard normal for float inputs, uniform token ids for int64),
and compared: `max_abs_err = max|s - t|`, `rel_err = max|s - t| / max|t|`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from morphspec.arch import Arch
from morphspec.defaults import DEFAULT_RTOL
from morphspec.errors import MorphError

MAX_INPUT_BYTES = 2 << 30  # seeded inputs: far more samples than a check needs

__all__ = ["Verification", "compare", "sample_inputs", "verify_checkpoints"]


@dataclass(frozen=True)
class Verification:
    max_abs_err: float
    rel_err: float
    max_abs_teacher: float
    rtol: float
    samples: int
    seed: int

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
        vocab = min((n.args["vocab"] for n in arch.nodes() if n.kind == "embedding"), default=2)
        return torch.randint(0, vocab, shape, generator=gen)
    return torch.randn(shape, generator=gen)


@torch.no_grad()
def compare(
    teacher: nn.Module,
    student: nn.Module,
    inputs: torch.Tensor,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> Verification:
    teacher.eval()
    student.eval()
    t = teacher(inputs).double()
    s = student(inputs).double()
    if t.shape != s.shape:
        raise ValueError(
            f"teacher output {tuple(t.shape)} and student output {tuple(s.shape)} differ"
        )
    max_abs = float((s - t).abs().max())
    scale = float(t.abs().max())
    rel = max_abs / scale if scale > 0 else max_abs
    return Verification(max_abs, rel, scale, rtol, int(inputs.shape[0]), seed)


def verify_checkpoints(
    teacher: Arch, teacher_ckpt: str | Path, student: Arch, student_ckpt: str | Path,
    samples: int = 32, seed: int = 0, rtol: float = DEFAULT_RTOL,
) -> Verification:  # fmt: skip
    """Compare the two checkpoints' models on the same seeded inputs, streaming each
    layer's tensors from its checkpoint only while it runs (`checkpoint.stream`), so memory
    stays near the largest layer plus activations rather than two whole models."""
    from morphspec.checkpoint import CheckpointReader, check_finite, check_keys
    from morphspec.checkpoint.stream import streamed_model

    with CheckpointReader(teacher_ckpt) as t_reader, CheckpointReader(student_ckpt) as s_reader:
        check_keys(t_reader, teacher.state_shapes(), teacher.spec.path)
        check_keys(s_reader, student.state_shapes(), student.spec.path)
        check_finite(t_reader)
        inputs = sample_inputs(teacher, samples, seed)
        with (
            streamed_model(teacher, t_reader) as t_model,
            streamed_model(student, s_reader) as s_model,
        ):
            return compare(t_model, s_model, inputs, rtol, seed)
