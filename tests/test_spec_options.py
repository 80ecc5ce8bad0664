"""The options real checkpoints need: gelu's tanh form, tied heads, rope_theta, norms' eps.

Each is checked against an independent float64 computation (not against the builder's own
code), and each bad value is refused with its YAML place.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from yaml_marks import where

import morphspec
from morphspec.arch import resolve
from morphspec.builder.layers import RMSNorm, apply_rope
from morphspec.errors import PlanRefused, SpecError
from morphspec.growth.families import GrowOptions, make_family
from morphspec.growth.plan import diff
from morphspec.spec import load_spec

HEAD = "morphspec: 1\nname: t\n"
TOKENS = "input: {shape: [5], dtype: int64}\n"


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path) -> str:
    with pytest.raises(SpecError) as err:
        resolve(load_spec(path))
    return str(err.value)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_tanh_is_gpt2s_gelu_new_as_a_layer_and_as_an_mlp_act(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        HEAD + "input: {shape: [3, 4]}\nbody:\n  - gelu: {approximate: tanh}\n"
        "  - mlp: {name: m, hidden: 6, act: {gelu: {approximate: tanh}}}\n",
    )
    model = morphspec.build(spec).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64) * 3
    m = model.get_submodule("m")
    h = _gelu_tanh(x)
    want = F.linear(_gelu_tanh(F.linear(h, m.up_proj.weight, m.up_proj.bias)),
                    m.down_proj.weight, m.down_proj.bias)  # fmt: skip
    assert torch.allclose(model(x), want, rtol=0, atol=1e-12)
    # and the default stays the exact erf form, which differs measurably
    exact = morphspec.build(
        _write(tmp_path, HEAD + "input: {shape: [4]}\nbody: [gelu]\n", "e.yaml")
    )
    assert (exact(x.float()) - _gelu_tanh(x).float()).abs().max() > 1e-5


@pytest.mark.parametrize(
    ("layer", "needle"),
    [
        ("gelu: {approximate: fast}", "approximate: ^fast"),
        ("mlp: {hidden: 4, act: {gelu: {approximate: x}}}", "act: ^{"),
        ("mlp: {hidden: 4, act: {gelu: {}, relu: {}}}", "act: ^{"),
    ],
)
def test_bad_activation_options_are_refused_with_their_place(
    tmp_path: Path, layer: str, needle: str
) -> None:
    spec = _write(tmp_path, HEAD + f"input: {{shape: [4]}}\nbody:\n  - {layer}\n")
    message = _refused(spec)
    assert message.startswith(where(spec, needle)), message


TIED = (
    HEAD
    + TOKENS
    + """vars: {vocab: 11, dim: 4}
body:
  - embedding: {name: wte, vocab: vocab, dim: dim}
  - layernorm: {name: ln}
  - linear: {name: head, out: vocab, tie: wte}
