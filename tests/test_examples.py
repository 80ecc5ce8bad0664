"""Every shipped example spec resolves, builds, runs, and keeps its state_dict keys.

Golden files `tests/golden/<example>.json` pin each example's state_dict keys (in order)
and shapes, and its output shape. After an intended change to an example or to the naming
rules, regenerate them and review the diff:

    .venv/bin/python tests/test_examples.py --update-golden

`resnet18.yaml` must have exactly the keys of torchvision's `resnet18` (SPEC.md); torchvision
is not a dependency, so the expected keys are written out below from its architecture, and
its forward is checked against a functional re-implementation of torchvision's ResNet.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morphspec import build, load_spec, resolve
from morphspec.arch import Arch

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "examples" / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"
SCHEMA_LINE = "# yaml-language-server: $schema=../../schemas/morphspec.schema.json"
EXAMPLES = sorted(p.stem for p in SPECS.glob("*.yaml"))
REQUIRED = {
    "mlp", "mlp_wide", "smallconv", "smallconv_wide", "resnet_cifar10", "resnet_cifar18",
    "resnet_cifar18_wide", "preact_resnet", "resnet18", "resnet34", "gpt_mini", "llama_mini",
    "spec_example", "spec_example_wide",
}  # fmt: skip


@functools.cache
def arch_of(example: str) -> Arch:
    return resolve(load_spec(SPECS / f"{example}.yaml"))


@functools.cache
def model_of(example: str) -> nn.Module:
    torch.manual_seed(0)
    return build(arch_of(example))


def sample_input(arch: Arch, batch: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    dims = arch.input.dims
    if arch.input.dtype == "int64":
        vocab = min(n.args["vocab"] for n in arch.nodes() if n.kind == "embedding")
        return torch.randint(0, vocab, (batch, *dims), generator=g)
    return torch.randn(batch, *dims, generator=g)


def golden_of(arch: Arch) -> dict[str, object]:
    return {
        "name": arch.name,
        "output": list(arch.output.dims),
        "state_dict": {k: list(s) for k, s in arch.state_shapes().items()},
    }


# -- the examples themselves --------------------------------------------------------------


def test_every_required_example_exists() -> None:
    assert set(EXAMPLES) >= REQUIRED, f"missing: {sorted(REQUIRED - set(EXAMPLES))}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_starts_with_schema_line(example: str) -> None:
    first = (SPECS / f"{example}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_LINE


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_builds_and_runs(example: str) -> None:
    arch = arch_of(example)
    model = model_of(example)
    assert not model.training
    batch = 1 if arch.flops() > 5e8 else 2
    x = sample_input(arch, batch)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (batch, *arch.output.dims)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("example", EXAMPLES)
def test_built_state_dict_equals_arch(example: str) -> None:
    arch = arch_of(example)
    built = {k: tuple(v.shape) for k, v in model_of(example).state_dict().items()}
    assert list(built.items()) == list(arch.state_shapes().items())


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden_state_dict(example: str) -> None:
    path = GOLDEN / f"{example}.json"
    assert path.is_file(), f"no golden file for {example}; run: python {__file__} --update-golden"
    expected = json.loads(path.read_text(encoding="utf-8"))
    got = golden_of(arch_of(example))
    assert got["output"] == expected["output"]
    assert list(got["state_dict"].items()) == list(expected["state_dict"].items())  # type: ignore[union-attr]


def test_no_stale_golden_files() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == EXAMPLES


# -- extends: the students -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("student", "teacher", "var", "value"),
    [
        ("mlp_wide", "mlp", "width", 64),
        ("smallconv_wide", "smallconv", "filters", 32),
        ("resnet_cifar18_wide", "resnet_cifar18", "r", 0.1875),
        ("spec_example_wide", "resnet_cifar10", "r", 0.1875),
    ],
)
def test_wide_student_is_teacher_with_var_set(
    student: str, teacher: str, var: str, value: float
) -> None:
    wide = load_spec(SPECS / f"{student}.yaml")
    assert wide.vars[var] == value
    assert wide.name != load_spec(SPECS / f"{teacher}.yaml").name
    via_set = resolve(load_spec(SPECS / f"{teacher}.yaml", set={var: value}))
    assert arch_of(student).state_shapes() == via_set.state_shapes()
    assert arch_of(student).trainable_count() > arch_of(teacher).trainable_count()


def test_spec_example_is_resnet_cifar10() -> None:
    assert arch_of("spec_example").state_shapes() == arch_of("resnet_cifar10").state_shapes()


def test_smallconv_is_table_3() -> None:
    arch = arch_of("smallconv")
    assert arch.node("conv1").out.dims == (16, 32, 32)
    assert arch.node("pool1").out.dims == (16, 16, 16)
    assert arch.node("fc1").out.dims == (150,)
    assert arch.output.dims == (10,)
    assert arch_of("smallconv_wide").node("conv1").out.dims == (32, 32, 32)


def test_resnet_cifar_is_table_4() -> None:
    for name, blocks in (("resnet_cifar10", 2), ("resnet_cifar18", 4)):
        arch = arch_of(name)
        assert arch.node("conv1").out.dims == (8, 16, 16)  # floor(64 / 8), stride 2
        assert arch.node("layer1").out.dims == (8, 8, 8)
        assert arch.node("layer2").out.dims == (16, 4, 4)
        assert arch.node("layer1").args["times"] == arch.node("layer2").args["times"] == blocks
    assert arch_of("resnet_cifar18_wide").node("layer2").out.dims == (24, 4, 4)  # floor(128*3/16)


def test_cifar18_deepens_cifar10_by_appending_copies() -> None:
    shallow = arch_of("resnet_cifar10").state_shapes()
    deep = arch_of("resnet_cifar18").state_shapes()
    assert all(deep[k] == s for k, s in shallow.items())
    new = sorted({".".join(k.split(".")[:2]) for k in set(deep) - set(shallow)})
    assert new == ["layer1.2", "layer1.3", "layer2.2", "layer2.3"]


def test_resnet34_deepens_resnet18_by_appending_copies() -> None:
    shallow, deep = arch_of("resnet18").state_shapes(), arch_of("resnet34").state_shapes()
    assert all(deep[k] == s for k, s in shallow.items())
    new = sorted({".".join(k.split(".")[:2]) for k in set(deep) - set(shallow)})
    assert new == ["layer1.2", "layer2.2", "layer2.3", *(f"layer3.{i}" for i in range(2, 6)),
                   "layer4.2"]  # fmt: skip


def test_preact_resnet_is_the_perturbation_study_network() -> None:
    for L in (2, 5):
        arch = resolve(load_spec(SPECS / "preact_resnet.yaml", set={"L": L}))
        sections = [arch.node(f"layer{i}") for i in (1, 2, 3)]
        assert [s.out.dims for s in sections] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
        assert all(s.args["times"] == L for s in sections)
        weights = [k for k, s in arch.state_shapes().items() if len(s) == 4 and s[2] == 3]
        weights += ["fc.weight"]
        assert len(weights) == 6 * L + 2  # the paper's layer count
        block = arch.node("layer1.0")
        assert [c.kind for c in block.children] == ["batchnorm", "relu", "conv"] * 2
        assert block.post == ()
        assert arch.node("layer2.0").shortcut is not None
        assert arch.node("layer2.1").shortcut is None


def test_gpt_mini_names_follow_gpt2() -> None:
    keys = arch_of("gpt_mini").state_shapes()
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.bias",
                "transformer.h.0.attn.q_proj.weight", "transformer.h.0.ffn.ln_2.weight",
                "transformer.h.0.ffn.mlp.up_proj.weight", "transformer.ln_f.weight",
                "lm_head.weight"):  # fmt: skip
        assert key in keys
    assert "lm_head.bias" not in keys


def test_llama_mini_is_llama_like() -> None:
    arch = arch_of("llama_mini")
    keys = arch.state_shapes()
    assert keys["model.layers.0.self_attn.k_proj.weight"] == (32, 64)  # 2 kv heads of 16
    assert keys["model.layers.0.self_attn.q_proj.weight"] == (64, 64)
    assert keys["model.layers.1.ffn.mlp.gate_proj.weight"] == (176, 64)
    assert keys["model.norm.weight"] == (64,)
    assert not [k for k in keys if k.endswith(".bias")]
    attn = arch.node("model.layers.0.self_attn")
    assert attn.args["rope"] and attn.args["kv_heads"] < attn.args["heads"]
    norms = [n for n in arch.nodes() if n.kind == "rmsnorm"]
    assert len(norms) == 5 and not [n for n in arch.nodes() if n.kind == "layernorm"]


@pytest.mark.parametrize("example", ["gpt_mini", "llama_mini"])
def test_language_models_are_causal(example: str) -> None:
    model, arch = model_of(example), arch_of(example)
    x = sample_input(arch, 1)
    x2 = x.clone()
    x2[0, -1] = (x[0, -1] + 1) % 3
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    assert torch.equal(y[:, :-1], y2[:, :-1])
    assert not torch.equal(y[:, -1], y2[:, -1])


# -- torchvision's resnet18 ------------------------------------------------------------------

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(layers: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The state_dict of torchvision.models.ResNet(BasicBlock, layers), written out by hand.

    Mirrors torchvision's ResNet.__init__ and _make_layer: conv1 7x7 64, bn1, four stages of
    BasicBlocks (conv1 3x3, bn1, conv2 3x3, bn2, and in the first block of a stage whose
    stride or width changes, downsample = Sequential(conv1x1, BatchNorm2d)), fc 512 -> 1000.
    """
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}
    keys.update({f"bn1.{b}": (64,) if b != "num_batches_tracked" else () for b in BN})
    inplanes = 64
    for stage, (planes, blocks) in enumerate(
        zip((64, 128, 256, 512), layers, strict=True), start=1
    ):
        stride = 1 if stage == 1 else 2
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
            keys.update({f"{p}.bn1.{b}": (planes,) if b != BN[-1] else () for b in BN})
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update({f"{p}.bn2.{b}": (planes,) if b != BN[-1] else () for b in BN})
            if i == 0 and (stride != 1 or inplanes != planes):
                keys[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                keys.update({f"{p}.downsample.1.{b}": (planes,) if b != BN[-1] else () for b in BN})
            inplanes = planes
    keys["fc.weight"] = (1000, 512)
    keys["fc.bias"] = (1000,)
    return keys


def test_resnet18_keys_are_torchvision() -> None:
    expected = torchvision_resnet_keys((2, 2, 2, 2))
    assert len(expected) == 122  # len(torchvision.models.resnet18().state_dict())
    spot = ["layer1.0.conv1.weight", "layer2.0.downsample.0.weight"]
    spot += ["layer2.0.downsample.1.running_var", "layer4.1.bn2.num_batches_tracked"]
    assert set(spot) <= set(expected)
    assert "layer1.0.downsample.0.weight" not in expected
    arch = arch_of("resnet18")
    assert list(arch.state_shapes().items()) == list(expected.items())
    assert arch.trainable_count() == 11_689_512  # torchvision's resnet18 parameter count


def test_resnet34_keys_are_torchvision() -> None:
    arch = arch_of("resnet34")
    assert list(arch.state_shapes().items()) == list(torchvision_resnet_keys((3, 4, 6, 3)).items())
    assert arch.trainable_count() == 21_797_672  # torchvision's resnet34 parameter count


def reference_resnet(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """torchvision's ResNet(BasicBlock).forward in functional ops, reading `state`.

    The stem conv is 7x7 stride 2 padding 3; a block's stride is 2 where its conv1 changes
    the width after the first stage (the first block of layer2..), as in torchvision.
    """

    def bn(t: Tensor, p: str) -> Tensor:
        return F.batch_norm(
            t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
            state[f"{p}.bias"], training=False, momentum=0.1, eps=1e-5,
        )  # fmt: skip

    x = F.conv2d(x, state["conv1.weight"], stride=2, padding=3)
    x = F.max_pool2d(F.relu(bn(x, "bn1")), kernel_size=3, stride=2, padding=1)
    for stage in range(1, 5):
        blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.")})
        for i in blocks:
            p = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            out = F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1)
            out = F.relu(bn(out, f"{p}.bn1"))
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            identity = x
            if f"{p}.downsample.0.weight" in state:
                identity = F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride)
                identity = bn(identity, f"{p}.downsample.1")
            x = F.relu(out + identity)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
    return F.linear(x, state["fc.weight"], state["fc.bias"])


