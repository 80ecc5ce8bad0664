"""`--family stack` (G_stack): new copy j of a repeat is teacher copy j mod L, bit for bit,
with its optimizer state; the output is written and its deviation reported (not exact);
widening and the other growths it has no rule for are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import make_teacher, one_intraop_thread, read_tensors
from transformer_specs import build_teacher, transformer_spec
from typer.testing import CliRunner

from morphspec.cli.app import app
from morphspec.errors import PlanRefused
from morphspec.growing import grow

GPT: dict[str, Any] = {"style": "gpt"}
LLAMA: dict[str, Any] = {"style": "llama", "heads": 4, "kv_heads": 2}
SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"


def _stack(tmp_path: Path, teacher: dict[str, Any], student: dict[str, Any], **kw: Any) -> Any:
    model = build_teacher(transformer_spec(**teacher), tmp_path / "t.yaml")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):  # two steps: distinct moments in every block
        opt.zero_grad()
        model(torch.randint(0, 32, (2, 8))).square().mean().backward()
        opt.step()
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    with one_intraop_thread():
        result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", family="stack",
                      optimizer=opt, **kw)  # fmt: skip
    return model, opt, result


@pytest.mark.parametrize(
    ("style", "old", "new"), [(GPT, 2, 4), (GPT, 2, 3), (LLAMA, 3, 7), (LLAMA, 1, 3)]
)
def test_copy_j_is_teacher_copy_j_mod_l_bit_for_bit(
    tmp_path: Path, style: dict[str, Any], old: int, new: int
) -> None:
    model, opt, result = _stack(tmp_path, {**style, "layers": old}, {**style, "layers": new})
    s, t = result.student.state_dict(), model.state_dict()
    assert set(s) >= set(t)
    for key in t:  # every teacher tensor keeps its place and bits
        assert torch.equal(s[key], t[key]), key
    copied = 0
    for key, value in s.items():
        if ".h." in key:
            head, j, rest = key.partition(".h.")[0], int(key.split(".h.")[1].split(".")[0]), None
            rest = key.split(".h.")[1].partition(".")[2]
            src = f"{head}.h.{j % old}.{rest}"
            assert torch.equal(value, t[src]), (key, src)
            copied += j >= old
    assert copied > 0
    assert result.optimizer is not None
    for name, p in result.student.named_parameters():
        if ".h." not in name:
            continue
        j = int(name.split(".h.")[1].split(".")[0])
        src = name.replace(f".h.{j}.", f".h.{j % old}.", 1)
        want = opt.state[model.get_parameter(src)]
        got = result.optimizer.state[p]
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(got[moment], want[moment]), (name, moment)
        assert torch.equal(got["step"], want["step"])


def test_stack_is_not_function_preserving_and_says_so(tmp_path: Path) -> None:
    """The deviation is measured and returned (no NotPreservingError at rtol 1e-10)."""
    _, _, result = _stack(tmp_path, {**GPT, "layers": 2}, {**GPT, "layers": 4}, rtol=1e-10)
    assert result.verification is not None and not result.verification.passed
    assert result.verification.rel_err > 1e-3
    assert any("does not compute the teacher's function" in w for w in result.warnings)


def test_the_student_after_a_step_trains(tmp_path: Path) -> None:
    """The mapped optimizer steps the student, and training the student (whose new copies
    come from the teacher's tensors) leaves the teacher untouched."""
    model, _, result = _stack(tmp_path, {**GPT, "layers": 1}, {**GPT, "layers": 2})
    assert result.optimizer is not None
    teacher = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in result.student.state_dict().items()}
    result.student(torch.randint(0, 32, (2, 8))).square().mean().backward()
    result.optimizer.step()
    after = result.student.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if ".h.1." in k)
    for k, v in model.state_dict().items():  # the copies own their memory
        assert torch.equal(v, teacher[k]), k


@pytest.mark.parametrize(
    ("student", "match"),
    [
        ({**GPT, "layers": 4, "dim": 32}, r"widens .*keep the widths equal"),
        ({**GPT, "layers": 2, "heads": 4}, r"widens .*no rule for new channels"),
        ({**GPT, "layers": 2}, r"adds no repeat copies"),
    ],
)
def test_refusals_name_the_reason(tmp_path: Path, student: dict[str, Any], match: str) -> None:
    with pytest.raises(PlanRefused, match=match) as err:
        _stack(tmp_path, {**GPT, "layers": 2}, student)
    assert all(p.mark is not None for p in err.value.problems)


@pytest.mark.parametrize("flag", [{"interleave": True}, {"new_blocks": "copy"}])
def test_flags_that_place_copies_are_refused(tmp_path: Path, flag: dict[str, Any]) -> None:
    with pytest.raises(PlanRefused, match="stack fixes both"):
        _stack(tmp_path, {**GPT, "layers": 2}, {**GPT, "layers": 4}, **flag)


def test_cli_writes_the_student_and_reports_rel_err(tmp_path: Path) -> None:
    """`morph convert --family stack` exits 0, writes the copies, warns and reports rel_err."""
    (tmp_path / "t.yaml").write_text(transformer_spec(**{**GPT, "layers": 2}), "utf-8")
    (tmp_path / "s.yaml").write_text(transformer_spec(**{**GPT, "layers": 5}), "utf-8")
    ckpt = make_teacher(tmp_path / "t.yaml", None, out=tmp_path / "t.safetensors")
    out = tmp_path / "s.safetensors"
    args = ["convert", str(tmp_path / "t.yaml"), str(tmp_path / "s.yaml"), str(ckpt),
            "-o", str(out), "--family", "stack", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["verification"]["rel_err"] > 1e-3
    assert "does not compute the teacher's function" in res.stderr
    s, t = read_tensors(out), read_tensors(ckpt)
    for j, src in [(2, 0), (3, 1), (4, 0)]:
        key = "transformer.h.{}.attn.q_proj.weight"
        assert torch.equal(s[key.format(j)], t[key.format(src)])


def test_cli_refusal_exits_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(transformer_spec(**{**GPT, "layers": 2}), "utf-8")
    (tmp_path / "s.yaml").write_text(transformer_spec(**{**GPT, "layers": 4, "dim": 32}), "utf-8")
    ckpt = make_teacher(tmp_path / "t.yaml", None, out=tmp_path / "t.safetensors")
    out = tmp_path / "s.safetensors"
    args = ["convert", str(tmp_path / "t.yaml"), str(tmp_path / "s.yaml"), str(ckpt),
            "-o", str(out), "--family", "stack"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "keep the widths equal" in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_families_lists_stack() -> None:
    res = CliRunner().invoke(app, ["families", "--json"])
    assert res.exit_code == 0
    stack = json.loads(res.stdout)["families"]["stack"]
    assert stack["function_preserving"].startswith("no")
    assert "j mod L" in stack["deepen"]