"""
)


def test_a_tied_head_owns_no_key_and_shares_the_embedding_parameter(tmp_path: Path) -> None:
    spec = _write(tmp_path, TIED)
    arch = resolve(load_spec(spec))
    assert set(arch.state_shapes()) == {"wte.weight", "ln.weight", "ln.bias"}
    model = morphspec.build(arch).double()
    assert set(model.state_dict()) == set(arch.state_shapes())
    assert model.get_submodule("head").weight is model.get_submodule("wte").weight
    assert len(list(model.parameters())) == 3
    ids = torch.tensor([[0, 3, 10, 2, 2]])
    wte = model.get_submodule("wte").weight
    h = F.layer_norm(
        wte[ids], (4,), model.get_submodule("ln").weight, model.get_submodule("ln").bias
    )
    assert torch.allclose(model(ids), h @ wte.T, rtol=0, atol=1e-12)
    # a saved and reloaded model keeps the tie: one tensor on disk, one Parameter in memory
    with torch.no_grad():
        wte.add_(1.0)
    morphspec.save(model, tmp_path / "t.safetensors", arch)
    again = morphspec.load(arch, tmp_path / "t.safetensors").double()
    assert torch.equal(again.get_submodule("head").weight, wte.float().double())
    assert again.get_submodule("head").weight is again.get_submodule("wte").weight


@pytest.mark.parametrize(
    ("change", "needle", "words"),
    [
        ("tie: wte}", "tie: ^wtx", "did you mean 'wte'"),
        ("tie: ln}", "tie: ^ln", "is a layernorm"),
        ("tie: wte, bias: true}", "bias: ^true", "no bias"),
    ],
)
def test_bad_ties_are_refused_with_their_place(
    tmp_path: Path, change: str, needle: str, words: str
) -> None:
    text = TIED.replace("tie: wte}", change)
    if needle.startswith("tie: ^wtx"):
        text = TIED.replace("tie: wte}", "tie: wtx}")
    spec = _write(tmp_path, text)
    message = _refused(spec)
    assert message.startswith(where(spec, needle)), message
    assert words in message


def test_a_tie_whose_shapes_disagree_is_refused(tmp_path: Path) -> None:
    spec = _write(tmp_path, TIED.replace("out: vocab", "out: 12"))
    message = _refused(spec)
    assert message.startswith(where(spec, "tie: ^wte")), message
    assert "[12, 4]" in message and "[11, 4]" in message


def test_growth_refuses_to_widen_a_tied_pair(tmp_path: Path) -> None:
    mlp = TIED.replace("  - layernorm: {name: ln}\n", "  - mlp: {name: ln, hidden: 8}\n")
    teacher = resolve(load_spec(_write(tmp_path, mlp, "t.yaml")))
    student = resolve(load_spec(_write(tmp_path, mlp.replace("dim: 4", "dim: 6"), "s.yaml")))
    plan = diff(teacher, student)  # planned; every exact family refuses it
    for family in ("r2r", "net2net", "netmorph"):
        with pytest.raises(PlanRefused, match="tied pair widens") as err:
            make_family(family, plan, GrowOptions())
        assert err.value.problems[0].mark == student.node("head").mark
    # widening what the tie does not touch is still planned
    wide = resolve(load_spec(_write(tmp_path, mlp.replace("hidden: 8", "hidden: 10"), "w.yaml")))
    assert diff(teacher, wide).ops


def _rope_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotation of pairs (i, i + d/2) by angle pos / theta**(2i/d), all in float64."""
    t, d = x.shape[-2], x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    ang = torch.arange(t, dtype=torch.float64)[:, None] / theta ** (2 * i / d)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()), -1)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rope_theta_sets_the_rotary_base(tmp_path: Path, theta: float) -> None:
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    # the table is float32 (Hugging Face's), so agreement is to float32 angles
    assert torch.allclose(apply_rope(x, theta), _rope_reference(x, theta), atol=1e-5)
    spec = _write(
        tmp_path,
        HEAD + "input: {shape: [7, 8]}\nbody:\n"
        f"  - attention: {{name: a, heads: 2, head_dim: 4, rope: true, rope_theta: {theta}}}\n",
    )
    attn = morphspec.build(spec).get_submodule("a")
    assert attn.rope_base == theta


def test_rope_theta_must_be_positive(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        HEAD + "input: {shape: [7, 8]}\nbody:\n"
        "  - attention: {heads: 2, head_dim: 4, rope: true, rope_theta: 0}\n",
    )
    message = _refused(spec)
    assert message.startswith(where(spec, "rope_theta: ^0")), message


def test_norm_eps_reaches_the_modules(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        HEAD + "input: {shape: [3, 4]}\nbody:\n"
        "  - layernorm: {name: a, eps: 1e-3}\n  - rmsnorm: {name: b, eps: 0.25}\n",
    )
    model = morphspec.build(spec).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    h = F.layer_norm(x, (4,), eps=1e-3)
    want = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 0.25)
    assert torch.allclose(model(x), want, rtol=0, atol=1e-14)


def test_rmsnorm_keeps_float64_in_float64() -> None:
    x = torch.randn(3, 16, dtype=torch.float64) * 1e3
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    norm = RMSNorm(16, eps=1e-6).double()
    assert (norm(x) - want).abs().max() < 1e-12
