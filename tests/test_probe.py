"""`morph probe` and `morphspec.probe`: perturbations against hand-computed values, the depth
rule, sections, R2R's new blocks as identities, `--suggest`, `--json`, `--plot`, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher
from safetensors.torch import save_file
from typer.testing import CliRunner, Result

import morphspec
from morphspec.cli.app import app
from morphspec.convert import convert
from morphspec.errors import MorphError
from morphspec.growth.plan import InsertBlocks, diff
from morphspec.probe import find_sections, recommended_blocks

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "specs"
ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "COLUMNS": "200", "MORPH_DEBUG": None}
FACTORS = (0.5, -0.25, 2.0)

# Each block is x + g(f(x)), both linear: with f = c*I and g = I, x_{l+1} = (1 + c) x_l. (Two
# layers, so that R2R can append blocks to the stack.)
STACK = """\
morphspec: 1
name: stack
vars: {n: 3}
input: {shape: [4]}
body:
  - linear: {name: inp, out: 4}
  - repeat:
      name: stack
      times: TIMES
      body:
        - residual:
            name: res
            body: [linear: {name: f, out: 4, bias: false}, linear: {name: g, out: 4, bias: false}]
  - linear: {name: head, out: 2}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def stack_spec(tmp_path: Path, times: str = "n", name: str = "stack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(STACK.replace("TIMES", times), encoding="utf-8")
    return path


def scaled_model(spec: Path, factors: tuple[float, ...]) -> torch.nn.Module:
    model = morphspec.build(spec, set={"n": len(factors)}).double()
    with torch.no_grad():
        for i, c in enumerate(factors):
            model.get_submodule(f"stack.{i}.res.f").weight.copy_(c * torch.eye(4))
            model.get_submodule(f"stack.{i}.res.g").weight.copy_(torch.eye(4))
    return model


def stack_checkpoint(tmp_path: Path, spec: Path, factors: tuple[float, ...]) -> Path:
    model = scaled_model(spec, factors)
    return morphspec.save(model, tmp_path / "stack.safetensors", spec, set={"n": len(factors)})


# -- the numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [64, 2])
def test_abs_and_scaled_match_hand_computed_values(tmp_path: Path, batch: int) -> None:
    spec = stack_spec(tmp_path)
    model = scaled_model(spec, FACTORS).train()
    inputs = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = morphspec.probe(model, spec=spec, inputs=inputs, batch=batch, epsilon=0.1)
    x0 = model.get_submodule("inp")(inputs).detach().norm(dim=1)  # what enters the stack
    growth = 1.0
    for block, c in zip(report.blocks, FACTORS, strict=True):
        want_abs = float((abs(c) * growth * x0).mean())
        assert block.abs == pytest.approx(want_abs, rel=1e-10, abs=0)
        assert block.scaled == pytest.approx(abs(c), rel=1e-10, abs=0)
        growth *= abs(1 + c)
    (section,) = report.sections
    assert (section.name, section.blocks) == ("stack", 3)
    assert section.distance == pytest.approx(sum(b.abs for b in report.blocks), rel=1e-12)
    assert section.scaled_distance == pytest.approx(2.75, rel=1e-10)
    assert section.mean_scaled == pytest.approx(2.75 / 3, rel=1e-10)
    assert section.recommended_blocks == 28  # ceil(2.75 / 0.1)
    assert not section.perturbation_from_identity
    assert model.training  # the probe puts a training model back in training mode


def test_rule_ceiling_and_never_fewer_clamp() -> None:
    assert recommended_blocks(0.31, 0.1, 1) == 4  # ceil, not round
    assert recommended_blocks(0.1 + 0.2, 0.1, 1) == 3  # not 4 from 3.0000000000000004
    assert recommended_blocks(0.05, 0.1, 3) == 3  # ceil gives 1: never fewer than the teacher
    assert recommended_blocks(0.0, 0.1, 2) == 2
    assert recommended_blocks(math.inf, 0.1, 2) == 2


@pytest.mark.parametrize(("epsilon", "want", "identity"), [(1.0, 3, True), (2.0, 3, True),
                                                           (0.5, 6, False)])  # fmt: skip
def test_report_applies_the_rule(tmp_path: Path, epsilon: float, want: int, identity: bool) -> None:
    spec = stack_spec(tmp_path)
    inputs = torch.randn(3, 4, dtype=torch.float64)
    report = morphspec.probe(scaled_model(spec, FACTORS), spec=spec, inputs=inputs, epsilon=epsilon)
    (section,) = report.sections
    assert section.recommended_blocks == want  # ceil(2.75/1)=3; 2.75/2 -> 2, clamped to 3
    assert section.perturbation_from_identity is identity  # mean 0.917 < epsilon


@pytest.mark.slow
def test_blocks_appended_by_r2r_do_not_move_the_data(tmp_path: Path) -> None:
    teacher = make_teacher(SPECS / "resnet_cifar10.yaml", out=tmp_path / "t.safetensors")
    grown = convert(SPECS / "resnet_cifar10.yaml", SPECS / "resnet_cifar18.yaml", teacher,
                    tmp_path / "s.safetensors")  # fmt: skip
    report = morphspec.probe(SPECS / "resnet_cifar18.yaml", grown.output, samples=32)
    moved = {b.path: b.abs for b in report.blocks}
    new = ["layer1.2", "layer1.3", "layer2.2", "layer2.3"]
    assert all(moved[p] < 1e-6 for p in new), moved
    assert all(moved[p] > 1e-2 for p in ("layer1.0", "layer1.1", "layer2.1")), moved
    before = morphspec.probe(SPECS / "resnet_cifar10.yaml", teacher, samples=32)
    for b in before.blocks:
        assert moved[b.path] == pytest.approx(b.abs, rel=1e-5)


# -- sections --------------------------------------------------------------------------------


def test_sections_follow_the_arch() -> None:
    arch = morphspec.resolve(morphspec.load_spec(SPECS / "preact_resnet.yaml", set={"L": 3}))
    got = [(s.name, [p.path for p in s.points], s.repeat, s.per_copy) for s in find_sections(arch)]
    assert got == [
        ("layer1", ["layer1.0", "layer1.1", "layer1.2"], "layer1", 1),
        ("layer2", ["layer2.1", "layer2.2"], "layer2", 1),  # layer2.0 changes the shape
        ("layer3", ["layer3.1", "layer3.2"], "layer3", 1),
    ]


def test_transformer_block_is_two_blocks_of_one_section() -> None:
    arch = morphspec.resolve(morphspec.load_spec(SPECS / "gpt_mini.yaml"))
    (section,) = find_sections(arch)
    paths = ["transformer.h.0", "transformer.h.0.ffn", "transformer.h.1", "transformer.h.1.ffn"]
    assert [p.path for p in section.points] == paths
    assert (section.name, section.repeat, section.per_copy) == ("transformer.h", "transformer.h", 2)
    assert section.points[0].leave_input  # measured up to the attention sum, before the ffn
    report = morphspec.probe(SPECS / "gpt_mini.yaml", samples=4)
    assert all(b.abs > 0 for b in report.blocks)


def test_a_layer_between_blocks_splits_sections(tmp_path: Path) -> None:
    spec = tmp_path / "split.yaml"
    spec.write_text(textwrap.dedent("""\
        morphspec: 1
        name: split
        input: {shape: [4]}
        body:
          - residual: {name: a, body: [linear: {out: 4}], post: relu}
          - dropout: {p: 0.1}
          - residual: {name: b, body: [linear: {out: 4}]}
          - layernorm
          - residual: {name: c, body: [linear: {out: 4}]}
        """), encoding="utf-8")  # fmt: skip
    arch = morphspec.resolve(morphspec.load_spec(spec))
    assert [[p.path for p in s.points] for s in find_sections(arch)] == [["a", "b"], ["c"]]
    assert [s.repeat for s in find_sections(arch)] == [None, None]


# -- the command line ------------------------------------------------------------------------


def test_json_is_one_document_with_the_fields(tmp_path: Path) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    result = invoke("probe", str(spec), str(ckpt), "--samples", "8", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"ok", "blocks", "sections"}
    assert [set(b) for b in doc["blocks"]] == [{"path", "section", "abs", "scaled"}] * 3
    assert set(doc["sections"][0]) == {
        "name", "blocks", "distance", "scaled_distance", "mean_scaled", "recommended_blocks",
        "perturbation_from_identity",
    }  # fmt: skip
    assert [b["scaled"] for b in doc["blocks"]] == pytest.approx([0.5, 0.25, 2.0], rel=1e-6)
    human = invoke("probe", str(spec), str(ckpt), "--samples", "8")
    assert human.exit_code == 0 and "stack.2.res" in human.stdout and "28" in human.stdout


def test_suggest_sets_a_var_count(tmp_path: Path) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, (0.5, 0.45))
    out = tmp_path / "sub" / "deeper.yaml"
    out.parent.mkdir()
    result = invoke("probe", str(spec), str(ckpt), "--set", "n=2", "--samples", "4",
                    "--suggest", str(out), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["sections"][0]["recommended_blocks"] == 10  # ceil(0.95 / 0.1)
    assert doc["suggest"]["vars"] == {"n": 10}
    student = morphspec.resolve(morphspec.load_spec(out))
    assert student.node("stack").args["times"] == 10
    teacher = morphspec.resolve(morphspec.load_spec(spec, set={"n": 2}))
    (op,) = diff(teacher, student).ops
    assert isinstance(op, InsertBlocks) and (op.old_times, op.new_times) == (2, 10)
    assert invoke("diff", str(spec), str(out), "--teacher-set", "n=2").exit_code == 0
    grown = convert(spec, out, ckpt, tmp_path / "grown.safetensors", teacher_set={"n": 2})
    assert grown.verification is not None and grown.verification.passed


def test_suggest_names_a_literal_count(tmp_path: Path) -> None:
    spec = stack_spec(tmp_path, times="2")
    ckpt = stack_checkpoint(tmp_path, spec, (0.5, 0.45))
    out = tmp_path / "deeper.yaml"
    result = invoke("probe", str(spec), str(ckpt), "--samples", "4", "--suggest", str(out),
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (change,) = json.loads(result.stdout)["suggest"]["changes"]
    assert change["var"] is None and (change["old_times"], change["new_times"]) == (2, 10)
    assert change["where"] == f"{spec}:9:14"  # the `times: 2` line
    assert "from 2 to 10" in out.read_text(encoding="utf-8")
    student = morphspec.resolve(morphspec.load_spec(out))  # validates: the teacher as it is
    assert student.state_shapes() == morphspec.resolve(morphspec.load_spec(spec)).state_shapes()


def test_suggest_never_overwrites_without_force_nor_the_teacher(tmp_path: Path) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    before = spec.read_bytes()
    result = invoke("probe", str(spec), str(ckpt), "--suggest", str(spec), "--force")
    assert result.exit_code == 1 and "never writes over its inputs" in result.output
    assert spec.read_bytes() == before
    out = tmp_path / "taken.yaml"
    out.write_text("mine", encoding="utf-8")
    result = invoke("probe", str(spec), str(ckpt), "--suggest", str(out))
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_text(encoding="utf-8") == "mine"
    assert invoke("probe", str(spec), str(ckpt), "--samples", "2", "--suggest", str(out),
                  "--force").exit_code == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.safetensors", "stack.yaml",
                                                          "taken.yaml"]  # fmt: skip


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    png = tmp_path / "probe.png"
    result = invoke("probe", str(spec), str(ckpt), "--samples", "4", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = invoke("probe", str(spec), str(ckpt), "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 1
    assert "morphspec[plot]" in result.output and not (tmp_path / "p.png").exists()


# -- bad input -------------------------------------------------------------------------------


def test_wrong_shaped_inputs_exit_1(tmp_path: Path) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    bad = tmp_path / "inputs.safetensors"
    save_file({"inputs": torch.zeros(3, 5)}, str(bad))
    result = invoke("probe", str(spec), str(ckpt), "--inputs", str(bad))
    assert result.exit_code == 1
    assert "shape [3, 5]" in result.output and "[N, 4]" in result.output
    save_file({"x": torch.zeros(3, 4)}, str(bad))
    result = invoke("probe", str(spec), str(ckpt), "--inputs", str(bad), "--json")
    assert (
        result.exit_code == 1
        and "no tensor 'inputs'" in json.loads(result.stdout)["problems"][0]["message"]
    )
    save_file({"inputs": torch.zeros(3, 4)}, str(bad))
    assert invoke("probe", str(spec), str(ckpt), "--inputs", str(bad)).exit_code == 0


def test_spec_without_residual_blocks_exits_1(tmp_path: Path) -> None:
    spec = tmp_path / "plain.yaml"
    spec.write_text("morphspec: 1\nname: plain\ninput: {shape: [4]}\nbody: [linear: {out: 2}]\n")
    ckpt = morphspec.save(morphspec.build(spec), tmp_path / "plain.safetensors", spec)
    result = invoke("probe", str(spec), str(ckpt))
    assert result.exit_code == 1 and "no residual block" in result.output


@pytest.mark.parametrize("epsilon", ["0", "-0.5", "nan"])
def test_epsilon_must_be_positive(tmp_path: Path, epsilon: str) -> None:
    spec = stack_spec(tmp_path)
    ckpt = stack_checkpoint(tmp_path, spec, FACTORS)
    result = invoke("probe", str(spec), str(ckpt), "--epsilon", epsilon)
    assert result.exit_code == 1 and "positive" in result.output
    with pytest.raises(MorphError, match="positive"):
        morphspec.probe(spec, epsilon=float(epsilon))


def test_import_morphspec_stays_torch_free() -> None:
    code = ("import sys, morphspec, morphspec.probe; assert callable(morphspec.probe);"
            " assert 'torch' not in sys.modules")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
