"""HF import and export without transformers: key maps both ways, refusals, atomic folders.

Folders here are written by hand (config.json plus safetensors under Hugging Face names), so
these tests run without the `hf` extra; `test_hf_parity.py` checks the same paths against
transformers itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import morphspec
from morphspec.checkpoint import TensorEntry
from morphspec.cli.app import app
from morphspec.errors import CheckpointError, MorphError
from morphspec.interop import BY_MODEL_TYPE, FAMILIES, export_hf, import_hf, open_checkpoint
from morphspec.interop.exporter import shard
from morphspec.interop.importer import resolve_text, spec_text
from morphspec.spec import models

GPT2: dict[str, Any] = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 30,
    "n_embd": 8,
    "n_head": 2,
    "n_layer": 2,
    "n_positions": 12,
}
LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 30,
    "hidden_size": 8,
    "intermediate_size": 12,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
}


def _arch(config: dict[str, Any], tmp_path: Path) -> morphspec.Arch:
    family = BY_MODEL_TYPE[config["model_type"]]
    params = family.read(config, morphspec.errors.Mark("config.json"))
    return resolve_text(spec_text(family, params, "t", "test"), tmp_path)


def _folder(tmp_path: Path, config: dict[str, Any], name: str = "hf") -> tuple[Path, dict]:
    """A folder with config.json and random weights under HF names; returns the spec's state."""
    arch = _arch(config, tmp_path)
    gen = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(s, generator=gen, dtype=torch.float64)
        for k, s in arch.state_shapes().items()
    }
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        BY_MODEL_TYPE[config["model_type"]].keymap.to_hf(state),
        str(folder / "model.safetensors"),
        {"format": "pt"},
    )
    return folder, state


def test_the_naming_literal_lists_every_family() -> None:
    names = models.Naming.__args__  # type: ignore[attr-defined]
    assert set(names) == {"morphspec", *(f.naming for f in FAMILIES)}


