"""R2R conversions of the shipped examples reproduce the teacher (the issue's list).

Each teacher gets non-trivial batchnorm statistics and affine parameters first (fresh
batchnorms are the identity-ish mean 0 / var 1, which would hide a wrong statistic), is
converted with verification on, and is then checked independently here: eval mode, seeded
inputs, rel_err = max|s - t| / max|t| <= 1e-5 in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher
from safetensors.torch import load_file

import morphspec
from morphspec.convert import convert
from morphspec.verify import compare, sample_inputs

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes, so -0.0 vs 0.0 and NaN payloads count as differences."""
    return t.view(torch.uint8) if t.dtype.is_floating_point and t.dim() else t


def grow(
    tmp_path: Path,
    teacher: str,
    student: str,
    teacher_set: list[str] | None = None,
    student_set: list[str] | None = None,
    samples: int = 16,
) -> float:
    """Convert, check exactness independently, check teacher bits; return rel_err."""
    t_spec, s_spec = SPECS / teacher, SPECS / student
    ckpt = make_teacher(t_spec, teacher_set, out=tmp_path / "teacher.safetensors")
    out = tmp_path / "student.safetensors"
    result = convert(
        t_spec, s_spec, ckpt, out, teacher_set=teacher_set, student_set=student_set,
        samples=samples,
    )  # fmt: skip
    assert result.written and out.is_file()
    assert result.verification is not None and result.verification.passed
    t_model = morphspec.load(t_spec, ckpt, set=teacher_set)
    s_model = morphspec.load(s_spec, out, set=student_set)
    arch = morphspec.resolve(morphspec.load_spec(t_spec, teacher_set))
    check = compare(t_model, s_model, sample_inputs(arch, samples, seed=123))
    assert check.rel_err <= 1e-5, check
    t_sd, s_sd = load_file(str(ckpt)), load_file(str(out))
    grew = False
    for key, t in t_sd.items():
        s = s_sd[key]
        assert s.dtype == t.dtype
        leading = s[tuple(slice(0, n) for n in t.shape)].contiguous()
        assert torch.equal(_bits(leading), _bits(t)), f"{key} is not bit-identical"
        grew |= s.shape != t.shape
    assert grew or set(s_sd) != set(t_sd), "the student is the teacher: nothing was grown"
    return check.rel_err


def test_mlp_widen(tmp_path: Path) -> None:
    grow(tmp_path, "mlp.yaml", "mlp_wide.yaml")


def test_smallconv_16_to_32_filters(tmp_path: Path) -> None:
    grow(tmp_path, "smallconv.yaml", "smallconv_wide.yaml")


def test_resnet_cifar18_whole_network_widen(tmp_path: Path) -> None:
    """The paper's NCT-R2WIDERR: ResNetCifar-18(2^-3.5) -> ResNetCifar-18(2^-3)."""
    grow(
        tmp_path, "resnet_cifar18.yaml", "resnet_cifar18.yaml",
        teacher_set=[f"r={2**-3.5}"], student_set=[f"r={2**-3}"],
    )  # fmt: skip


def test_resnet_cifar10_to_18_deepen(tmp_path: Path) -> None:
    """The paper's deepen: ResNetCifar-10(2^-3) -> ResNetCifar-18(2^-3)."""
    grow(tmp_path, "resnet_cifar10.yaml", "resnet_cifar18.yaml")


def test_resnet_cifar18_paper_widen_by_extends(tmp_path: Path) -> None:
    grow(tmp_path, "resnet_cifar18.yaml", "resnet_cifar18_wide.yaml")


def test_preact_resnet_widen_and_deepen_at_once(tmp_path: Path) -> None:
    grow(
        tmp_path, "preact_resnet.yaml", "preact_resnet.yaml",
        teacher_set=["L=1", "width=5"], student_set=["L=3", "width=8"],
    )  # fmt: skip


def test_resnet18_to_resnet34_depth_small(tmp_path: Path) -> None:
    """resnet18.yaml -> resnet34.yaml at width r=1/8 (the full-size run is marked slow)."""
    grow(tmp_path, "resnet18.yaml", "resnet34.yaml", ["r=0.125"], ["r=0.125"], samples=2)


@pytest.mark.slow
def test_resnet18_to_resnet34_full_size(tmp_path: Path) -> None:
    grow(tmp_path, "resnet18.yaml", "resnet34.yaml", samples=2)
