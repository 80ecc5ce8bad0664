"""Growth of reversible units (issue 10): exact rules in float64 (eval and train mode, through
`morphspec.grow`, which verifies both), where the old Y and Z channels land, what new K
entries and biases get, each refusal with its message and YAML place, and ode-refine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher, one_intraop_thread, write_spec

import morphspec
from morphspec.convert import convert
from morphspec.errors import PlanRefused
from morphspec.growing import GrowResult, grow
from morphspec.growth.plan import plan_for

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "specs"
RTOL = 1e-10


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_intraop_thread():
        yield


def _teacher(spec: Path, set_: list[str] | None = None, seed: int = 0) -> torch.nn.Module:
    """A float64 teacher with seeded weights and random batchnorm statistics."""
    arch = morphspec.resolve(morphspec.load_spec(spec, set_))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = morphspec.build(arch).double()
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 1.5)
    return model


def _grow(teacher: str, student: str | None = None, sets: list[str] | None = None,
          family: str = "r2r", t_sets: list[str] | None = None) -> GrowResult:  # fmt: skip
    """Grow in float64; `grow` raises unless the student matches in eval and train mode."""
    t_spec = SPECS / f"{teacher}.yaml"
    s_spec = SPECS / f"{student or teacher}.yaml"
    model = _teacher(t_spec, t_sets)
    result = grow(model, t_spec, s_spec, family=family, rtol=RTOL, teacher_set=t_sets,
                  student_set=sets)  # fmt: skip
    for ver in (result.verification, result.train_verification):
        assert ver is not None and ver.passed and ver.rel_err <= RTOL, ver
        assert ver.max_abs_teacher > 0
    return result


@pytest.mark.parametrize("family", ["r2r", "netmorph"])
@pytest.mark.parametrize(
    ("teacher", "student", "sets"),
    [
        ("hamiltonian", "hamiltonian_deep", None),
        ("hamiltonian", "hamiltonian_wide", None),
        ("hamiltonian", None, ["steps=3", "width=10", "hidden=9"]),
        ("midpoint", "midpoint_deep", None),
        ("midpoint", None, ["width=12", "hidden=10"]),
        ("leapfrog", None, ["width=12", "hidden=10"]),
    ],
    ids=["ham-deep", "ham-wide", "ham-both", "mid-deep", "mid-wide", "leap-wide"],
)
def test_exact_growth_in_eval_and_train(
    family: str, teacher: str, student: str | None, sets: list[str] | None
) -> None:
    result = _grow(teacher, student, sets, family)
    assert result.plan.ops and result.family.modes == ("eval", "train")


def test_old_y_and_z_channels_land_in_their_halves() -> None:
    """Width 8 -> 12: Y = channels 0-3 stay at 0-3, Z = 4-7 move to 6-9; after the doubling
    pad (16 -> 24) unit2's Y half is unit1's output, its Z half the pad's zeros."""
    result = _grow("hamiltonian", "hamiltonian_wide")
    t = _teacher(SPECS / "hamiltonian.yaml").state_dict()
    s = result.student.state_dict()
    assert torch.equal(s["stem.weight"][[0, 1, 2, 3, 6, 7, 8, 9]], t["stem.weight"])
    assert torch.equal(s["bn.running_mean"][[0, 1, 2, 3, 6, 7, 8, 9]], t["bn.running_mean"])
    # unit2's K2 reads Y2 = unit1's output [Y1 (6) | Z1 (6)]
    k2 = s["unit2.0.k2.weight"]
    assert torch.equal(k2[:16][:, [0, 1, 2, 3, 6, 7, 8, 9]], t["unit2.0.k2.weight"])
    new = [4, 5, 10, 11]
    assert not k2[:, new].any() and not k2[16:].any(), "new tied entries must be zero"
    # each doubling pad's zeros mirror its input's places (a tied K index l pairs Y_l, Z_l)
    old = [0, 1, 2, 3, 6, 7, 8, 9]
    old = old + [12 + i for i in old]
    old = old + [24 + i for i in old]
    assert torch.equal(s["fc.weight"][:, old], t["fc.weight"])


