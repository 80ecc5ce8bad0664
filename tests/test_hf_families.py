"""The families beyond GPT-2 and Llama (issue 20), on models transformers makes from configs:
import parity (float64 to 1e-12 with HF's RMSNorm kept in float64, float32 as transformers
is to 1e-6), export loads strictly, and every growth that applies, written with --to-hf,
loads strictly, keeps the float64 logits to 1e-10 and generates the same greedy tokens."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import morphspec
from morphspec.convert import convert
from morphspec.interop import export_hf, import_hf

transformers = pytest.importorskip("transformers")
from hf_helpers import float64_rmsnorm, transformers_warnings  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SMALL = {"vocab_size": 40, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
DECODER = {
    **SMALL,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**DECODER, rope_theta=1e6, rms_norm_eps=1e-6)),
    "mixtral": lambda: MixtralForCausalLM(
        MixtralConfig(
            **DECODER, num_local_experts=4, num_experts_per_tok=2, experts_implementation="eager"
        )
    ),
}
MODELS["gemma"] = lambda: GemmaForCausalLM(GemmaConfig(**DECODER, head_dim=4))
MODELS["phi3"] = lambda: Phi3ForCausalLM(Phi3Config(**DECODER))
# HF's router takes its softmax in float32 even in a float64 model: ~1e-8 apart from ours
FLOAT64 = {"qwen2": 1e-12, "mixtral": 1e-6, "gemma": 1e-12, "phi3": 1e-12}
GROWN = {"qwen2": 1e-10, "mixtral": 1e-6, "gemma": 1e-10, "phi3": 1e-10}
# each growth that applies, as --set of the imported spec's vars
GROWTHS: dict[str, dict[str, str]] = {
    "qwen2": {
        "query heads": "heads=8",  # new query heads inside the 2 kv groups
        "kv groups": "heads=8,kv_heads=4",
        "kv heads": "kv_heads=4",
        "d_model": "dim=32",  # head_dim is a var: d_model alone, duplication lift
        "mlp": "hidden=40",
        "depth": "layers=3",
    },
    "mixtral": {
        "experts": "experts=8,top_k=4",  # every expert and router row copied once
        "query heads": "heads=8",
        "d_model": "dim=32",
        "mlp": "hidden=40",
        "depth": "layers=3",
        "all": "experts=8,top_k=4,heads=8,hidden=40,layers=3",
    },
}
GROWTHS["gemma"] = {  # d_model would change the embedding's scale √dim: refused
    "query heads": "heads=8",
    "kv groups": "heads=8,kv_heads=4",
    "mlp": "hidden=40",
    "depth": "layers=3",
}
GROWTHS["phi3"] = {  # fused qkv_proj and gate_up_proj grow through the key map's concat
    "query heads": "heads=8",
    "kv groups": "heads=8,kv_heads=4",
    "d_model": "dim=32",
    "mlp": "hidden=40",
    "depth": "layers=3",
}
FAMILIES = ("r2r", "net2net", "netmorph")
# Every growth x family passes (MORPHSPEC_HF_ALL=1 runs them all); by default each growth
# runs once, the family rotating, so the suite stays within its time budget.
ALL = os.environ.get("MORPHSPEC_HF_ALL") == "1"
CASES = [
    pytest.param(m, g, f, id=f"{m}-{g}-{f}", marks=() if j % 2 == 0 else pytest.mark.slow)
    for m in GROWTHS
    for j, g in enumerate(GROWTHS[m])
    for f in (FAMILIES if ALL else (FAMILIES[(j + len(m)) % 3],))
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A float64 model made by transformers, perturbed off its init, saved and imported."""
    name = request.param
    torch.manual_seed(0)
    model = MODELS[name]().to(torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    root = tmp_path_factory.mktemp(name)
    model.save_pretrained(root / "hf")
    import_hf(root / "hf", root / "teacher.yaml")
    ids = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(1))
    return name, model, root, ids


def test_import_parity_in_float64_and_float32(saved: Any) -> None:
    name, model, root, ids = saved
    ours = morphspec.load(root / "teacher.yaml", root / "hf", dtype=torch.float64)
    with torch.no_grad(), float64_rmsnorm():
        assert _rel(model(ids).logits, ours(ids)) < FLOAT64[name]
    ours32 = morphspec.load(root / "teacher.yaml", root / "hf")
    with torch.no_grad():
        assert _rel(copy.deepcopy(model).float()(ids).logits, ours32(ids)) < 1e-6


