"""`morphspec.grow`: exact in eval *and* train mode (float64), the new-block rule at tensor
level, module and state_dict teachers, refusals identical to `convert`'s, and optimizer
state that makes the student's first step on the teacher's slice the teacher's step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import make_teacher, one_intraop_thread, write_spec
from torch import nn

import morphspec
from morphspec.convert import convert
from morphspec.errors import MorphError, PlanRefused
from morphspec.growing import GrowResult, grow
from morphspec.verify import compare, sample_inputs

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
EXACT = ["r2r", "net2net", "netmorph"]
TOL = 1e-10

# A ResNet with every kind of new block: post-activation blocks ending in conv+batchnorm
# and a large batchnorm eps (0.1), so an eps-sized slip is far above the tolerance.
RESNET = """
morphspec: 1
name: tiny-resnet
vars: {width: 4, blocks: 1, eps: 0.1}
input: {shape: [3, 8, 8]}
blocks:
  basic:
    args: {width: required}
    residual:
      body:
        - conv: {name: conv1, out: width, kernel: 3, padding: 1, bias: false}
        - batchnorm: {name: bn1, eps: eps}
        - relu
        - conv: {name: conv2, out: width, kernel: 3, padding: 1, bias: false}
        - batchnorm: {name: bn2, eps: eps}
      post: relu
body:
  - conv: {name: stem, out: width, kernel: 3, padding: 1, bias: false}
  - batchnorm: {name: stem_bn, eps: eps}
  - relu
  - repeat: {name: layer1, times: blocks, block: basic, args: {width: width}}
  - global_avgpool
  - linear: {name: fc, out: 5}
"""
# Pre-activation blocks (ending in a conv) and a block whose body ends in a linear.
PREACT = """
morphspec: 1
name: tiny-preact
vars: {width: 4, blocks: 1, hidden: 6}
input: {shape: [3, 8, 8]}
blocks:
  pre:
    args: {width: required}
    residual:
      body:
        - batchnorm: {name: bn1, eps: 0.1}
        - relu
        - conv: {name: conv1, out: width, kernel: 3, padding: 1, bias: false}
        - batchnorm: {name: bn2, eps: 0.1}
        - relu
        - conv: {name: conv2, out: width, kernel: 3, padding: 1}
  dense:
    residual:
      body:
        - linear: {name: up, out: hidden}
        - relu
        - linear: {name: down, out: width}
body:
  - conv: {name: stem, out: width, kernel: 3, padding: 1, bias: false}
  - repeat: {name: layer1, times: blocks, block: pre, args: {width: width}}
  - global_avgpool
  - repeat: {name: dense, times: blocks, block: dense}
  - linear: {name: fc, out: 5}