def test_new_steps_and_hidden_units_start_silent_but_learn() -> None:
    """New K = 0 (identity step, no write-back), new biases b > 0 so σ(b) = relu(b) ≠ 0, and
    so the new K gets a gradient at the first step."""
    result = _grow("hamiltonian", "hamiltonian_deep", ["hidden=10"])
    s = result.student.state_dict()
    for k in ("k1", "k2"):
        assert not s[f"unit1.2.{k}.weight"].any() and not s[f"unit1.0.{k}.weight"][8:].any()
    for b in ("b1", "b2"):
        assert (s[f"unit1.3.{b}"] > 0).all() and (s[f"unit1.0.{b}"][8:] > 0).all()
        assert s[f"unit1.3.{b}"].unique().numel() == s[f"unit1.3.{b}"].numel()
    model = result.student.train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    model(x).square().sum().backward()
    unit = dict(model.named_modules())["unit1"]
    for step, rows in ((unit.steps[2], slice(None)), (unit.steps[0], slice(8, None))):
        for k in (step.k1, step.k2):
            assert k.weight.grad is not None and k.weight.grad[rows].abs().max() > 0


def _refused(teacher: str, student: str | None, sets: list[str] | None, family: str,
             match: str, line: int, t_sets: list[str] | None = None) -> None:  # fmt: skip
    t_spec, s_spec = SPECS / f"{teacher}.yaml", SPECS / f"{student or teacher}.yaml"
    with pytest.raises(PlanRefused, match=match) as err:
        grow(_teacher(t_spec, t_sets), t_spec, s_spec, family=family, student_set=sets,
             teacher_set=t_sets)  # fmt: skip
    assert f"{SPECS / (teacher + '.yaml')}:{line}:" in str(err.value), str(err.value)


def test_midpoint_odd_deepening_is_refused() -> None:
    _refused("midpoint", None, ["steps=3"], "r2r",
             r"'unit1' \(midpoint, steps 2 -> 3\): .* only an even number", 14)  # fmt: skip


def test_leapfrog_deepening_is_refused_naming_ode_refine() -> None:
    match = r"'unit1' \(leapfrog, steps 2 -> 4\): .*extrapolation.*--family ode-refine"
    _refused("leapfrog", None, ["steps=4"], "netmorph", match, 14)


def test_a_refinement_needs_ode_refine() -> None:
    _refused("hamiltonian", None, ["steps=4", "h=0.05"], "r2r",
             r"h changes.*use --family ode-refine", 14)  # fmt: skip


def test_ode_refine_needs_a_refinement() -> None:
    _refused("hamiltonian", "hamiltonian_deep", None, "ode-refine",
             r"ode-refine refines the same time span.*set h to 0.05", 14)  # fmt: skip


def test_h_may_change_only_as_a_refinement() -> None:
    t = SPECS / "hamiltonian.yaml"
    with pytest.raises(PlanRefused, match=r"'unit1': h changes from 0.1 to 0.07") as err:
        plan_for(t, t, None, ["steps=3", "h=0.07"])
    assert f"{t}:14:" in str(err.value)


def test_net2net_refuses_the_tied_kernels() -> None:
    _refused(
        "midpoint", None, ["hidden=10"], "net2net", r"midpoint 'unit1' reads as K and as Kᵀ", 14
    )


PAD_THEN_UNIT = """
morphspec: 1
name: p
vars: {{w: {w}, out: {out}}}
input: {{shape: [3, 6, 6]}}
body:
  - conv: {{name: stem, out: w, kernel: 3, padding: 1}}
  - channel_pad: {{name: pad, out: out}}
  - hamiltonian: {{name: ham, steps: 1, hidden: 3}}
  - global_avgpool
  - linear: {{name: fc, out: 2}}
"""


def test_a_pad_that_does_not_double_before_a_unit_is_refused(tmp_path: Path) -> None:
    """Pad 4 -> 6 before a hamiltonian: Y = 3 input channels, Z = 1 input + 2 zeros; no
    student layout keeps both the halves and the pad's zeros."""
    t = write_spec(tmp_path / "t.yaml", PAD_THEN_UNIT.format(w=4, out=6))
    s = write_spec(tmp_path / "s.yaml", PAD_THEN_UNIT.format(w=6, out=8))
    ckpt = make_teacher(t, out=tmp_path / "t.safetensors")
    with pytest.raises(PlanRefused, match=r"split into 2 segments.*pad doubles") as err:
        convert(t, s, ckpt, tmp_path / "o.safetensors")
    assert f"{s}:7:" in str(err.value) and not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("unit", ["hamiltonian", "midpoint", "leapfrog"])
