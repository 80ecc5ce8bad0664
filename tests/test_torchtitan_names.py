"""A torchtitan-style DCP checkpoint (its Llama names at the top level, q and k in its
interleaved-RoPE row order, as torchtitan's `from_hf` makes them) read into an hf-llama
spec: the same logits as the model it was made from, and a grown student that is exact.
The names and the permutation are pinned from torchtitan's source (see
morphspec/distributed/torchtitan.py); the package itself does not install here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

import morphspec
from morphspec.convert import convert
from morphspec.distributed.metadata import quiet_single_process
from morphspec.distributed.torchtitan import TITAN_NAMES, permute_to_hf
from morphspec.interop.importer import spec_text
from morphspec.interop.llama import LLAMA

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

PARAMS = {"vocab": 40, "dim": 32, "heads": 4, "kv_heads": 2, "head_dim": 8, "hidden": 48,
          "layers": 2, "max_len": 16, "eps": 1e-5, "rope_theta": 10000.0,
          "attention_bias": False, "mlp_bias": False, "tied": False}  # fmt: skip


def _reverse_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """torchtitan's `_reverse_permute` (its from_hf): HF rows -> interleaved rows."""
    d, n = w.shape
    return w.view(heads, 2, d // heads // 2, n).transpose(1, 2).reshape(d, n)


def _titan_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        m = re.match(r"model\.layers\.(\d+)\.", key)
        pattern = re.sub(r"model\.layers\.\d+\.", "model.layers.{i}.", key, count=1)
        name = TITAN_NAMES[pattern][0].format(i=m.group(1) if m else "")
        if key.endswith("q_proj.weight"):
            value = _reverse_permute(value, PARAMS["heads"])
        elif key.endswith("k_proj.weight"):
            value = _reverse_permute(value, PARAMS["kv_heads"])
        out[name] = value.clone()
    return out


def test_permutation_is_torchtitans_inverse() -> None:
    w = torch.randn(16, 8, dtype=torch.float64)
    assert torch.equal(permute_to_hf(_reverse_permute(w, 2), 2), w)
    assert not torch.equal(_reverse_permute(w, 2), w)


def test_torchtitan_checkpoint_reads_and_grows(tmp_path: Path) -> None:
    spec = tmp_path / "llama.yaml"
    spec.write_text(spec_text(LLAMA, PARAMS, "tiny-llama", "test"), encoding="utf-8")
    torch.manual_seed(0)
    model = morphspec.build(spec).double()
    with quiet_single_process():
        dcp.save({**_titan_state(model), "train_state": {"step": 7}},
                 checkpoint_id=str(tmp_path / "titan"), no_dist=True)  # fmt: skip
    loaded = morphspec.load(spec, tmp_path / "titan", dtype=torch.float64)
    x = torch.randint(0, PARAMS["vocab"], (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((loaded(x) - model(x)).abs().max()) <= 1e-12
    result = convert(spec, spec, tmp_path / "titan", tmp_path / "s.safetensors",
                     student_set=["layers=3", "hidden=64"])  # fmt: skip
    assert result.verification is not None and result.verification.rel_err <= 1e-10
