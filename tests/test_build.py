"""Building torch modules from resolved specs: counts, FLOPs, the closed registry."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

import morphspec
from morphspec import build, load_spec, resolve
from morphspec.arch import Arch
from morphspec.kinds import all_kinds

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"
EXAMPLES = sorted(p.stem for p in SPECS.glob("*.yaml"))
HEAD = "morphspec: 1\nname: t\n"


@functools.cache
def arch_of(example: str) -> Arch:
    return resolve(load_spec(SPECS / f"{example}.yaml"))


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + text, encoding="utf-8")
    return path


# -- FLOPs (multiply-adds x 2, per sample), by hand ----------------------------------------------


def test_flops_of_conv_and_linear_by_hand() -> None:
    arch = arch_of("smallconv")
    # conv1: 16 filters of 3x7x7 over a 32x32 output (padding 3 keeps the size):
    # 2 * 16 * (3 * 7 * 7) * (32 * 32) = 2 * 16 * 147 * 1024 = 4_816_896
    assert arch.node("conv1").flops == 4_816_896
    # fc1 reads the flattened 16 x 16 x 16 = 4096 pooled values: 2 * 4096 * 150 = 1_228_800
    assert arch.node("fc1").flops == 1_228_800
    # fc2: 2 * 150 * 10 = 3_000
    assert arch.node("fc2").flops == 3_000
    # relu, pooling and flatten are not counted
    assert arch.node("pool1").flops == 0
    assert arch.flops() == 4_816_896 + 1_228_800 + 3_000


def test_flops_of_a_strided_conv_and_a_linear_on_a_sequence() -> None:
    # resnet18's stem: 64 filters of 3x7x7, stride 2 padding 3: 224 -> 112.
    # 2 * 64 * 147 * 112 * 112 = 236_027_904
    assert arch_of("resnet18").node("conv1").flops == 236_027_904
    # resnet18's fc: 2 * 512 * 1000
    assert arch_of("resnet18").node("fc").flops == 1_024_000
    # gpt_mini's lm_head maps each of 32 positions from 64 to 256: 2 * 32 * 64 * 256
    assert arch_of("gpt_mini").node("lm_head").flops == 1_048_576


def test_flops_of_a_default_shortcut() -> None:
    # layer2.0.downsample.0 of the SPEC example at r = 1/8: 1x1, 8 -> 16 channels, stride 2,
    # 8x8 -> 4x4: 2 * 16 * 8 * 1 * 1 * 4 * 4 = 4_096
    assert arch_of("spec_example").node("layer2.0.downsample.0").flops == 4_096


# -- parameter counts ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_trainable_count_equals_the_built_model(example: str) -> None:
    arch = arch_of(example)
    model = build(arch)
    assert arch.trainable_count() == sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    total = sum(t.numel() for t in model.state_dict().values())
    assert total == arch.trainable_count() + buffers


# -- the registry --------------------------------------------------------------------------------


def test_every_activation_an_act_may_name_builds() -> None:
    from morphspec.builder.layers import ACTIVATIONS as BUILT
    from morphspec.spec.models import ACTIVATIONS

    assert set(BUILT) == {*ACTIVATIONS, "gelu_tanh"}  # gelu_tanh: gelu {approximate: tanh}


def test_every_layer_kind_has_a_builder() -> None:
    for kind in all_kinds():
        module, _, attr = kind.builder.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), kind.name


def test_built_model_is_in_eval_mode_and_batchnorm_follows_the_rank(tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        "input: {shape: [3, 8, 8]}\nbody:\n  - batchnorm: {name: a, eps: 0.001, momentum: 0.2}\n"
        "  - global_avgpool\n  - batchnorm: {name: b}\n  - dropout: {name: d, p: 0.5}\n",
    )
    model = build(path)
    assert not model.training
    a, b, d = model.get_submodule("a"), model.get_submodule("b"), model.get_submodule("d")
    assert isinstance(a, nn.BatchNorm2d) and (a.eps, a.momentum) == (0.001, 0.2)
    assert isinstance(b, nn.BatchNorm1d) and isinstance(d, nn.Dropout) and d.p == 0.5
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), model(x))  # dropout is off in eval mode


def test_residual_computes_post_of_body_plus_shortcut(tmp_path: Path) -> None:
    path = spec_file(
        tmp_path,
        "input: {shape: [3]}\nbody:\n  - residual:\n      name: r\n"
        "      body: [{linear: {name: fc, out: 2, bias: false}}]\n"
        "      shortcut: {name: proj, body: [{linear: {name: p, out: 2, bias: false}}]}\n"
        "      post: relu\n",
    )
    model = build(path)
    with torch.no_grad():
        model.get_parameter("r.fc.weight").copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
        model.get_parameter("r.proj.p.weight").copy_(torch.tensor([[0.0, 0, 1], [0, 0, -2]]))
        y = model(torch.tensor([[1.0, 2.0, 3.0]]))
    # body: (1, 2); shortcut: (3, -6); relu(1 + 3, 2 - 6) = (4, 0)
    assert y.tolist() == [[4.0, 0.0]]


def test_build_takes_a_path_and_set(tmp_path: Path) -> None:
    model = build(SPECS / "mlp.yaml", set=["width=8"])
    assert model.get_parameter("fc1.weight").shape == (8, 16)


def test_package_level_build_stays_callable() -> None:
    # the builder package once shared the name `build`, and importing it rebound the function
    morphspec.build(SPECS / "mlp.yaml")
    assert callable(morphspec.build)
    assert isinstance(morphspec.build(SPECS / "mlp.yaml"), nn.Module)
