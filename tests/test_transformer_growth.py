"""Transformer growth is exact: heads (by kv groups), kv heads (repeated), head_dim (inside
every head, softmax scale compensated), d_model through layernorm/rmsnorm (duplication
lift; tied heads stay tied) and depth (new pre-norm blocks start at zero), on GPT-style and
Llama-style decoders, in float64 to 1e-10 in eval and train mode, in every exact family;
every refusal names its reason and YAML place."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import one_intraop_thread
from transformer_specs import build_teacher, transformer_spec
from yaml_marks import where

from morphspec.errors import MorphError, PlanRefused
from morphspec.growing import GrowResult, grow, verify_modules

GPT: dict[str, Any] = {"style": "gpt"}
LLAMA: dict[str, Any] = {"style": "llama", "heads": 4, "kv_heads": 2}
FAMILIES = ("r2r", "net2net", "netmorph")

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "gpt heads 2->4": (GPT, {**GPT, "heads": 4}),
    "gpt heads 2->3 (odd)": (GPT, {**GPT, "heads": 3}),
    "llama kv groups 2->4": (LLAMA, {**LLAMA, "heads": 8, "kv_heads": 4}),
    "llama query heads 4->8 at kv 2": (LLAMA, {**LLAMA, "heads": 8}),
    "llama query heads 4->6 at kv 2 (one per group)": (LLAMA, {**LLAMA, "heads": 6}),
    "llama kv heads 1->4 (repeat)": (
        {**LLAMA, "kv_heads": 1},
        {**LLAMA, "kv_heads": 4},
    ),
    "gpt head_dim 8->12": (GPT, {**GPT, "head_dim": 12}),
    "gpt head_dim 8->13 and heads 2->4": (GPT, {**GPT, "head_dim": 13, "heads": 4}),
    "gpt d_model 16->32": (GPT, {**GPT, "dim": 32}),
    "gpt d_model 16->48 tied": ({**GPT, "tie": True}, {**GPT, "dim": 48, "tie": True}),
    "llama d_model 16->32": (LLAMA, {**LLAMA, "dim": 32}),
    "llama d_model 16->24 zero-fill": (LLAMA, {**LLAMA, "dim": 24, "eps": 1e-5 * 16 / 24}),
    "llama d_model 16->20 zero-fill tied": (
        {**LLAMA, "tie": True},
        {**LLAMA, "dim": 20, "eps": 1e-5 * 16 / 20, "tie": True},
    ),
    "gpt d_model 16->20 mean-fill": (GPT, {**GPT, "dim": 20, "eps": 1e-5 * 16 / 20}),
    "gpt d_model 16->32 mean-fill tied, deeper": (
        {**GPT, "tie": True},
        {**GPT, "dim": 32, "eps": 1e-5 / 2, "tie": True, "layers": 2},
    ),
    "gpt depth 1->3 nested": (GPT, {**GPT, "layers": 3}),
    "gpt depth 1->2 flat": ({**GPT, "flat": True}, {**GPT, "layers": 2, "flat": True}),
    "llama depth 1->3": (LLAMA, {**LLAMA, "layers": 3}),
    "gpt all at once": (
        {**GPT, "layers": 2},
        {**GPT, "layers": 4, "dim": 32, "heads": 4, "hidden": 48},
    ),
    "llama all at once": (
        {**LLAMA, "layers": 2},
        {**LLAMA, "layers": 4, "dim": 32, "heads": 8, "kv_heads": 4, "hidden": 48},
    ),
}


def _grow(
    tmp_path: Path, teacher: dict[str, Any], student: dict[str, Any], family: str,
    dtype: torch.dtype = torch.float64, rtol: float = 1e-10, train: bool = False,
    **options: Any,
) -> tuple[torch.nn.Module, GrowResult]:  # fmt: skip
    model = build_teacher(transformer_spec(**teacher), tmp_path / "t.yaml", dtype)
    model.train(train)
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    with one_intraop_thread():
        result = grow(
            model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family, rtol=rtol, **options
        )
    return model, result


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_transformer_growth_is_exact_in_float64(tmp_path: Path, case: str, family: str) -> None:
    teacher, student = CASES[case]
    model, result = _grow(tmp_path, teacher, student, family, train=True)
    assert result.verification is not None and result.train_verification is not None
    assert result.verification.rel_err <= 1e-10, result.verification
    assert result.train_verification.rel_err <= 1e-10, result.train_verification
    assert result.student.training  # the teacher's mode
    t_count = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in result.student.parameters()) > t_count


@pytest.mark.parametrize("case", ["gpt all at once", "llama all at once", "gpt head_dim 8->12"])
def test_transformer_growth_in_float32(tmp_path: Path, case: str) -> None:
    teacher, student = CASES[case]
    _, result = _grow(tmp_path, teacher, student, "r2r", torch.float32, rtol=1e-5)
    assert result.verification is not None and result.verification.rel_err <= 1e-5


def test_new_heads_are_paired_and_read_with_opposite_columns(tmp_path: Path) -> None:
    """R2R on heads 2 -> 4 (head_dim 8): heads 2 and 3 have equal q/k/v rows and o_proj
    reads them with columns Z and -Z, Z not zero; the teacher's heads are untouched."""
    model, result = _grow(tmp_path, GPT, {**GPT, "heads": 4}, "r2r")
    s = result.student.state_dict()
    t = model.state_dict()
    attn = "transformer.h.0.attn"
    for p in ("q_proj", "k_proj", "v_proj"):
        w = s[f"{attn}.{p}.weight"]
        assert torch.equal(w[:16], t[f"{attn}.{p}.weight"])
        assert torch.equal(w[16:24], w[24:32]) and w[16:24].abs().sum() > 0
    o = s[f"{attn}.o_proj.weight"]
    assert torch.equal(o[:, :16], t[f"{attn}.o_proj.weight"])
    assert torch.equal(o[:, 16:24], -o[:, 24:32]) and o[:, 16:24].abs().sum() > 0