"""
CASES = {
    "resnet-deepen": (RESNET, ["blocks=1"], ["blocks=3"]),
    "resnet-widen": (RESNET, ["width=4"], ["width=7"]),
    "resnet-both": (RESNET, ["width=4", "blocks=1"], ["width=6", "blocks=2"]),
    "preact-deepen": (PREACT, ["blocks=1"], ["blocks=2"]),
    "preact-both": (PREACT, ["width=4", "hidden=6"], ["width=6", "hidden=9", "blocks=2"]),
}


def _spec(tmp_path: Path, text: str) -> Path:
    return write_spec(tmp_path / "spec.yaml", text)


def _teacher(spec: Path, set_: list[str], seed: int = 0, train: bool = True) -> nn.Module:
    """A float64 teacher with non-trivial batchnorms, in train mode."""
    ckpt = make_teacher(spec, set_, seed, out=spec.parent / f"t{seed}.safetensors")
    model = morphspec.load(spec, ckpt, set=set_).double()
    return model.train(train)


def _grow(tmp_path: Path, case: str, family: str, **kw: Any) -> tuple[nn.Module, GrowResult]:
    text, t_set, s_set = CASES[case]
    spec = _spec(tmp_path, text)
    teacher = _teacher(spec, t_set)
    kw.setdefault("noise", 0.05 if family == "net2net" else 0.0)
    result = grow(
        teacher, spec, spec, family=family, teacher_set=t_set, student_set=s_set, rtol=TOL, **kw
    )
    return teacher, result


@pytest.mark.parametrize("family", EXACT)
@pytest.mark.parametrize("case", list(CASES))
def test_exact_in_eval_and_train_mode_float64(tmp_path: Path, family: str, case: str) -> None:
    with one_intraop_thread():
        teacher, result = _grow(tmp_path, case, family)
        assert result.plan.ops
        assert result.family.modes == ("eval", "train")
        for v in (result.verification, result.train_verification):
            assert v is not None and v.rel_err <= TOL, v
        # An independent check on other inputs, in train mode (batch statistics).
        x = sample_inputs(result.plan.teacher, 16, seed=99).double()
        check = compare(teacher, result.student, x, TOL, mode="train")
        assert check.max_abs_teacher > 0 and check.rel_err <= TOL, check
        assert result.student.training and teacher.training
        assert next(result.student.parameters()).dtype == torch.float64


def test_new_block_rule_at_tensor_level(tmp_path: Path) -> None:
    """A new block ending in conv+batchnorm: that batchnorm's gain and shift are 0, the
    conv before it is generic (neither zero nor R2R-paired, so the gain gets a gradient)."""
    _, result = _grow(tmp_path, "resnet-deepen", "r2r")
    state = result.student.state_dict()
    for block in ("layer1.1", "layer1.2"):
        assert torch.count_nonzero(state[f"{block}.bn2.weight"]) == 0
        assert torch.count_nonzero(state[f"{block}.bn2.bias"]) == 0
        w = state[f"{block}.conv2.weight"]
        half = w.shape[1] // 2
        assert torch.count_nonzero(w) == w.numel()
        assert not torch.allclose(w[:, :half], -w[:, half : 2 * half])
    # After one SGD step the new block's gain moves off zero and its output stays small.
    student = result.student
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x = sample_inputs(result.plan.teacher, 16, seed=3).double()
    loss = student(x).square().mean()
    loss.backward()
    assert float(student.get_parameter("layer1.1.bn2.weight").grad.abs().sum()) > 0
    opt.step()
    assert torch.count_nonzero(student.get_parameter("layer1.1.bn2.weight")) > 0


def test_preact_new_block_keeps_r2r_pairs(tmp_path: Path) -> None:
    _, result = _grow(tmp_path, "preact-deepen", "r2r")
    w = result.student.state_dict()["layer1.1.conv2.weight"]
    half = w.shape[1] // 2
    assert torch.equal(w[:, :half], -w[:, half : 2 * half])
    assert torch.count_nonzero(w) > 0


@pytest.mark.parametrize("family", ["net2net", "netmorph"])
def test_identity_families_zero_the_last_layer_of_new_blocks(tmp_path: Path, family: str) -> None:
    _, result = _grow(tmp_path, "preact-deepen", family)
    state = result.student.state_dict()
    assert torch.count_nonzero(state["layer1.1.conv2.weight"]) == 0
    assert torch.count_nonzero(state["layer1.1.conv2.bias"]) == 0
    assert torch.count_nonzero(state["dense.1.down.weight"]) == 0
    assert torch.count_nonzero(state["layer1.1.conv1.weight"]) > 0


def test_identity_batchnorm_is_exact_in_eval_mode_only(tmp_path: Path) -> None:
    """Net2DeeperNet's identity batchnorm cannot be the identity on batch statistics: grow
    says so, checks eval mode only, and the train-mode error is real."""
    spec = SPECS / "plain_cnn.yaml"
    teacher = _teacher(spec, [])
    result = grow(teacher, spec, spec, family="net2net", student_set=["depth=3"], rtol=TOL)
    assert result.family.modes == ("eval",)
    assert any("eval mode only" in w for w in result.warnings)
    assert result.verification is not None and result.verification.rel_err <= TOL
    assert result.train_verification is not None and result.train_verification.rel_err > 1e-3
    assert result.rel_err == result.verification.rel_err


def test_module_and_state_dict_teachers_give_the_same_student(tmp_path: Path) -> None:
    text, t_set, s_set = CASES["resnet-both"]
    spec = _spec(tmp_path, text)
    teacher = _teacher(spec, t_set, train=False)
    a = grow(teacher, spec, spec, teacher_set=t_set, student_set=s_set, seed=5, rtol=TOL)
    b = grow(teacher.state_dict(), spec, spec, teacher_set=t_set, student_set=s_set, seed=5)
    sa, sb = a.student.state_dict(), b.student.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not a.student.training  # the module's mode; a state_dict gives eval mode
    # The student owns its tensors: training it never moves the teacher.
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in a.student.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_grow_and_convert_write_the_same_tensors(tmp_path: Path) -> None:
    spec = SPECS / "resnet_cifar10.yaml"
    ckpt = make_teacher(spec, out=tmp_path / "t.safetensors")
    out = tmp_path / "s.safetensors"
    convert(spec, SPECS / "resnet_cifar18_wide.yaml", ckpt, out, seed=2)
    result = grow(morphspec.load(spec, ckpt), spec, SPECS / "resnet_cifar18_wide.yaml", seed=2)
    from morphspec.checkpoint import load_state_dict

    written = load_state_dict(out)
    grown = result.student.state_dict()
    assert written.keys() == grown.keys()
    assert all(torch.equal(written[k], grown[k]) for k in written)


@pytest.mark.parametrize("family", ["r2r", "netmorph"])
def test_refusals_are_convert_refusals(tmp_path: Path, family: str) -> None:
    spec = SPECS / "resnet_cifar10.yaml"
    ckpt = make_teacher(spec, out=tmp_path / "t.safetensors")
    narrow = ["r=0.0625"]
    with pytest.raises(PlanRefused) as by_convert:
        convert(spec, spec, ckpt, tmp_path / "s.safetensors", student_set=narrow, family=family)
    with pytest.raises(PlanRefused) as by_grow:
        grow(morphspec.load(spec, ckpt), spec, spec, student_set=narrow, family=family)
    assert str(by_convert.value) == str(by_grow.value)
    assert "shrinks" in str(by_grow.value)
    with pytest.raises(MorphError, match="missing key"):
        grow({"fc.weight": torch.zeros(10, 64)}, spec, spec)


# -- optimizer state -----------------------------------------------------------------------

MLP_BN = """
morphspec: 1
name: mlp-bn
vars: {width: 6}
input: {shape: [5]}
body:
  - linear: {name: fc1, out: width}
  - batchnorm: {name: bn, eps: 0.1}
  - relu
  - linear: {name: fc2, out: width}
  - relu
  - linear: {name: head, out: 3}