def _randomise_batchnorms(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("example", ["resnet18", "resnet34", "resnet_cifar18"])
def test_resnet_forward_matches_torchvision_reference(example: str) -> None:
    torch.manual_seed(1)
    model = build(arch_of(example)).double()
    _randomise_batchnorms(model, seed=2)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = reference_resnet(dict(model.state_dict()), x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert want.std() > 1e-3  # the comparison is not between two near-constant outputs


# -- regenerating the golden files ----------------------------------------------------------


def _golden_text(golden: dict[str, object]) -> str:
    """JSON with one state_dict key per line, so that a diff shows each changed key."""
    state = golden["state_dict"]
    assert isinstance(state, dict)
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in state.items())
    head = f'{{\n "name": {json.dumps(golden["name"])},\n "output": {json.dumps(golden["output"])},'
    return f'{head}\n "state_dict": {{\n{rows}\n }}\n}}\n'


def _write_golden() -> Iterator[Path]:
    GOLDEN.mkdir(exist_ok=True)
    for stale in set(GOLDEN.glob("*.json")) - {GOLDEN / f"{e}.json" for e in EXAMPLES}:
        stale.unlink()
    for example in EXAMPLES:
        path = GOLDEN / f"{example}.json"
        path.write_text(_golden_text(golden_of(arch_of(example))), "utf-8")
        yield path


if __name__ == "__main__":
    if sys.argv[1:] != ["--update-golden"]:
        sys.exit(f"usage: python {sys.argv[0]} --update-golden")
    for written in _write_golden():
        print(f"wrote {written.relative_to(ROOT)}")