def test_kv_heads_repeat_each_head_to_its_new_groups(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, {**LLAMA, "kv_heads": 1}, LLAMA, "r2r")
    k = result.student.state_dict()["transformer.h.0.attn.k_proj.weight"]
    old = model.state_dict()["transformer.h.0.attn.k_proj.weight"]
    assert torch.equal(k, torch.cat([old, old]))


def test_duplication_lift_halves_columns_and_keeps_ties(tmp_path: Path) -> None:
    """Net2Net's lift: consumers read [W/2, W/2]; the tied head's norm is halved."""
    t = {**GPT, "tie": True}
    model, result = _grow(tmp_path, t, {**t, "dim": 32}, "net2net")
    s, old = result.student.state_dict(), model.state_dict()
    q = s["transformer.h.0.attn.q_proj.weight"][:16]
    w = old["transformer.h.0.attn.q_proj.weight"]
    assert torch.equal(q[:, :16], w / 2) and torch.equal(q[:, 16:], w / 2)
    gain = old["transformer.ln_f.weight"]
    assert torch.equal(s["transformer.ln_f.weight"], torch.cat([gain, gain]) / 2)
    assert "lm_head.weight" not in s  # still tied: the head owns no key


def test_fills_scale_gains_and_fill_new_channels(tmp_path: Path) -> None:
    """RMSNorm zero-fill: new embedding columns 0, gains γ·√(n/n'); LayerNorm mean-fill:
    new embedding columns the mean of the old ones."""
    model, result = _grow(tmp_path, LLAMA, {**LLAMA, "dim": 24, "eps": 1e-5 * 16 / 24}, "r2r")
    s, old = result.student.state_dict(), model.state_dict()
    assert not s["transformer.wte.weight"][:, 16:].any()
    gain = s["transformer.ln_f.weight"][:16]
    assert torch.allclose(gain, old["transformer.ln_f.weight"] * math.sqrt(16 / 24), atol=1e-15)
    model, result = _grow(tmp_path, GPT, {**GPT, "dim": 20, "eps": 1e-5 * 16 / 20}, "r2r")
    wte, old_wte = (
        result.student.state_dict()["transformer.wte.weight"],
        model.state_dict()["transformer.wte.weight"],
    )
    assert torch.allclose(wte[:, 16:], old_wte.mean(1, keepdim=True).expand(-1, 4), atol=1e-15)


def test_head_dim_scales_queries_by_the_softmax_factor(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, GPT, {**GPT, "head_dim": 32}, "netmorph")
    q = result.student.state_dict()["transformer.h.0.attn.q_proj.weight"]
    old = model.state_dict()["transformer.h.0.attn.q_proj.weight"]
    assert torch.allclose(q[:8], old[:8] * 2.0, rtol=0, atol=1e-15)  # √(32/8) = 2
    assert torch.allclose(q[32:40], old[8:16] * 2.0, rtol=0, atol=1e-15)