@pytest.mark.parametrize(
    "config",
    [
        GPT2,
        {**GPT2, "tie_word_embeddings": False},
        LLAMA,
        {**LLAMA, "tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True},
    ],
)
def test_key_maps_are_reversible_both_ways(tmp_path: Path, config: dict[str, Any]) -> None:
    arch = _arch(config, tmp_path)
    keymap = BY_MODEL_TYPE[config["model_type"]].keymap
    shapes = dict(arch.state_shapes())
    state = {k: torch.randn(s, dtype=torch.float64) for k, s in shapes.items()}
    hf = keymap.to_hf(state)
    back = keymap.from_hf(hf, shapes)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    again = keymap.to_hf(back)
    assert again.keys() == hf.keys() and all(torch.equal(again[k], hf[k]) for k in hf)


def test_gpt2_layout_is_conv1d_with_q_k_v_stacked(tmp_path: Path) -> None:
    """Hugging Face's GPT-2 computes x @ c_attn.weight, columns q | k | v: checked by hand."""
    folder, state = _folder(tmp_path, GPT2)
    from safetensors.torch import load_file

    hf = load_file(str(folder / "model.safetensors"))
    c_attn = hf["transformer.h.1.attn.c_attn.weight"]
    assert c_attn.shape == (8, 24)
    for j, p in enumerate("qkv"):
        assert torch.equal(
            c_attn[:, 8 * j : 8 * (j + 1)].T, state[f"transformer.h.1.attn.{p}_proj.weight"]
        )
    assert torch.equal(
        hf["transformer.h.0.mlp.c_fc.weight"].T, state["transformer.h.0.ffn.mlp.up_proj.weight"]
    )
    assert "lm_head.weight" not in hf  # GPT-2 ties its head by default


def test_import_writes_a_spec_that_loads_the_folder_as_it_is(tmp_path: Path) -> None:
    folder, state = _folder(tmp_path, LLAMA)
    result = import_hf(folder, tmp_path / "t.yaml")
    assert result.vars == {
        "vocab": 30,
        "dim": 8,
        "heads": 4,
        "kv_heads": 2,
        "head_dim": 2,
        "hidden": 12,
        "layers": 2,
        "max_len": 16,
        "eps": 1e-06,
        "experts": 1,
        "top_k": 1,
    }
    model = morphspec.load(tmp_path / "t.yaml", folder, dtype=torch.float64)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    # a student is extends + vars
    (tmp_path / "s.yaml").write_text("morphspec: 1\nname: s\nextends: t.yaml\nvars: {hidden: 20}\n")
    student = morphspec.resolve(morphspec.load_spec(tmp_path / "s.yaml"))
    assert student.spec.naming == "hf-llama"
    assert student.state_shapes()["model.layers.0.ffn.mlp.up_proj.weight"] == (20, 8)


def test_tensors_read_from_a_folder_never_share_its_memory(tmp_path: Path) -> None:
    """q, k and v are slices of one fused tensor: each read must be a copy of its own."""
    folder, state = _folder(tmp_path, GPT2)
    arch = _arch(GPT2, tmp_path)
    with open_checkpoint(folder, arch) as reader:
        for p in "qkv":
            key = f"transformer.h.0.attn.{p}_proj.bias"
            tensor = reader.get(key)
            tensor.add_(1.0)
            assert torch.equal(reader.get(key), state[key])


def test_gpt2_folders_without_the_transformer_prefix_read_too(tmp_path: Path) -> None:
    """The hub's original gpt2 stores GPT2Model keys (`h.0...`) and its causal-mask buffers."""
    folder, state = _folder(tmp_path, GPT2)
    from safetensors.torch import load_file

    hf = load_file(str(folder / "model.safetensors"))
    bare = {k.removeprefix("transformer."): v for k, v in hf.items()}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 12, 12)
    save_file(bare, str(folder / "model.safetensors"), {"format": "pt"})
    import_hf(folder, tmp_path / "t.yaml")
    model = morphspec.load(tmp_path / "t.yaml", folder, dtype=torch.float64)
    assert torch.equal(
        model.state_dict()["transformer.h.1.attn.k_proj.weight"],
        state["transformer.h.1.attn.k_proj.weight"],
    )


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"model_type": "bert"}, "unsupported architecture: model_type 'bert'"),
        (
            {**GPT2, "architectures": ["GPT2ForSequenceClassification"]},
            "GPT2ForSequenceClassification",
        ),
        ({**GPT2, "activation_function": "relu"}, "activation_function = 'relu'"),
        ({**GPT2, "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({**LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        (
            {**LLAMA, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
            "rope_type = 'yarn'",
        ),
        ({**LLAMA, "model_type": "mistral", "sliding_window": 8}, "sliding_window = 8"),
        (
            {**LLAMA, "model_type": "qwen2", "use_sliding_window": True, "sliding_window": 15},
            "sliding_window = 15",
        ),
        ({**LLAMA, "hidden_act": "gelu"}, "hidden_act = 'gelu'"),
        (
            {**LLAMA, "model_type": "mixtral", "router_jitter_noise": 0.01},
            "router_jitter_noise = 0.01",
        ),
    ],
)
def test_unsupported_configs_are_refused_naming_the_field(
    tmp_path: Path, config: dict[str, Any], words: str
) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MorphError) as err:
        import_hf(folder, tmp_path / "t.yaml")
    assert words in str(err.value)
    assert str(err.value).startswith(str(folder / "config.json"))
    assert not (tmp_path / "t.yaml").exists()


def test_a_folder_without_weights_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GPT2))
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"no weights.*pytorch_model\.bin.*pickle"):
        import_hf(folder, tmp_path / "t.yaml")
    assert not (tmp_path / "t.yaml").exists()


