"""`morph convert T S HF_DIR --to-hf OUT`: a transformers-made teacher folder (sharded or not)
grown straight into a folder that `from_pretrained` loads strictly, with the teacher's
float64 logits, for every exact transformer growth; refusals leave nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import morphspec.checkpoint.sharding as sharding
from morphspec.cli.app import app
from morphspec.convert import convert
from morphspec.errors import MorphError
from morphspec.interop import import_hf

transformers = pytest.importorskip("transformers")
from hf_helpers import float64_rmsnorm, transformers_warnings  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

SMALL = {"vocab_size": 40, "bos_token_id": 0, "eos_token_id": 1}
TEACHERS: dict[str, tuple[Callable[[], torch.nn.Module], str | None]] = {
    # GPT-2 as transformers defaults it (gelu_new, tied head), saved in shards
    "gpt2": (
        lambda: GPT2LMHeadModel(
            GPT2Config(**SMALL, n_positions=16, n_embd=12, n_layer=2, n_head=3)
        ),
        "3KB",
    ),
    "llama": (
        lambda: LlamaForCausalLM(
            LlamaConfig(
                **SMALL,
                hidden_size=16,
                intermediate_size=24,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=32,
                rope_theta=500000.0,
                rms_norm_eps=1e-5,
            )
        ),
        None,
    ),
}
# each exact transformer growth, as --set of the imported spec's vars
GROWTHS = {
    "gpt2": {
        "heads": "dim=24,heads=6",  # heads appended, head_dim kept, d_model lifted
        "head_dim": "dim=24",  # head_dim 4 -> 8 (softmax scale compensated), d_model lifted
        "depth": "layers=4",
        "all": "dim=24,heads=6,layers=3",
    },
    "llama": {
        "heads": "dim=32,heads=8,kv_heads=4",  # whole kv groups appended, head_dim kept
        "query heads": "heads=8",  # new query heads join both kv groups (kv_heads kept)
        "kv_heads": "kv_heads=4",  # kv heads repeated
        "mlp": "hidden=40",  # (head_dim with RoPE is refused: docs/transformers.md)
        "depth": "layers=3",
        "all": "dim=32,heads=8,kv_heads=4,hidden=40,layers=3",
    },
}
FAST = {("gpt2", "all", "r2r"), ("llama", "all", "net2net")}
CASES = [
    pytest.param(t, g, f, id=f"{t}-{g}-{f}", marks=() if (t, g, f) in FAST else pytest.mark.slow)
    for t in GROWTHS
    for g in GROWTHS[t]
    for f in ("r2r", "net2net", "netmorph")
]


@pytest.fixture(scope="module", params=sorted(TEACHERS))
def teacher(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = request.param
    make, shards = TEACHERS[name]
    torch.manual_seed(0)
    model = make().to(torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # gains and biases off 1 and 0
    root = tmp_path_factory.mktemp(name)
    model.save_pretrained(root / "hf", max_shard_size=shards or "5GB")
    (root / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 16}')
    import_hf(root / "hf", root / "teacher.yaml")
    ids = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(1))
    return name, model, root, ids


def _sets(text: str) -> list[str]:
    return text.split(",")


def _load_strict(folder: Path) -> torch.nn.Module:
    with transformers_warnings() as warned:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float64, output_loading_info=True
        )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set() and not info["error_msgs"], info
    assert warned == []
    return model.eval()


@pytest.mark.parametrize(("teacher", "growth", "family"), CASES, indirect=["teacher"])
def test_to_hf_output_loads_strictly_with_the_teachers_logits(
    teacher: Any, growth: str, family: str, tmp_path: Path
) -> None:
    name, model, root, ids = teacher
    out = tmp_path / "out"
    result = convert(
        root / "teacher.yaml",
        root / "teacher.yaml",
        root / "hf",
        to_hf=out,
        student_set=_sets(GROWTHS[name][growth]),
        family=family,
        seed=3,
    )
    assert result.output == out and result.verification and result.verification.passed
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".morph-output",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer_config.json",
    ]
    assert (out / "tokenizer_config.json").read_text() == '{"model_max_length": 16}'
    grown = _load_strict(out)
    assert type(grown) is type(model)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())
    with torch.no_grad(), float64_rmsnorm():
        want, got = model(ids).logits, grown(ids).logits
    assert float((want - got).abs().max() / want.abs().max()) < 1e-10


def test_to_hf_shards_above_the_size_and_replaces_with_force(
    teacher: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model, root, ids = teacher
    monkeypatch.setattr(sharding, "MIN_SHARD", 1)  # a tiny model, shards of a few KB
    out = tmp_path / "out"
    convert(root / "teacher.yaml", root / "teacher.yaml", root / "hf", to_hf=out, verify=False)
    with pytest.raises(MorphError, match="--force"):  # a folder morph wrote: with --force
        convert(root / "teacher.yaml", root / "teacher.yaml", root / "hf", to_hf=out)
    kw: dict[str, Any] = {"student_set": ["layers=3"], "max_shard_size": 4000, "force": True}
    convert(root / "teacher.yaml", root / "teacher.yaml", root / "hf", to_hf=out, **kw)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and (out / "model.safetensors.index.json").is_file()
    assert not (out / "model.safetensors").exists()
    assert all(s.stat().st_size <= 4000 or _one_tensor(s) for s in shards)
    grown = _load_strict(out)
    with torch.no_grad(), float64_rmsnorm():
        want, got = model(ids).logits, grown(ids).logits
    assert float((want - got).abs().max() / want.abs().max()) < 1e-10
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left behind


def _one_tensor(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return len(list(f.keys())) == 1


def test_to_hf_refusals_leave_nothing(
    teacher: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, root, _ = teacher
    spec, hf = root / "teacher.yaml", root / "hf"
    with pytest.raises(MorphError, match="drop -o"):
        convert(spec, spec, hf, tmp_path / "x.safetensors", to_hf=tmp_path / "out")
    with pytest.raises(MorphError, match="holds the teacher checkpoint"):
        convert(spec, spec, hf, to_hf=hf, force=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MorphError, match="did not write"):
        convert(spec, spec, hf, to_hf=tmp_path / "busy", force=True)
    plain = tmp_path / "plain.yaml"  # the same shape under morphspec names: no HF family
    plain.write_text(spec.read_text().replace("naming: hf-", "# naming: hf-"))
    with pytest.raises(MorphError, match="naming"):
        convert(spec, plain, hf, to_hf=tmp_path / "out")

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("morphspec.interop.hf_output.copy_companions", boom)
    with pytest.raises(OSError):
        convert(spec, spec, hf, to_hf=tmp_path / "out", student_set=["layers=3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "plain.yaml"]


def test_cli_to_hf_and_its_refusal(teacher: Any, tmp_path: Path) -> None:
    _, _, root, _ = teacher
    spec = str(root / "teacher.yaml")
    runner = CliRunner()
    args = ["convert", spec, spec, str(root / "hf"), "--student-set", "layers=3"]
    ok = runner.invoke(app, [*args, "--to-hf", str(tmp_path / "out"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "config.json").is_file()
    bad = runner.invoke(app, [*args, "--to-hf", str(tmp_path / "o2"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "drop -o" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "o2").exists() and not (tmp_path / "x").exists()
