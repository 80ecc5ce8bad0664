"""Reversible units: the SPEC.md formulas, exact inverses, keys, channel_pad, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from yaml_marks import where

from morphspec import build, load_spec, resolve
from morphspec.builder import weight_smoothness
from morphspec.builder.reversible import ReversibleUnit
from morphspec.errors import SpecError

HEAD = "morphspec: 1\nname: t\n"
KINDS = ("hamiltonian", "midpoint", "leapfrog")


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + text, encoding="utf-8")
    return path


def unit_model(
    tmp_path: Path, kind: str, steps: int = 3, c: int = 4, h: float = 0.3
) -> torch.nn.Module:
    text = (f"input: {{shape: [{c}, 5, 5]}}\nbody:\n"
            f"  - {kind}: {{name: u, steps: {steps}, hidden: 3, h: {h}, act: tanh}}\n")  # fmt: skip
    torch.manual_seed(1)
    return build(spec_file(tmp_path, text)).double()


def force(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Kᵀσ(K x + b) written out with torch's conv and transposed conv, σ = tanh."""
    return F.conv_transpose2d(torch.tanh(F.conv2d(x, w, b, padding=1)), w, padding=1)


def reference(kind: str, sd: dict[str, Tensor], x: Tensor, steps: int, h: float) -> Tensor:
    """SPEC.md's table, transcribed literally (midpoint's F = -Kᵀσ(K Y + b))."""
    if kind == "hamiltonian":
        y, z = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2 :]
        for j in range(steps):
            y = y + h * force(z, sd[f"u.{j}.k1.weight"], sd[f"u.{j}.b1"])
            z = z - h * force(y, sd[f"u.{j}.k2.weight"], sd[f"u.{j}.b2"])
        return torch.cat([y, z], 1)
    ys = [x]
    for j in range(steps):
        f = force(ys[j], sd[f"u.{j}.k.weight"], sd[f"u.{j}.b"])
        if kind == "midpoint":
            ys.append(ys[j] - h * f if j == 0 else ys[j - 1] - 2 * h * f)
        else:
            ys.append(ys[j] - h * h / 2 * f if j == 0 else 2 * ys[j] - ys[j - 1] - h * h * f)
    return ys[-1]


@pytest.mark.parametrize("kind", KINDS)
def test_units_compute_the_spec_formulas(tmp_path: Path, kind: str) -> None:
    model = unit_model(tmp_path, kind)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    sd = model.state_dict()
    got = model(x)
    torch.testing.assert_close(got, reference(kind, sd, x, 3, 0.3), rtol=0, atol=1e-12)
    assert (got - x).abs().max() > 1e-3  # the steps do something


@pytest.mark.parametrize("kind", KINDS)
def test_each_step_inverse_rebuilds_its_input(tmp_path: Path, kind: str) -> None:
    unit = unit_model(tmp_path, kind).get_submodule("u")
    assert isinstance(unit, ReversibleUnit)
    state = unit.initial_state(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    for step in unit.steps:
        after = step(state)
        back = step.inverse(after)
        for a, b in zip(back, state, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
        state = after


def test_keys_follow_the_spec(tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        "input: {shape: [4, 6, 6]}\nbody:\n"
        "  - hamiltonian: {name: ham, steps: 2, hidden: 5}\n"
        "  - channel_pad: {name: pad, out: 6}\n"
        "  - leapfrog: {name: leap, steps: 1, hidden: 3, kernel: 5}\n"
        "  - midpoint: {name: mid, steps: 1, hidden: 2, kernel: 1}\n",
    )
    arch = resolve(load_spec(path))
    expect = {f"ham.{j}.{p}": s for j in range(2)
              for p, s in (("k1.weight", (5, 2, 3, 3)), ("b1", (5,)),
                           ("k2.weight", (5, 2, 3, 3)), ("b2", (5,)))}  # fmt: skip
    expect |= {"leap.0.k.weight": (3, 6, 5, 5), "leap.0.b": (3,)}
    expect |= {"mid.0.k.weight": (2, 6, 1, 1), "mid.0.b": (2,)}
    assert dict(arch.state_shapes()) == expect
    model = build(arch)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expect
    assert arch.output.dims == (6, 6, 6)


def test_channel_pad_appends_zero_channels(tmp_path: Path) -> None:
    path = spec_file(
        tmp_path, "input: {shape: [3, 4, 4]}\nbody:\n  - channel_pad: {out: 5}\n"
        "  - global_avgpool\n  - channel_pad: {out: 7}\n"
    )  # fmt: skip
    model = build(path)
    x = torch.randn(2, 3, 4, 4)
    inner = model.get_submodule("0")(x)
    assert inner.shape == (2, 5, 4, 4)
    assert torch.equal(inner[:, :3], x) and not inner[:, 3:].any()
    out = model(x)
    assert out.shape == (2, 7) and not out[:, 5:].any()
    assert resolve(load_spec(path)).state_shapes() == {}


@pytest.mark.parametrize(
    ("body", "needle", "message"),
    [
        ("  - hamiltonian: {steps: 1, hidden: 2}\n", "hamiltonian",
         "needs an even count, got 3; put a 'channel_pad' before it"),
        ("  - channel_pad: {out: 4}\n  - midpoint: {steps: 1, hidden: 2, kernel: 2}\n",
         "kernel: ^2", "needs an odd kernel so that padding (kernel-1)/2 keeps the size, got 2"),
        ("  - channel_pad: {out: 2}\n", "out: ^2", "'out' must be at least the input's 3, got 2"),
        ("  - flatten\n  - leapfrog: {steps: 1, hidden: 2}\n", "leapfrog",
         "needs a [C, H, W] input"),
    ],
)  # fmt: skip
def test_shape_errors_are_refused_at_resolve_time_with_their_place(
    tmp_path: Path, body: str, needle: str, message: str
) -> None:
    path = spec_file(tmp_path, "input: {shape: [3, 8, 8]}\nbody:\n" + body)
    with pytest.raises(SpecError) as info:
        resolve(load_spec(path))
    text = str(info.value)
    assert text.startswith(where(path, needle) + ": "), text
    assert message in text


def test_weight_smoothness_sums_squared_differences_of_consecutive_steps(
    tmp_path: Path,
) -> None:
    model = unit_model(tmp_path, "hamiltonian", steps=3)
    sd = model.state_dict()
    expect = sum(
        ((sd[f"u.{j}.{p}"] - sd[f"u.{j - 1}.{p}"]) ** 2).sum()
        for j in (1, 2) for p in ("k1.weight", "b1", "k2.weight", "b2")
    )  # fmt: skip
    got = weight_smoothness(model)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=0)
    got.backward()  # a training loss term: it has gradients
    grad = model.get_submodule("u.0.k1").weight.grad
    assert grad is not None
    want = -2 * (sd["u.1.k1.weight"] - sd["u.0.k1.weight"])
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=0)
    with torch.no_grad():
        for j in (1, 2):
            for a, b in zip(model.get_submodule(f"u.{j}").parameters(),
                            model.get_submodule("u.0").parameters(), strict=True):  # fmt: skip
                a.copy_(b)
    assert weight_smoothness(model).item() == 0.0
    assert weight_smoothness(torch.nn.Linear(2, 2)).item() == 0.0