def test_growth_keeps_the_optimizer_state(tmp_path: Path) -> None:
    model = build_teacher(transformer_spec(**LLAMA), tmp_path / "t.yaml")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 32, (4, 8))
    model(x).square().mean().backward()
    opt.step()
    student = {**LLAMA, "heads": 8, "kv_heads": 4, "dim": 32, "layers": 2}
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", optimizer=opt, rtol=1e-10)
    assert result.optimizer is not None and result.optimizer.state


# -- refusals ----------------------------------------------------------------------------
REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    "query heads change kv group": (
        LLAMA,
        {**LLAMA, "heads": 12, "kv_heads": 4},
        "would move old query heads to another kv head",
        "attention: {name: attn",
    ),
    "kv_heads not a multiple": (
        {**LLAMA, "heads": 6, "kv_heads": 2},
        {**LLAMA, "heads": 6, "kv_heads": 3},
        "kv_heads 2 -> 3",
        "attention: {name: attn",
    ),
    "head_dim under rope": (
        LLAMA,
        {**LLAMA, "head_dim": 16},
        "head_dim 8 -> 16 with rope",
        "attention: {name: attn",
    ),
    "d_model not a multiple": (
        GPT,
        {**GPT, "dim": 24},
        "no exact lift fits: keep each eps and grow to a multiple of 16 (duplication",
        "layernorm: {eps",
    ),
    "post-norm depth": (
        {**GPT, "post_norm": True},
        {**GPT, "post_norm": True, "layers": 2},
        "a post-norm block normalises x + F(x)",
        "layernorm: {eps",
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_transformer_refusals(tmp_path: Path, case: str, family: str) -> None:
    teacher, student, message, place = REFUSALS[case]
    with pytest.raises(PlanRefused) as err:
        _grow(tmp_path, teacher, student, family)
    problem = next(p for p in err.value.problems if message in p.message)
    assert str(problem.mark) == where(tmp_path / "s.yaml", place), problem


def test_a_tied_head_needs_a_norm_right_before_it(tmp_path: Path) -> None:
    t = {**GPT, "tie": True}
    text = transformer_spec(**t).replace(
        "  - linear: {name: lm_head",
        "  - dropout: {name: drop, p: 0.0}\n  - linear: {name: lm_head",
    )
    (tmp_path / "t.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "s.yaml").write_text(text.replace("dim: 16", "dim: 32"), encoding="utf-8")
    model = build_teacher(text, tmp_path / "t.yaml")
    with pytest.raises(PlanRefused, match="absorbs 1/k, and there is none") as err:
        grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml")
    assert str(err.value.problems[0].mark) == where(tmp_path / "s.yaml", "linear: {name: lm_head")


EXAMPLE_STUDENTS = [
    ("gpt_mini", s)
    for s in ("gpt_mini_heads", "gpt_mini_head_dim", "gpt_mini_wide", "gpt_mini_deep",
              "gpt_mini_grown")
] + [
    ("llama_mini", s)
    for s in ("llama_mini_heads", "llama_mini_kv", "llama_mini_wide", "llama_mini_deep",
              "llama_mini_grown")
]  # fmt: skip


@pytest.mark.parametrize(("teacher", "student"), EXAMPLE_STUDENTS)
def test_example_students_grow_exactly(tmp_path: Path, teacher: str, student: str) -> None:
    """Each shipped transformer student grows from its teacher (R2R, float64, both modes)."""
    specs = Path(__file__).resolve().parent.parent / "examples" / "specs"
    text = (specs / f"{teacher}.yaml").read_text(encoding="utf-8")
    model = build_teacher(text, tmp_path / f"{teacher}.yaml")
    with one_intraop_thread():
        result = grow(model, specs / f"{teacher}.yaml", specs / f"{student}.yaml", rtol=1e-10)
    assert result.verification is not None and result.train_verification is not None
    assert max(result.verification.rel_err, result.train_verification.rel_err) <= 1e-10


@pytest.mark.parametrize(
    ("student", "family", "exact"),
    [
        ({**LLAMA, "heads": 8, "kv_heads": 4, "layers": 2}, "r2r", True),  # copies, negations
        ({**LLAMA, "dim": 32}, "net2net", True),  # W/2 is exact in binary
        ({**LLAMA, "dim": 32}, "r2r", False),  # W/2 ± R rounds
        ({**GPT, "head_dim": 16}, "netmorph", False),  # √(16/8) rounds
    ],
)
def test_bfloat16_teachers_round_once(
    tmp_path: Path, student: dict[str, Any], family: str, exact: bool
) -> None:
    """A bf16 teacher is grown in float64 and rounded once: constructions made of copies,
    negations and halvings stay exact; W/2 ± R and √(d'/d) lose one bf16 rounding (both
    models compared in float64, so only the construction's rounding is measured)."""
    teacher = LLAMA if student["style"] == "llama" else GPT
    model = build_teacher(transformer_spec(**teacher), tmp_path / "t.yaml", torch.bfloat16)
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    with one_intraop_thread():
        result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family, verify=False)
        assert next(result.student.parameters()).dtype == torch.bfloat16
        ev, _ = verify_modules(model.double(), result.student.double(), result.plan.teacher,
                               16, 0, 1.0)  # fmt: skip
    if exact:
        assert ev.rel_err <= 1e-12, ev
    else:
        assert 1e-6 < ev.rel_err < 2e-2, ev  # about one bf16 rounding (2^-8), no more


def test_mean_fill_refuses_to_map_an_optimizer(tmp_path: Path) -> None:
    """Mean-fill's new rows average teacher entries: no moment map, a clear refusal."""
    model = build_teacher(transformer_spec(**GPT), tmp_path / "t.yaml")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randint(0, 32, (2, 8))).square().mean().backward()
    opt.step()
    student = {**GPT, "dim": 20, "eps": 1e-5 * 16 / 20}
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    with pytest.raises(MorphError, match=r"optimizer state of 'transformer\.wte\.weight' cannot"):
        grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", optimizer=opt)


