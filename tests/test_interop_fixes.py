"""Issue 20's small interop fixes: `swish` is SiLU, a sliding window that spans every
position masks nothing, the eps a fill lift asks for round-trips, `export-hf` takes
`--max-shard-size`, and exported configs keep `rope_theta` beside `rope_parameters`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_hf_interop import LLAMA, _folder
from transformer_specs import build_teacher, transformer_spec
from typer.testing import CliRunner

from morphspec.cli.app import app
from morphspec.errors import MorphError, PlanRefused
from morphspec.growing import grow
from morphspec.interop import export_hf, import_hf


@pytest.mark.parametrize(
    "extra",
    [
        {"hidden_act": "swish"},
        {"model_type": "mistral", "sliding_window": 4096},  # Mistral's default, 16 positions
        {"model_type": "mistral", "sliding_window": 16},  # exactly the positions
        {"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 4},  # unused
    ],
)
def test_configs_that_compute_the_same_are_imported(tmp_path: Path, extra: dict[str, Any]) -> None:
    folder, _ = _folder(tmp_path, {**LLAMA, **extra})
    result = import_hf(folder, tmp_path / "t.yaml")
    assert result.tensors > 0


def test_a_window_shorter_than_the_positions_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({**LLAMA, "model_type": "mistral", "sliding_window": 15})
    )
    with pytest.raises(MorphError, match=r"sliding_window = 15: a window shorter than"):
        import_hf(folder, tmp_path / "t.yaml")


def test_the_eps_a_fill_asks_for_round_trips(tmp_path: Path) -> None:
    """d_model 16 -> 24 with eps kept has no lift; the refusal's eps, pasted, has one."""
    llama = {"style": "llama", "heads": 4, "kv_heads": 2}
    model = build_teacher(transformer_spec(**llama), tmp_path / "t.yaml")
    (tmp_path / "s.yaml").write_text(transformer_spec(**llama, dim=24), "utf-8")
    with pytest.raises(PlanRefused) as err:
        grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml")
    found = re.search(r"eps·16/24 \(([^ ]+) here\)", str(err.value))
    assert found is not None, str(err.value)
    eps = float(found.group(1))
    assert eps == 1e-5 * 16 / 24  # the very float, not 6.66667e-06
    text = transformer_spec(**llama, dim=24).replace("eps: 1e-05", f"eps: {found.group(1)}")
    (tmp_path / "s.yaml").write_text(text, "utf-8")
    result = grow(model, tmp_path / "t.yaml", tmp_path / "s.yaml", rtol=1e-10)
    assert result.verification is not None and result.verification.passed


@pytest.mark.parametrize("flag", ["--max-shard-size", "--shard-size"])
def test_export_takes_max_shard_size_and_the_old_spelling(tmp_path: Path, flag: str) -> None:
    folder, _ = _folder(tmp_path, LLAMA)
    spec = tmp_path / "t.yaml"
    import_hf(folder, spec)
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app, ["export-hf", str(spec), str(folder), "-o", str(out), flag, "3KB", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert "model.safetensors.index.json" in json.loads(res.stdout)["files"]


def test_exported_config_has_rope_theta_at_the_top_and_in_rope_parameters(
    tmp_path: Path,
) -> None:
    folder, _ = _folder(tmp_path, {**LLAMA, "rope_parameters": {"rope_theta": 5e5}})
    import_hf(folder, tmp_path / "t.yaml")
    export_hf(tmp_path / "t.yaml", folder, tmp_path / "o")
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 5e5}
    assert config["rope_theta"] == 5e5


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            {**LLAMA, "model_type": "qwen2_moe", "shared_expert_intermediate_size": 32},
            "shared_expert_intermediate_size = 32: Qwen2-MoE adds a shared expert",
        ),
        (
            {**LLAMA, "model_type": "gemma2", "final_logit_softcapping": 30.0},
            "final_logit_softcapping = 30.0: Gemma 2 soft-caps",
        ),
    ],
)
def test_near_families_are_refused_naming_the_field(
    tmp_path: Path, config: dict[str, Any], words: str
) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MorphError, match=re.escape(words)):
        import_hf(folder, tmp_path / "t.yaml")


def test_phi3_partial_rotary_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    config = {**LLAMA, "model_type": "phi3", "rope_parameters": {"partial_rotary_factor": 0.5}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MorphError, match=r"partial_rotary_factor = 0\.5"):
        import_hf(folder, tmp_path / "t.yaml")