"""


def _trained(spec: Path, optimizer: str) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = morphspec.build(spec).double().train()
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    x = torch.randn(32, 5, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model, opt, x


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("family", ["r2r", "netmorph"])
def test_mapped_state_makes_the_first_step_the_teachers(
    tmp_path: Path, family: str, optimizer: str
) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher, opt, x = _trained(spec, optimizer)
    result = grow(teacher, spec, spec, student_set=["width=11"], optimizer=opt, family=family)
    student, s_opt = result.student, result.optimizer
    assert s_opt is not None and type(s_opt) is type(opt)
    assert result.optimizer_state == s_opt.state_dict()
    for model, o in ((teacher, opt), (student, s_opt)):
        o.zero_grad()
        model(x).square().mean().backward()
        o.step()
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            q = student.get_parameter(name)[tuple(slice(0, n) for n in p.shape)]
            assert float((q - p).abs().max()) <= 1e-12, name


def test_net2net_moments_are_divided_like_the_columns(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher, opt, _ = _trained(spec, "adam")
    result = grow(teacher, spec, spec, student_set=["width=9"], optimizer=opt, family="net2net")
    w_t, w_s = teacher.get_parameter("fc2.weight"), result.student.get_parameter("fc2.weight")
    m_t, v_t = opt.state[w_t]["exp_avg"], opt.state[w_t]["exp_avg_sq"]
    assert result.optimizer is not None
    m_s = result.optimizer.state[w_s]["exp_avg"]
    v_s = result.optimizer.state[w_s]["exp_avg_sq"]
    # Columns are divided by the count n_c of their channel: the ratio of the weights gives
    # 1/n_c for each old column, and the moments follow with 1/n_c and 1/n_c².
    ratio = (w_s.detach()[:6, :6] / w_t.detach()[:, :6])[0]
    assert torch.allclose(m_s[:6, :6], m_t[:, :6] * ratio, atol=1e-15)
    assert torch.allclose(v_s[:6, :6], v_t[:, :6] * ratio**2, atol=1e-15)
    assert bool((ratio < 1).any()), "some channel must have been copied"


def test_optimizer_mapping_needs_the_module(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher, opt, _ = _trained(spec, "adam")
    with pytest.raises(MorphError, match="module"):
        grow(teacher.state_dict(), spec, spec, student_set=["width=9"], optimizer=opt)


def test_scheduler_continues_on_the_new_optimizer(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher, opt, _ = _trained(spec, "sgd")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        opt.step()
        sched.step()
    result = grow(teacher, spec, spec, student_set=["width=9"], optimizer=opt)
    assert result.optimizer is not None
    new_sched = torch.optim.lr_scheduler.CosineAnnealingLR(result.optimizer, T_max=10)
    new_sched.load_state_dict(sched.state_dict())
    assert result.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    sched.step()
    new_sched.step()
    assert result.optimizer.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


# -- drift ratio ---------------------------------------------------------------------------

DRIFT_CASES = {
    "resnet_cifar": ("resnet_cifar10.yaml", "resnet_cifar18_wide.yaml", None, None),
    "preact": ("preact_resnet.yaml", "preact_resnet.yaml", ["L=1", "width=4"], ["L=2", "width=6"]),
}


def _drifts(case: str, family: str, tmp_path: Path) -> list[float]:
    from morphspec.drift import drift_ratio

    teacher_spec, student_spec, t_set, s_set = DRIFT_CASES[case]
    t_path, s_path = SPECS / teacher_spec, SPECS / student_spec
    ckpt = make_teacher(t_path, t_set, out=tmp_path / "t.safetensors")
    teacher = morphspec.load(t_path, ckpt, set=t_set)
    noise = 0.05 if family == "net2net" else 0.0
    result = grow(
        teacher, t_path, s_path, teacher_set=t_set, student_set=s_set, family=family,
        noise=noise, verify=family != "randpad", samples=8,
    )  # fmt: skip
    arch = result.plan.teacher
    return [
        drift_ratio(teacher, result.student, arch, steps=k, optimizer=opt, batch=16).ratio
        for opt in ("sgd", "adam")
        for k in (1, 10)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DRIFT_CASES))
def test_drift_ratio_goal_for_every_exact_family(case: str, tmp_path: Path) -> None:
    """The issue's goal: <= 2 for SGD (momentum) and Adam, k = 1 and 10 steps, for every
    exact family; random padding, for contrast, moves the function several times more."""
    with one_intraop_thread():
        for family in EXACT:
            ratios = _drifts(case, family, tmp_path)
            assert all(0.5 <= r <= 2.0 for r in ratios), (family, ratios)
        assert max(_drifts(case, "randpad", tmp_path)) > 2.5


def test_verify_cli_reports_train_mode_and_drift(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from morphspec.cli.app import app

    spec = SPECS / "resnet_cifar10.yaml"
    student = SPECS / "resnet_cifar18.yaml"
    ckpt = make_teacher(spec, ["r=0.0625"], out=tmp_path / "t.safetensors")
    out = tmp_path / "s.safetensors"
    convert(spec, student, ckpt, out, teacher_set=["r=0.0625"], student_set=["r=0.0625"])
    sets = ["--teacher-set", "r=0.0625", "--student-set", "r=0.0625"]
    args = ["verify", str(spec), str(ckpt), str(student), str(out), *sets]
    result = CliRunner().invoke(app, [*args, "--train-steps", "2", "--optimizer", "adam", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["train"]["mode"] == "train" and data["train"]["rel_err"] <= 1e-5
    assert data["verification"]["mode"] == "eval"
    assert 0.5 <= data["drift_ratio"] <= 2.0 and data["drift"]["steps"] == 2


def test_a_non_finite_teacher_is_named(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher = morphspec.build(spec)
    with torch.no_grad():
        teacher.get_parameter("fc2.weight")[0, 0] = float("nan")
    with pytest.raises(MorphError, match=r"not finite: tensor 'fc2\.weight'"):
        grow(teacher, spec, spec, student_set=["width=9"])


def test_convert_checks_a_float64_teacher_in_float64(tmp_path: Path) -> None:
    """convert's own check must not hide eps-sized slips behind float32 round-off."""
    spec = _spec(tmp_path, RESNET)
    ckpt = morphspec.save(_teacher(spec, ["blocks=1"]), tmp_path / "t64.safetensors", spec,
                          set=["blocks=1"])  # fmt: skip
    result = convert(spec, spec, ckpt, tmp_path / "s.safetensors", teacher_set=["blocks=1"],
                     student_set=["blocks=2", "width=6"], rtol=TOL)  # fmt: skip
    assert result.verification is not None and result.verification.rel_err <= TOL