def test_imported_spec_has_a_var_for_every_size_and_the_eps(saved: Any) -> None:
    _, _, root, _ = saved
    spec = morphspec.load_spec(root / "teacher.yaml")
    assert {"head_dim", "eps", "heads", "kv_heads", "dim", "hidden", "layers"} <= set(spec.vars)
    assert {"experts", "top_k"} <= set(spec.vars)


def _load_strict(folder: Path) -> torch.nn.Module:
    with transformers_warnings() as warned:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float64, output_loading_info=True, experts_implementation="eager"
        )  # the grouped matmul of transformers' MoE refuses float64
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set() and not info["error_msgs"], info
    assert warned == []
    return model.eval()


def test_export_loads_strictly_and_computes_the_same(saved: Any) -> None:
    _, model, root, ids = saved
    out = root / "export"
    export_hf(root / "teacher.yaml", root / "hf", out, source=root / "hf", force=True)
    again = _load_strict(out)
    assert type(again) is type(model)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def _greedy(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), float64_rmsnorm():
        out = model.generate(
            ids[:, :4], attention_mask=torch.ones_like(ids[:, :4]), max_new_tokens=12,
            do_sample=False, pad_token_id=1,
        )  # fmt: skip
    assert isinstance(out, torch.Tensor)
    return out


@pytest.mark.parametrize(("saved", "growth", "family"), CASES, indirect=["saved"])
def test_growth_to_hf_loads_strictly_and_generates_the_same(
    saved: Any, growth: str, family: str, tmp_path: Path
) -> None:
    name, model, root, ids = saved
    out = tmp_path / "out"
    result = convert(
        root / "teacher.yaml", root / "teacher.yaml", root / "hf", to_hf=out, seed=3,
        student_set=GROWTHS[name][growth].split(","), family=family,
    )  # fmt: skip
    assert result.verification is not None and result.verification.passed
    grown = _load_strict(out)
    assert type(grown) is type(model)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())
    with torch.no_grad(), float64_rmsnorm():
        assert _rel(model(ids).logits, grown(ids).logits) < GROWN[name]
    assert torch.equal(_greedy(grown, ids), _greedy(model, ids))


def test_readme_upcycling_command_makes_a_mixtral(tmp_path: Path) -> None:
    """`morph convert llama.yaml llama.yaml ./llama --student-set experts=8 --student-set
    top_k=2 --to-hf ./llama-moe`: a Llama made by transformers becomes a
    MixtralForCausalLM with its function (float32 to 1e-5) and its greedy tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from typer.testing import CliRunner

    from morphspec.cli.app import app

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**DECODER)).eval()
    with torch.no_grad():
        for p in llama.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    llama.save_pretrained(tmp_path / "llama")
    runner = CliRunner()
    spec = str(tmp_path / "llama.yaml")
    res = runner.invoke(app, ["import-hf", str(tmp_path / "llama"), "-o", spec])
    assert res.exit_code == 0, res.output
    args = ["convert", spec, spec, str(tmp_path / "llama"), "--student-set", "experts=8"]
    args += ["--student-set", "top_k=2", "--to-hf", str(tmp_path / "llama-moe")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    with transformers_warnings() as warned:
        moe, info = AutoModelForCausalLM.from_pretrained(
            tmp_path / "llama-moe", output_loading_info=True, experts_implementation="eager"
        )
    assert warned == [] and info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert type(moe) is MixtralForCausalLM
    config = moe.config
    assert (config.num_local_experts, config.num_experts_per_tok) == (8, 2)
    ids = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _rel(llama(ids).logits, moe.eval()(ids).logits) < 1e-5
    want = llama.generate(ids[:, :4], max_new_tokens=12, do_sample=False, pad_token_id=1)
    got = moe.generate(ids[:, :4], max_new_tokens=12, do_sample=False, pad_token_id=1)
    assert torch.equal(want, got)


@pytest.mark.parametrize("saved", ["gemma"], indirect=True)
def test_gemma_d_model_is_refused_and_new_norms_start_at_gain_one(
    saved: Any, tmp_path: Path
) -> None:
    from morphspec.errors import MorphError

    _, _, root, _ = saved
    spec, hf = root / "teacher.yaml", root / "hf"
    with pytest.raises(MorphError, match=r"scale changes from 4\.0 to 5\.65"):
        convert(spec, spec, hf, tmp_path / "s.safetensors", student_set=["dim=32"])
    out = tmp_path / "deep"
    convert(spec, spec, hf, to_hf=out, student_set=["layers=3"], family="netmorph")
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    assert not state["model.layers.2.input_layernorm.weight"].any()  # gain 1 + 0
