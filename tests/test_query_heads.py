"""Query heads at fixed kv heads (Llama 32/8 -> 64/8): new query heads join every kv group.
Exactness in float64, eval and train, for every family is in test_transformer_growth.py's
CASES; here, what each family puts where, the refusal, and the optimizer state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import one_intraop_thread
from transformer_specs import build_teacher, transformer_spec

from morphspec.errors import PlanRefused
from morphspec.growing import GrowResult, grow

# 4 query heads over 2 kv heads (g = 2), head_dim 8 -> 8 query heads (g = 4)
LLAMA: dict[str, Any] = {"style": "llama", "heads": 4, "kv_heads": 2}
ATTN = "transformer.h.0.attn"
HD = 8


def _grow(
    tmp_path: Path, family: str, heads: int = 8, model: torch.nn.Module | None = None,
    **options: Any,
) -> tuple[torch.nn.Module, GrowResult]:  # fmt: skip
    if model is None:
        model = build_teacher(transformer_spec(**LLAMA), tmp_path / "t.yaml", torch.float64)
    (tmp_path / "s.yaml").write_text(transformer_spec(**{**LLAMA, "heads": heads}), "utf-8")
    with one_intraop_thread():
        result = grow(
            model, tmp_path / "t.yaml", tmp_path / "s.yaml", family=family, rtol=1e-10, **options
        )
    assert result.verification is not None and result.verification.rel_err <= 1e-10
    return model, result


def _groups(w: torch.Tensor, dim: int, g: int) -> torch.Tensor:
    """(kv groups, g, head_dim, ...) view of q rows (dim 0) or o columns (dim 1)."""
    return w.movedim(dim, 0).unflatten(0, (2, g, HD))


@pytest.mark.parametrize("family", ["r2r", "net2net", "netmorph"])
def test_kv_projections_are_untouched_and_old_heads_keep_their_group(
    tmp_path: Path, family: str
) -> None:
    model, result = _grow(tmp_path, family)
    s, t = result.student.state_dict(), model.state_dict()
    for p in ("k_proj", "v_proj"):
        assert torch.equal(s[f"{ATTN}.{p}.weight"], t[f"{ATTN}.{p}.weight"])
    q, q0 = _groups(s[f"{ATTN}.q_proj.weight"], 0, 4), _groups(t[f"{ATTN}.q_proj.weight"], 0, 2)
    assert torch.equal(q[:, :2], q0)  # old heads at the start of their own group


def test_r2r_pairs_new_heads_within_a_group(tmp_path: Path) -> None:
    _, result = _grow(tmp_path, "r2r")
    s = result.student.state_dict()
    q = _groups(s[f"{ATTN}.q_proj.weight"], 0, 4)
    o = _groups(s[f"{ATTN}.o_proj.weight"], 1, 4)
    assert torch.equal(q[:, 2], q[:, 3]) and q[:, 2].abs().sum() > 0
    assert torch.equal(o[:, 2], -o[:, 3]) and o[:, 2].abs().sum() > 0


def test_r2r_gives_an_unpaired_head_zero_columns(tmp_path: Path) -> None:
    _, result = _grow(tmp_path, "r2r", heads=6)  # g 2 -> 3: one new head per group
    o = _groups(result.student.state_dict()[f"{ATTN}.o_proj.weight"], 1, 3)
    assert not o[:, 2].any()


def test_net2net_copies_heads_of_the_same_group(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, "net2net")
    s, t = result.student.state_dict(), model.state_dict()
    q, q0 = _groups(s[f"{ATTN}.q_proj.weight"], 0, 4), _groups(t[f"{ATTN}.q_proj.weight"], 0, 2)
    o, o0 = _groups(s[f"{ATTN}.o_proj.weight"], 1, 4), _groups(t[f"{ATTN}.o_proj.weight"], 1, 2)
    for new in (2, 3):
        src = next(h for h in range(2) if torch.equal(q[:, new], q0[:, h]))
        assert torch.equal(o[:, new], o[:, src])  # the copy and its source share the column
    counts = [1 + sum(torch.equal(q[:, n], q0[:, h]) for n in (2, 3)) for h in range(2)]
    for h in range(2):
        assert torch.allclose(o[:, h] * counts[h], o0[:, h], rtol=0, atol=1e-15)


def test_netmorph_reads_new_heads_with_zero_columns_and_refuses_zero_in(tmp_path: Path) -> None:
    model, result = _grow(tmp_path, "netmorph")
    o = _groups(result.student.state_dict()[f"{ATTN}.o_proj.weight"], 1, 4)
    q = _groups(result.student.state_dict()[f"{ATTN}.q_proj.weight"], 0, 4)
    assert not o[:, 2:].any() and q[:, 2:].abs().sum() > 0
    with pytest.raises(PlanRefused, match="a zero query attends uniformly"):
        _grow(tmp_path, "netmorph", model=model, netmorph_zero="in")


def test_the_optimizer_state_follows_the_heads(tmp_path: Path) -> None:
    """Net2Net: a copied head's q rows carry its source's Adam moments; old entries keep
    theirs; the grown model takes a step and stays near the teacher's step."""
    model = build_teacher(transformer_spec(**LLAMA), tmp_path / "t.yaml", torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(0))
    model(x).square().mean().backward()
    opt.step()
    _, result = _grow(tmp_path, "net2net", model=model, optimizer=opt)
    assert result.optimizer is not None
    names = dict(result.student.named_parameters())
    t_names = dict(model.named_parameters())
    new_m = result.optimizer.state[names[f"{ATTN}.q_proj.weight"]]["exp_avg"]
    old_m = opt.state[t_names[f"{ATTN}.q_proj.weight"]]["exp_avg"]
    q = _groups(names[f"{ATTN}.q_proj.weight"].detach(), 0, 4)
    q0 = _groups(t_names[f"{ATTN}.q_proj.weight"].detach(), 0, 2)
    m, m0 = _groups(new_m, 0, 4), _groups(old_m, 0, 2)
    assert torch.equal(m[:, :2], m0)
    for new in (2, 3):
        src = next(h for h in range(2) if torch.equal(q[:, new], q0[:, h]))
        assert torch.equal(m[:, new], m0[:, src])