def test_diff_says_how_transformer_spaces_grow() -> None:
    from morphspec.cli.growth_options import plan_table
    from morphspec.growth.plan import plan_for

    specs = Path(__file__).resolve().parent.parent / "examples" / "specs"
    _, _, plan = plan_for(specs / "gpt_mini.yaml", specs / "gpt_mini_grown.yaml")
    cells = [c for col in plan_table(plan).columns for c in col._cells]
    assert "64 -> 128 (norm-preserving lift)" in cells
    assert "64 -> 128 (+64, by head)" in cells


@pytest.mark.parametrize("family", FAMILIES)
def test_interleaved_blocks_are_exact_and_old_blocks_move(tmp_path: Path, family: str) -> None:
    """--interleave (LLaMA-Pro): 2 -> 4 blocks as old 0, new, old 1, new; the teacher's
    block 1 is the student's block 2, bit for bit, and the optimizer state follows it."""
    model = build_teacher(transformer_spec(**{**LLAMA, "layers": 2}), tmp_path / "t.yaml")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randint(0, 32, (2, 8))).square().mean().backward()
    opt.step()
    student = {**LLAMA, "layers": 4, "dim": 32}
    (tmp_path / "s.yaml").write_text(transformer_spec(**student), encoding="utf-8")
    with one_intraop_thread():
        result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family,
                      interleave=True, optimizer=opt, rtol=1e-10)  # fmt: skip
    assert result.verification is not None and result.train_verification is not None
    assert max(result.verification.rel_err, result.train_verification.rel_err) <= 1e-10
    moves = result.plan.to_json()["ops"][-1]
    assert moves["op"] == "interleave_blocks"
    assert moves["moves"] == [
        ["transformer.h.2", "transformer.h.1"],
        ["transformer.h.1", "transformer.h.2"],
    ]
    s, t = result.student.state_dict(), model.state_dict()
    key = "attn.o_proj.weight"
    assert torch.equal(s[f"transformer.h.2.{key}"][:16], t[f"transformer.h.1.{key}"])
    assert not s[f"transformer.h.1.{key}"].any() or family == "r2r"  # new: zero (or paired)
    assert result.optimizer is not None
    moved = result.student.get_parameter(f"transformer.h.2.{key}")
    m = result.optimizer.state[moved]["exp_avg"]
    assert torch.equal(m[:16], opt.state[model.get_parameter(f"transformer.h.1.{key}")]["exp_avg"])


