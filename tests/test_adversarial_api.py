"""The Python API's arguments (issue 18): `grow`, `load` and `probe` refuse bad arguments
up front with a ValueError or TypeError that names the argument and the fix, instead of a
generic Python error or a failure deep inside torch; a frozen teacher stays frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from adversarial import MLP, WIDE, write

import morphspec
from morphspec.errors import ArgumentError, ArgumentTypeError, MorphError
from morphspec.probe import probe

RESIDUAL = """\
morphspec: 1
name: res
input: {shape: [4]}
body:
  - residual: {name: r, body: [linear: {name: fc, out: 4}]}
  - linear: {name: head, out: 3}
"""


@pytest.fixture
def specs(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path, "t.yaml", MLP), write(tmp_path, "s.yaml", WIDE)


def test_a_teacher_on_the_meta_device_is_a_value_error(specs: tuple[Path, Path]) -> None:
    t, s = specs
    with torch.device("meta"):
        teacher = morphspec.build(t)
    with pytest.raises(ValueError, match="on the meta device") as err:
        morphspec.grow(teacher, t, s)
    assert isinstance(err.value, MorphError)  # the CLI prints it as a located problem


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"samples": 0}, ValueError, "samples must be at least 1, got 0"),
        ({"samples": -3}, ValueError, "samples must be at least 1"),
        ({"samples": "32"}, TypeError, "samples must be an int, not str"),
        ({"samples": True}, TypeError, "samples must be an int"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"noise": float("inf")}, ValueError, "noise must be finite"),
        ({"noise": "0.1"}, TypeError, "noise must be a number"),
        ({"rtol": -1.0}, ValueError, "rtol must be at least 0"),
        ({"family": "r2"}, ValueError, "family must be one of r2r"),
        ({"interleave": "yes"}, TypeError, "interleave must be True or False"),
    ],
)
def test_grow_options_are_checked(
    specs: tuple[Path, Path], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    t, s = specs
    with pytest.raises(error, match=words):
        morphspec.grow(morphspec.build(t), t, s, **kwargs)


def test_unsupported_optimizers_are_refused_before_growing(specs: tuple[Path, Path]) -> None:
    t, s = specs
    teacher = morphspec.build(t)
    lbfgs = torch.optim.LBFGS(teacher.parameters())
    with pytest.raises(ValueError, match="LBFGS is not supported") as err:
        morphspec.grow(teacher, t, s, optimizer=lbfgs)
    for name in ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW"):
        assert name in str(err.value)
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer"):
        morphspec.grow(teacher, t, s, optimizer="adam")
    adam = torch.optim.Adam(teacher.parameters())
    assert morphspec.grow(teacher, t, s, optimizer=adam).optimizer is not None


@pytest.mark.parametrize(
    ("teacher", "error", "words"),
    [
        (42, TypeError, "teacher must be a torch nn.Module or a state_dict"),
        ({"fc1.weight": [[1.0]]}, TypeError, "entry 'fc1.weight' is a list, not a tensor"),
    ],
)
def test_a_teacher_of_the_wrong_type_is_named(
    specs: tuple[Path, Path], teacher: Any, error: type[Exception], words: str
) -> None:
    t, s = specs
    with pytest.raises(error, match=words):
        morphspec.grow(teacher, t, s)


def test_load_takes_a_torch_dtype_not_a_string(specs: tuple[Path, Path], tmp_path: Path) -> None:
    t, _ = specs
    ckpt = morphspec.save(morphspec.build(t), tmp_path / "t.safetensors", t)
    with pytest.raises(TypeError, match=r"not the string 'float64': use torch\.float64") as err:
        morphspec.load(t, ckpt, dtype="float64")  # type: ignore[arg-type]
    assert isinstance(err.value, ArgumentTypeError)
    with pytest.raises(TypeError, match=r"use torch\.bfloat16"):
        morphspec.load(t, ckpt, dtype="torch.bfloat16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating-point dtype"):
        morphspec.load(t, ckpt, dtype=torch.int64)
    model = morphspec.load(t, ckpt, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64


def test_probe_checks_samples_batch_and_inputs(tmp_path: Path) -> None:
    spec = write(tmp_path, "res.yaml", RESIDUAL)
    for kwargs, words in (
        ({"samples": 0}, "samples must be at least 1, got 0"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"samples": 2.5}, "samples must be an int"),
    ):
        with pytest.raises((ValueError, TypeError), match=words) as err:
            probe(spec, **kwargs)
        assert isinstance(err.value, ArgumentError | ArgumentTypeError)
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        probe(spec, epsilon=float("nan"))
    bad = torch.randn(4, 4)
    bad[0, 0] = float("inf")
    with pytest.raises(MorphError, match="NaN or infinite"):
        probe(spec, inputs=bad)
    assert probe(spec, samples=4).samples == 4
    with torch.device("meta"):
        model = morphspec.build(spec)
    with pytest.raises(ValueError, match=r"model tensor 'r\.fc\.weight' is on the meta device"):
        probe(model, spec=spec)


def test_a_frozen_teacher_grows_a_frozen_student(specs: tuple[Path, Path]) -> None:
    t, s = specs
    teacher = morphspec.build(t)
    teacher.get_parameter("fc1.weight").requires_grad_(False)
    teacher.get_parameter("fc1.bias").requires_grad_(False)
    student = morphspec.grow(teacher, t, s).student
    frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
    assert frozen == {"fc1.weight", "fc1.bias"}
    unfrozen = morphspec.grow(morphspec.build(t), t, s).student
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_convert_checks_its_options_too(specs: tuple[Path, Path], tmp_path: Path) -> None:
    from morphspec.convert import convert

    t, s = specs
    ckpt = morphspec.save(morphspec.build(t), tmp_path / "t.safetensors", t)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="samples must be at least 1, got 0"):
        convert(t, s, ckpt, out, samples=0)
    with pytest.raises(TypeError, match="seed must be an int, not str"):
        convert(t, s, ckpt, out, seed="1")
    assert not out.exists()