def test_ode_refine_converts_and_reports_the_deviation(tmp_path: Path, unit: str) -> None:
    spec = SPECS / f"{unit}.yaml"
    ckpt = make_teacher(spec, out=tmp_path / "t.safetensors")
    result = convert(spec, spec, ckpt, tmp_path / "s.safetensors", family="ode-refine",
                     student_set=["steps=4", "h=0.05"])  # fmt: skip
    ver = result.verification
    assert result.written and ver is not None and 0 < ver.rel_err < 0.1, ver
    assert any("not function-preserving" in w for w in result.warnings)
    t = morphspec.load(result.plan.teacher, ckpt).state_dict()
    s = morphspec.load(result.plan.student, tmp_path / "s.safetensors").state_dict()
    for j in range(4):  # student step j refines (copies) teacher step j // 2
        for key in t:
            if key.startswith("unit2.0."):
                assert torch.equal(s[key.replace(".0.", f".{j}.", 1)],
                                   t[key.replace(".0.", f".{j // 2}.", 1)])  # fmt: skip


def test_ode_refine_optimizer_state_follows_the_refined_steps() -> None:
    spec = SPECS / "leapfrog.yaml"
    teacher = _teacher(spec)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    teacher(torch.randn(2, 3, 32, 32, dtype=torch.float64)).square().sum().backward()
    opt.step()
    result = grow(teacher, spec, spec, optimizer=opt, family="ode-refine",
                  student_set=["steps=4", "h=0.05"], verify=False)  # fmt: skip
    assert result.optimizer is not None
    params = dict(result.student.named_parameters())
    t_params = dict(teacher.named_parameters())
    for j in range(4):
        got = result.optimizer.state[params[f"unit1.{j}.k.weight"]]["exp_avg"]
        want = opt.state[t_params[f"unit1.{j // 2}.k.weight"]]["exp_avg"]
        assert torch.equal(got, want), j


def test_optimizer_state_follows_the_halves() -> None:
    """The moments are permuted with their parameters: old Z's state lands at 6-9 too."""
    spec = SPECS / "hamiltonian.yaml"
    teacher = _teacher(spec)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    teacher(torch.randn(2, 3, 32, 32, dtype=torch.float64)).square().sum().backward()
    opt.step()
    result = grow(teacher, spec, SPECS / "hamiltonian_wide.yaml", optimizer=opt, rtol=RTOL)
    assert result.optimizer is not None
    got = result.optimizer.state[dict(result.student.named_parameters())["stem.weight"]]
    want = opt.state[dict(teacher.named_parameters())["stem.weight"]]
    assert torch.equal(got["exp_avg"][[0, 1, 2, 3, 6, 7, 8, 9]], want["exp_avg"])
    assert not got["exp_avg"][[4, 5, 10, 11]].any()


def test_memory_mode_may_change(tmp_path: Path) -> None:
    """`memory` changes only how backward is computed, so store -> recompute is no growth."""
    text = (SPECS / "hamiltonian.yaml").read_text(encoding="utf-8")
    stored = text.replace("h: h}", "h: h, memory: store}")
    assert stored.count("memory: store") == 3
    _, _, plan = plan_for(write_spec(tmp_path / "t.yaml", stored), SPECS / "hamiltonian.yaml")
    assert not plan.ops


def test_cli_ode_refine_reports_and_exact_refusal_exits_1(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from morphspec.cli.app import app

    spec = SPECS / "leapfrog.yaml"
    ckpt = make_teacher(spec, out=tmp_path / "t.safetensors")
    args = ["convert", str(spec), str(SPECS / "leapfrog_deep.yaml"), str(ckpt), "-o"]
    ok = CliRunner().invoke(app, [*args, str(tmp_path / "a.safetensors"), "--family",
                                  "ode-refine", "--json"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["family"] == "ode-refine" and doc["verification"]["rel_err"] > 0
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "b.safetensors")])
    assert bad.exit_code == 1 and "--family ode-refine" in bad.output
    assert f"{spec}:14:" in bad.output and not (tmp_path / "b.safetensors").exists()
    diff = CliRunner().invoke(app, ["diff", str(SPECS / "hamiltonian.yaml"),
                                    str(SPECS / "hamiltonian_wide.yaml")])  # fmt: skip
    assert diff.exit_code == 0 and "new rows of the tied K zero" in diff.output, diff.output