def test_new_entries_start_with_a_calm_adam_state(tmp_path: Path) -> None:
    """Zero first moment; second moment = the mean of the tensor's teacher entries (a zero
    one, with the teacher's step count, would make their first update ~3.2 lr)."""
    spec = write_spec(tmp_path / "mlp.yaml", MLP_BN)
    teacher, opt, x = _trained(spec, "adam")
    result = grow(teacher, spec, spec, student_set=["width=11"], optimizer=opt)
    assert result.optimizer is not None
    w_t, w_s = teacher.get_parameter("fc1.weight"), result.student.get_parameter("fc1.weight")
    old, new = result.optimizer.state[w_s], opt.state[w_t]
    assert torch.equal(old["exp_avg"][:6], new["exp_avg"])
    assert torch.count_nonzero(old["exp_avg"][6:]) == 0
    mean_v = float(new["exp_avg_sq"].mean())
    assert torch.allclose(old["exp_avg_sq"][6:], torch.full_like(old["exp_avg_sq"][6:], mean_v))
    before = w_s.detach().clone()
    result.optimizer.zero_grad()
    result.student(x).square().mean().backward()
    result.optimizer.step()
    lr = opt.param_groups[0]["lr"]
    assert float((w_s.detach() - before)[6:].abs().max()) < lr


def test_morphspec_grow_is_the_function_and_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, morphspec; assert 'torch' not in sys.modules;"
        " import morphspec.growing, morphspec.convert;"
        " assert callable(morphspec.grow) and morphspec.grow.__module__ == 'morphspec.api'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
