"""Shared helpers for growth tests: seeded teachers, exact conversion checks, spec files.

`make_teacher` builds a spec's model with seeded weights and makes every normalisation
layer non-trivial (batchnorm running statistics, weight and bias drawn at random), so an
exactness check cannot pass by accident through identity normalisation. `check_exact`
runs the whole job, `convert(..., verify=True)`, then checks the result independently:
the student reproduces the teacher on its own inputs, every teacher tensor sits bit for
bit in the leading slice of the student's tensor, and the new channels are not all zero
where the growth rule leaves them free.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

import morphspec
from morphspec.convert import ConvertResult, convert
from morphspec.growth.plan import Plan
from morphspec.spec.load import SetArg
from morphspec.verify import DEFAULT_RTOL, Verification, compare, sample_inputs

__all__ = [
    "assert_new_channels_free",
    "assert_teacher_embedded",
    "check_exact",
    "leading_slice",
    "make_teacher",
    "one_intraop_thread",
    "read_tensors",
    "same_bits",
    "write_spec",
]


@contextmanager
def one_intraop_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, then restore the count. The growth tests run many
    tiny models: one thread is faster there, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_spec(path: Path, text: str) -> Path:
    """Write YAML `text` (dedented) to `path` and return the path."""
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _nontrivial(model: nn.Module, gen: torch.Generator) -> None:
    """Random batchnorm statistics, weights and biases, and random norm gains and shifts."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen))
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
            if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                if getattr(mod, "weight", None) is not None:
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen))


def make_teacher(
    spec_path: str | Path, set: SetArg = None, seed: int = 0, out: str | Path | None = None
) -> Path:
    """Build `spec_path` with weights seeded by `seed`, make its norms non-trivial, save it.

    The checkpoint goes to `out`, by default `<spec stem>.teacher.safetensors` beside the
    spec. The global torch RNG is left as it was.
    """
    spec_path = Path(spec_path)
    arch = morphspec.resolve(morphspec.load_spec(spec_path, set))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = morphspec.build(arch)
    _nontrivial(model, torch.Generator().manual_seed(seed + 1))
    target = Path(out) if out is not None else spec_path.with_suffix(".teacher.safetensors")
    morphspec.save(model, target, spec=arch)
    return target


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a single-file safetensors checkpoint."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (so -0.0 != 0.0 and NaN payloads count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def leading_slice(student: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    """The part of `student` at indices below `shape` in every dimension."""
    return student[tuple(slice(0, n) for n in shape)]


def assert_teacher_embedded(
    teacher: Mapping[str, torch.Tensor], student: Mapping[str, torch.Tensor]
) -> None:
    """Every teacher tensor is copied bit for bit into the leading slice of the student's."""
    missing = sorted(set(teacher) - set(student))
    assert not missing, f"teacher keys missing from the student: {missing}"
    for key, t in teacher.items():
        s = student[key]
        assert s.dtype == t.dtype, f"{key}: dtype {t.dtype} became {s.dtype}"
        assert s.dim() == t.dim(), f"{key}: rank {t.dim()} became {s.dim()}"
        assert all(a <= b for a, b in zip(t.shape, s.shape, strict=True)), (
            f"{key}: student shape {tuple(s.shape)} does not contain {tuple(t.shape)}"
        )
        assert same_bits(leading_slice(s, t.shape), t), (
            f"{key}: the teacher's values are not copied bit-identically into the student"
        )


def assert_new_channels_free(plan: Plan, student: Mapping[str, torch.Tensor]) -> None:
    """The growth did something: what the rule leaves free is not all zero.

    For every widened space, the new rows of some producer weight are not all zero, and
    when the space gained (L, R) pairs, the new columns of some old consumer row are not
    all zero (the Z of [W, Z, -Z]). Every appended block has a non-zero weight.
    """
    t_shapes = plan.teacher.state_shapes()
    for space in plan.graph.spaces:
        a = plan.teacher_size[space.id]
        if not a or space.size <= a:
            continue
        rows = [
            student[r.key].narrow(r.dim, a * r.mult, (space.size - a) * r.mult)
            for r in space.producers()
            if student[r.key].dim() >= 2
        ]
        assert rows, f"widened space '{space.label}' has no producer weight"
        assert any(bool(x.abs().sum() > 0) for x in rows), (
            f"the new rows of every producer of space '{space.label}' are all zero"
        )
        pairs = (space.size - a) // 2
        if not pairs:
            continue
        cols = []
        for r in space.consumers():
            if r.key not in t_shapes or r.dim == 0:
                continue
            old = student[r.key].narrow(0, 0, t_shapes[r.key][0])
            cols.append(old.narrow(r.dim, a * r.mult, pairs * r.mult))
        if cols:
            assert any(bool(x.abs().sum() > 0) for x in cols), (
                f"the new (Z) columns of every consumer of space '{space.label}' are all zero"
            )
    for block in plan.new_blocks:
        weights = [v for k, v in student.items() if k.startswith(block + ".") and v.dim() >= 2]
        assert weights, f"new block '{block}' has no weights"
        assert any(bool(w.abs().sum() > 0) for w in weights), (
            f"every weight of new block '{block}' is zero"
        )


def check_exact(
    teacher_spec: str | Path,
    student_spec: str | Path,
    tmp_path: Path,
    *,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
    teacher_seed: int = 0,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    teacher_ckpt: str | Path | None = None,
    expect_growth: bool = True,
    **convert_kwargs: Any,
) -> Verification:
    """Grow a seeded teacher into the student and prove the student computes the same thing.

    Runs `convert(..., verify=True)`, then checks independently (fresh inputs, fp32, eval
    mode) that `rel_err <= rtol`, that the teacher's tensors are embedded bit-identically,
    and, with `expect_growth`, that the plan did something and its free channels are not
    all zero. Returns convert's own Verification.
    """
    tmp_path = Path(tmp_path)
    if teacher_ckpt is None:
        teacher_ckpt = make_teacher(
            teacher_spec, teacher_set, teacher_seed, out=tmp_path / "teacher.safetensors"
        )
    out = tmp_path / "student.safetensors"
    result: ConvertResult = convert(
        teacher_spec,
        student_spec,
        teacher_ckpt,
        out,
        force=True,
        verify=True,
        rtol=rtol,
        seed=seed,
        teacher_set=teacher_set,
        student_set=student_set,
        **convert_kwargs,
    )
    ver = result.verification
    assert result.written and out.is_file()
    assert ver is not None and ver.passed and ver.rel_err <= rtol, ver
    assert ver.max_abs_teacher > 0, "the teacher outputs zeros: the check proves nothing"

    teacher_t, student_t = read_tensors(teacher_ckpt), read_tensors(out)
    assert set(student_t) == set(result.plan.student.state_shapes())
    assert_teacher_embedded(teacher_t, student_t)
    if expect_growth:
        assert result.plan.ops, "the plan is empty: nothing grew"
        assert_new_channels_free(result.plan, student_t)

    # An independent check of convert's verification: other inputs, own comparison.
    t_model = morphspec.load(result.plan.teacher, teacher_ckpt)
    s_model = morphspec.load(result.plan.student, out)
    own = compare(t_model, s_model, sample_inputs(result.plan.teacher, 8, seed + 12345), rtol)
    assert own.rel_err <= rtol, f"independent check: {own}"
    return ver