def test_diff_shows_the_interleaved_plan() -> None:
    """`morph diff --interleave` prints the plan convert would write, moves included."""
    from typer.testing import CliRunner

    from morphspec.cli.app import app

    specs = Path(__file__).resolve().parent.parent / "examples" / "specs"
    args = ["diff", str(specs / "gpt_mini.yaml"), str(specs / "gpt_mini.yaml"),
            "--student-set", "layers=4", "--json"]  # fmt: skip
    plain = json.loads(CliRunner().invoke(app, args).stdout)
    assert "interleave_blocks" not in {op["op"] for op in plain["ops"]}
    result = CliRunner().invoke(app, [*args, "--interleave"])
    assert result.exit_code == 0, result.stdout
    (moves,) = [op for op in json.loads(result.stdout)["ops"] if op["op"] == "interleave_blocks"]
    assert moves["repeat"] == "transformer.h"
    table = CliRunner().invoke(app, [*args[:-1], "--interleave"], terminal_width=120).stdout
    assert "interleave" in table and "copies move" in table


def test_interleaved_order() -> None:
    from morphspec.growth.interleave import interleaved_order

    assert interleaved_order(2, 4) == [0, 2, 1, 3]
    assert interleaved_order(4, 6) == [0, 1, 4, 2, 3, 5]
    assert interleaved_order(3, 5) == [0, 3, 1, 2, 4]
    assert interleaved_order(1, 4) == [1, 2, 0, 3]  # more new than old: they gather


def test_interleave_refuses_a_repeat_whose_first_copy_differs(tmp_path: Path) -> None:
    """resnet_cifar18's stages override copy 0 (`first`: stride 2, projection shortcut):
    a new copy cannot take its place."""
    from morphspec.growth.plan import plan_for

    specs = Path(__file__).resolve().parent.parent / "examples" / "specs"
    with pytest.raises(PlanRefused, match="copies of repeat 'layer2' differ") as err:
        plan_for(specs / "resnet_cifar10.yaml", specs / "resnet_cifar18.yaml", interleave=True)
    assert str(err.value.problems[0].mark) == where(
        specs / "resnet_cifar18.yaml", "repeat: {name: layer2"
    )


def test_a_stream_with_both_norm_kinds_has_no_fill(tmp_path: Path) -> None:
    text = transformer_spec(**GPT).replace(
        "layernorm: {eps: 1e-05, name: ln_f}", "rmsnorm: {eps: 1e-05, name: ln_f}"
    )
    assert "rmsnorm" in text
    (tmp_path / "t.yaml").write_text(text, encoding="utf-8")
    student = text.replace("dim: 16", "dim: 20").replace("eps: 1e-05", "eps: 8e-06")
    (tmp_path / "s.yaml").write_text(student, encoding="utf-8")
    model = build_teacher(text, tmp_path / "t.yaml")
    with pytest.raises(PlanRefused, match="has no fill lift") as err:
        grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml")
    assert str(err.value.problems[0].mark) == where(tmp_path / "s.yaml", "layernorm: {eps")


@pytest.mark.parametrize("family", ["net2net", "netmorph"])
def test_new_blocks_as_copies_of_trained_ones(tmp_path: Path, family: str) -> None:
    """--new-blocks copy (LLaMA-Pro): a new block is the teacher's block before it with
    o_proj and down_proj zero; exact, interleaved or not."""
    model = build_teacher(transformer_spec(**{**LLAMA, "layers": 2}), tmp_path / "t.yaml")
    (tmp_path / "s.yaml").write_text(transformer_spec(**{**LLAMA, "layers": 4}), "utf-8")
    with one_intraop_thread():
        result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family,
                      new_blocks="copy", interleave=True, rtol=1e-10)  # fmt: skip
    assert result.verification is not None and result.train_verification is not None
    assert max(result.verification.rel_err, result.train_verification.rel_err) <= 1e-10
    s, t = result.student.state_dict(), model.state_dict()
    for n, o in (("1", "0"), ("3", "1")):  # interleaved: old 0, new, old 1, new
        new, old = f"transformer.h.{n}", f"transformer.h.{o}"
        assert torch.equal(s[f"{new}.attn.q_proj.weight"], t[f"{old}.attn.q_proj.weight"])
        assert not s[f"{new}.attn.o_proj.weight"].any()
        assert not s[f"{new}.ffn.mlp.down_proj.weight"].any()


def test_new_blocks_copy_is_refused_by_r2r(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(transformer_spec(**{**GPT, "layers": 2}), "utf-8")
    with pytest.raises(PlanRefused, match="--new-blocks copy: r2r") as err:
        _grow(tmp_path, GPT, {**GPT, "layers": 2}, "r2r", new_blocks="copy")
    assert str(err.value.problems[0].mark) == where(tmp_path / "s.yaml", "- sequential:")
