"""Mixtures of experts grow exactly: dense -> MoE upcycling (every expert a copy of the MLP,
the router small and non-zero) and E -> 2E with top_k doubled, alone or with the other
growths, in float64 to 1e-10 in eval and train mode in every exact family; copies carry
their source's Adam moments, one Adam step moves them apart, and the drift ratio stays
at most 2. Other expert growths are refused with the reason and the YAML place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import one_intraop_thread
from transformer_specs import build_teacher, transformer_spec
from yaml_marks import where

from morphspec.drift import drift_ratio
from morphspec.errors import PlanRefused
from morphspec.growing import GrowResult, grow
from morphspec.growth.init import he_std

LLAMA: dict[str, Any] = {"style": "llama", "heads": 4, "kv_heads": 2}
MLP = "transformer.h.0.ffn.mlp"


def moe_spec(experts: int = 1, top_k: int = 1, **kw: Any) -> str:
    text = transformer_spec(**{**LLAMA, **kw})
    return text.replace(
        "gated: true, bias: false}",
        f"gated: true, bias: false, experts: {experts}, top_k: {top_k}}}",
    )


CASES: dict[str, tuple[tuple[int, int], tuple[int, int], dict[str, Any]]] = {
    "upcycle 1->4 top 2": ((1, 1), (4, 2), {}),
    "upcycle 1->8 top 1": ((1, 1), (8, 1), {}),
    "double 2->4 top 1->2": ((2, 1), (4, 2), {}),
    "upcycle with d_model and hidden": ((1, 1), (4, 2), {"dim": 32, "hidden": 40}),
    "double with depth": ((2, 1), (4, 2), {"layers": 2}),
    "moe depth and query heads": ((2, 2), (2, 2), {"layers": 2, "heads": 8}),
}


def _grow(
    tmp_path: Path, t: tuple[int, int], s: tuple[int, int], family: str,
    dtype: torch.dtype = torch.float64, rtol: float = 1e-10, student: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[torch.nn.Module, GrowResult]:  # fmt: skip
    model = build_teacher(moe_spec(*t), tmp_path / "t.yaml", dtype)
    model.train(True)
    (tmp_path / "s.yaml").write_text(moe_spec(*s, **(student or {})), "utf-8")
    with one_intraop_thread():
        result = grow(
            model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family, rtol=rtol, **options
        )
    return model, result


@pytest.mark.parametrize("family", ["r2r", "net2net", "netmorph"])
@pytest.mark.parametrize("case", list(CASES))
def test_expert_growth_is_exact_in_float64(tmp_path: Path, case: str, family: str) -> None:
    t, s, student = CASES[case]
    _, result = _grow(tmp_path, t, s, family, student=student)
    assert result.verification is not None and result.train_verification is not None
    assert result.verification.rel_err <= 1e-10, result.verification
    assert result.train_verification.rel_err <= 1e-10, result.train_verification


def test_upcycling_is_exact_in_float32(tmp_path: Path) -> None:
    _, result = _grow(tmp_path, (1, 1), (8, 2), "r2r", torch.float32, rtol=1e-5)
    assert result.verification is not None and result.verification.rel_err <= 1e-5


def test_upcycled_experts_copy_the_mlp_and_the_router_is_small_not_zero(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, (1, 1), (4, 2), "net2net")
    s, t = result.student.state_dict(), model.state_dict()
    for j in range(4):
        for p in ("gate_proj", "up_proj", "down_proj"):
            assert torch.equal(s[f"{MLP}.experts.{j}.{p}.weight"], t[f"{MLP}.{p}.weight"])
    router = s[f"{MLP}.gate.weight"]
    assert router.shape == (4, 16) and bool((router != 0).all())
    assert float(router.std()) < he_std((4, 16)) / 4


def test_doubling_copies_experts_and_router_rows(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, (2, 1), (4, 2), "r2r")
    s, t = result.student.state_dict(), model.state_dict()
    router = s[f"{MLP}.gate.weight"]
    assert torch.equal(router, torch.cat([t[f"{MLP}.gate.weight"]] * 2))
    for j in range(4):
        assert torch.equal(
            s[f"{MLP}.experts.{j}.up_proj.weight"], t[f"{MLP}.experts.{j % 2}.up_proj.weight"]
        )


def test_copies_carry_their_sources_moments_and_one_step_moves_them_apart(
    tmp_path: Path,
) -> None:
    model = build_teacher(moe_spec(), tmp_path / "t.yaml", torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(0))
    model(x).square().mean().backward()
    opt.step()
    (tmp_path / "s.yaml").write_text(moe_spec(4, 2), "utf-8")
    with one_intraop_thread():
        result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", optimizer=opt, rtol=1e-10)
    assert result.optimizer is not None
    student, new_opt = result.student, result.optimizer
    dense = dict(model.named_parameters())[f"{MLP}.up_proj.weight"]
    params = dict(student.named_parameters())
    ups = [params[f"{MLP}.experts.{j}.up_proj.weight"] for j in range(4)]
    for p in ups:
        assert torch.equal(new_opt.state[p]["exp_avg"], opt.state[dense]["exp_avg"])
        assert torch.equal(new_opt.state[p]["exp_avg_sq"], opt.state[dense]["exp_avg_sq"])
    new_opt.zero_grad()
    student(
        torch.randint(0, 32, (8, 8), generator=torch.Generator().manual_seed(1))
    ).square().mean().backward()
    new_opt.step()
    moved = [float((ups[j] - ups[0]).detach().abs().max()) for j in range(1, 4)]
    assert min(moved) > 0, moved  # the router sent them different tokens


def test_drift_ratio_of_upcycling_is_at_most_two(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, (1, 1), (8, 2), "r2r")
    drift = drift_ratio(model, result.student, result.plan.student, optimizer="adam", steps=1)
    assert drift.teacher_moved > 0 and drift.ratio <= 2.0, drift


REFUSALS: dict[str, tuple[tuple[int, int], tuple[int, int], str]] = {
    "not a doubling": ((2, 1), (3, 1), "copied equally often (experts 2 -> 4"),
    "top_k not doubled": ((2, 1), (4, 1), "top_k must double (1 -> 2)"),
    "top_k alone": ((2, 1), (2, 2), "a top_k that grows alone"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_other_expert_growths_are_refused(tmp_path: Path, case: str) -> None:
    t, s, words = REFUSALS[case]
    with pytest.raises(PlanRefused, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        _grow(tmp_path, t, s, "r2r")
    assert str(err.value.problems[0].mark) == where(tmp_path / "s.yaml", "mlp: {name: mlp")


def test_the_plan_lists_the_expert_growth(tmp_path: Path) -> None:
    from morphspec.growth.plan import AddExperts, plan_for

    (tmp_path / "t.yaml").write_text(moe_spec(2, 1), "utf-8")
    (tmp_path / "s.yaml").write_text(moe_spec(4, 2), "utf-8")
    _, _, plan = plan_for(tmp_path / "t.yaml", tmp_path / "s.yaml")
    assert plan.ops == [AddExperts(MLP, 2, 4, 1, 2)]
    assert plan.to_json()["ops"][0]["op"] == "add_experts"