def _shard(folder: Path, cut: int) -> dict[str, str]:
    """Split model.safetensors into two shards with an index; returns the weight map."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((keys[:cut], keys[cut:]), start=1):
        name = f"model-0000{i}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / name), {"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    return weight_map


def _write_index(folder: Path, weight_map: dict[str, str]) -> None:
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_folders_load_and_shards_that_disagree_with_the_index_are_refused(
    tmp_path: Path,
) -> None:
    folder, state = _folder(tmp_path, LLAMA)
    weight_map = _shard(folder, 7)
    _write_index(folder, weight_map)
    import_hf(folder, tmp_path / "t.yaml")
    model = morphspec.load(tmp_path / "t.yaml", folder, dtype=torch.float64)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)

    moved = dict(weight_map)
    key = sorted(moved)[0]
    moved[key] = "model-00002-of-00002.safetensors"  # listed in the wrong shard
    _write_index(folder, moved)
    with pytest.raises(CheckpointError, match=f"'{key}' is listed"):
        morphspec.load(tmp_path / "t.yaml", folder)
    _write_index(folder, {**weight_map, key: "../elsewhere.safetensors"})
    with pytest.raises(CheckpointError, match="plain file name"):
        morphspec.load(tmp_path / "t.yaml", folder)
    _write_index(folder, {k: v for k, v in weight_map.items() if k != key})
    with pytest.raises(CheckpointError, match="not listed"):
        morphspec.load(tmp_path / "t.yaml", folder)


def test_missing_and_unexpected_tensors_are_named_as_the_folder_names_them(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, LLAMA)
    import_hf(folder, tmp_path / "t.yaml")
    from safetensors.torch import load_file

    hf = load_file(str(folder / "model.safetensors"))
    hf["model.layers.0.mlp.extra.weight"] = hf.pop("model.layers.1.mlp.up_proj.weight")
    save_file(hf, str(folder / "model.safetensors"), {"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        morphspec.load(tmp_path / "t.yaml", folder)
    text = str(err.value)
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in text
    assert "unexpected tensor 'model.layers.0.mlp.extra.weight'" in text


def test_a_morphspec_spec_refuses_an_hf_folder_with_the_fix(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, LLAMA)
    with pytest.raises(CheckpointError, match="morph import-hf"):
        morphspec.load("examples/specs/llama_mini.yaml", folder)


def test_export_round_trips_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, state = _folder(tmp_path, GPT2)
    (folder / "tokenizer.json").write_text('{"t": 1}')
    import_hf(folder, tmp_path / "t.yaml")
    out = tmp_path / "out"
    result = export_hf(tmp_path / "t.yaml", folder, out, source=folder, shard_bytes=2000)
    assert "model.safetensors.index.json" in result.files and "tokenizer.json" in result.files
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["n_layer"] == 2 and config["activation_function"] == "gelu_new"
    assert config["dtype"] == "float64" and config["tie_word_embeddings"] is True
    again = morphspec.load(tmp_path / "t.yaml", out, dtype=torch.float64).state_dict()
    assert all(torch.equal(again[k], state[k]) for k in state)
    with pytest.raises(MorphError, match="--force"):
        export_hf(tmp_path / "t.yaml", folder, out)
    with pytest.raises(MorphError, match="never writes over its inputs"):
        export_hf(tmp_path / "t.yaml", folder / "model.safetensors", folder, force=True)
    # a file of the folder, given alone, reads through the key map too
    assert morphspec.load(tmp_path / "t.yaml", folder / "model.safetensors") is not None
    # a failure while writing leaves neither a new folder nor a hidden one behind
    import morphspec.interop.exporter as exporter

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(exporter, "write_safetensors", boom)
    with pytest.raises(OSError, match="disk full"):
        export_hf(tmp_path / "t.yaml", folder, tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        export_hf(tmp_path / "t.yaml", folder, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out", "t.yaml"]
    assert len(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]) > 1


def test_export_refuses_a_spec_of_another_shape(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, LLAMA)
    import_hf(folder, tmp_path / "t.yaml")
    text = (tmp_path / "t.yaml").read_text().replace("act: silu", "act: gelu")
    (tmp_path / "odd.yaml").write_text(text)
    ckpt = tmp_path / "odd.safetensors"
    morphspec.save(morphspec.build(tmp_path / "odd.yaml"), ckpt, tmp_path / "odd.yaml")
    with pytest.raises(MorphError, match="is not a hf-llama model"):
        export_hf(tmp_path / "odd.yaml", ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(MorphError, match="naming morphspec"):
        export_hf("examples/specs/llama_mini.yaml", ckpt, tmp_path / "out")


def test_shards_respect_the_size_limit() -> None:
    entries = [
        TensorEntry(f"k{i}", (n,), torch.float32, lambda: torch.zeros(0))
        for i, n in enumerate([10, 300, 20, 20, 5])
    ]
    runs = shard(entries, 160)
    assert [[e.key for e in r] for r in runs] == [["k0"], ["k1"], ["k2", "k3"], ["k4"]]


def test_cli_import_and_export(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, LLAMA)
    runner = CliRunner()
    spec = tmp_path / "t.yaml"
    res = runner.invoke(app, ["import-hf", str(folder), "-o", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["family"] == "hf-llama"
    res = runner.invoke(
        app,
        [
            "export-hf",
            str(spec),
            str(folder),
            "-o",
            str(tmp_path / "o"),
            "--max-shard-size",
            "3KB",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "model.safetensors.index.json" in json.loads(res.stdout)["files"]
    res = runner.invoke(app, ["import-hf", str(tmp_path / "o"), "-o", str(spec)])
    assert res.exit_code == 1 and "exists" in res.output
    res = runner.invoke(
        app,
        ["export-hf", str(spec), str(folder), "-o", str(tmp_path / "p"), "--shard-size", "lots"],
    )
    assert res.exit_code == 2
