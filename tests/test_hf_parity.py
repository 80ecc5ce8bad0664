"""Parity with transformers itself: models it makes at random init, saved by save_pretrained
(sharded too), imported, compared in float64; exported folders loaded back strictly.

Hugging Face's LlamaRMSNorm rounds its input to float32 even in a float64 model (its
statistics are float32 by design), which alone puts ~1e-7 between any float64 Llama and
it. The float64 comparison therefore runs HF's RMSNorm with the same formula kept in
float64 (`float64_rmsnorm`); the float32 comparison runs transformers as it is.
"""

from __future__ import annotations

import copy
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
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

SMALL = {"vocab_size": 40, "bos_token_id": 0, "eos_token_id": 1}
LLAMA = {
    **SMALL,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 32,
}
MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(**SMALL, n_positions=16, n_embd=12, n_layer=2, n_head=3)
    ),
    "gpt2-untied-gelu": lambda: GPT2LMHeadModel(
        GPT2Config(
            **SMALL,
            n_positions=16,
            n_embd=8,
            n_layer=1,
            n_head=2,
            n_inner=20,
            activation_function="gelu",
            tie_word_embeddings=False,
            layer_norm_epsilon=1e-3,
        )
    ),
    "llama-gqa": lambda: LlamaForCausalLM(
        LlamaConfig(**LLAMA, num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5)
    ),
    "llama-tied-bias": lambda: LlamaForCausalLM(
        LlamaConfig(
            **LLAMA,
            num_key_value_heads=4,
            head_dim=6,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
        )
    ),
    "mistral": lambda: MistralForCausalLM(
        MistralConfig(**LLAMA, num_key_value_heads=1, sliding_window=None)
    ),
}
SHARDED = {"llama-gqa": "4KB", "gpt2": "3KB"}


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
            p.add_(torch.randn_like(p) * 0.2)  # so norms' gains and biases are not 1 and 0
    root = tmp_path_factory.mktemp(name)
    model.save_pretrained(root / "hf", max_shard_size=SHARDED.get(name, "5GB"))
    (root / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 16}')
    import_hf(root / "hf", root / "teacher.yaml")
    ids = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(1))
    return name, model, root, ids


def test_imported_models_equal_transformers_in_float64(saved: Any) -> None:
    name, model, root, ids = saved
    assert (root / "hf" / "model.safetensors.index.json").is_file() == (name in SHARDED)
    ours = morphspec.load(root / "teacher.yaml", root / "hf", dtype=torch.float64)
    with torch.no_grad(), float64_rmsnorm():
        want = model(ids).logits
        assert _rel(want, ours(ids)) < 1e-12


def test_imported_models_equal_transformers_as_it_is_in_float32(saved: Any) -> None:
    _, model, root, ids = saved
    ours = morphspec.load(root / "teacher.yaml", root / "hf")
    with torch.no_grad():
        want = copy.deepcopy(model).float()(ids).logits
        assert _rel(want, ours(ids)) < 1e-6


def test_exported_folders_load_strictly_and_compute_the_same(saved: Any) -> None:
    _, model, root, ids = saved
    out = root / "export"
    export_hf(
        root / "teacher.yaml", root / "hf", out, source=root / "hf", shard_bytes=3000, force=True
    )
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    with transformers_warnings() as warned:
        again, info = AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float64, output_loading_info=True
        )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set() and not info["error_msgs"], info
    assert warned == []  # transformers logs a loading report for any key problem
    assert type(again) is type(model)
    with torch.no_grad():
        assert torch.equal(again.eval()(ids).logits, model(ids).logits)


@pytest.mark.slow
def test_round_trip_with_a_grown_model(saved: Any, tmp_path: Path) -> None:
    """import, a student by extends + vars, convert from the folder, export: the folder that
    transformers loads computes the teacher's function. Llama/Mistral and the GPT-2 with
    `n_inner` grow their MLP; the default GPT-2 (MLP 4*dim, tied head) grows d_model 2x
    (duplication lift, tie kept), heads 2x (head_dim kept) and one more block."""
    _, model, root, ids = saved
    teacher = root / "teacher.yaml"
    sizes = morphspec.load_spec(teacher).vars
    if "hidden" in sizes:
        old = int(sizes["hidden"])
        grow, want = f"hidden: {old + 6}", old + 6
    else:
        dim, heads, layers = (int(sizes[k]) for k in ("dim", "heads", "layers"))
        grow, want = f"dim: {2 * dim}, heads: {2 * heads}, layers: {layers + 1}", 8 * dim
    student = tmp_path / "student.yaml"
    student.write_text(f"morphspec: 1\nname: s\nextends: {teacher}\nvars: {{{grow}}}\n")
    ckpt = tmp_path / "student.safetensors"
    convert(teacher, student, root / "hf", ckpt)  # its own check runs in float32
    export_hf(student, ckpt, tmp_path / "out", source=root / "hf")
    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float64).eval()
    size = getattr(grown.config, "intermediate_size", None) or grown.config.n_inner
    assert size == want or (size is None and grown.config.n_embd * 4 == want)
    with torch.no_grad(), float64_rmsnorm():
        assert _rel(model(ids).logits, grown(ids).logits) < 1e-10
