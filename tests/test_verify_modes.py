"""Eval and train mode checked in one pass (issue 21): a model whose only mode-dependent
layers are batch norms runs [x; x] with each norm computing the first half in eval mode and
the second in train mode; a model with none runs once. Each half must be what its mode
alone computes, and a defect visible in one mode only must show in that mode's result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher, read_tensors, write_spec

import morphspec
from morphspec import verify
from morphspec.convert import convert
from morphspec.modes import batch_norms, both_modes, mode_free
from morphspec.verify import conversion_samples, run_mode, verify_modes

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
morphspec: 1
name: bn-net
vars: {width: 6}
input: {shape: [3, 6, 6]}
body:
  - conv: {name: c1, out: width, kernel: 3, padding: 1}
  - batchnorm: {name: bn1}
  - relu
  - conv: {name: c2, out: width, kernel: 3, padding: 1}
  - batchnorm: {name: bn2}
  - relu
  - global_avgpool
  - linear: {name: head, out: 5}
"""


SPEC_1D = """
morphspec: 1
name: bn1d
input: {shape: [4]}
body:
  - linear: {name: fc, out: 4096}
  - batchnorm: {name: bn}
  - linear: {name: head, out: 3}
"""


def _teacher(tmp: Path) -> tuple[Path, Path, Path]:
    spec = write_spec(tmp / "t.yaml", SPEC)
    student = write_spec(tmp / "s.yaml", SPEC.replace("width: 6", "width: 9"))
    arch = morphspec.resolve(morphspec.load_spec(spec))
    torch.manual_seed(0)
    model = morphspec.build(arch).double()
    gen = torch.Generator().manual_seed(1)
    for name, t in model.state_dict().items():
        if "running_var" in name:
            t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
        elif t.is_floating_point() and ("running_mean" in name or "bn" in name):
            t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.3)
    ckpt = morphspec.save(model, tmp / "t.safetensors", spec=arch)
    return spec, student, ckpt


def test_halves_equal_each_mode_alone() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(64, 3), torch.nn.BatchNorm1d(3),
    ).double()  # fmt: skip
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase):
            m.running_mean.uniform_(-1, 1)  # type: ignore[operator]
            m.running_var.uniform_(0.5, 2)  # type: ignore[operator]
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        with run_mode(model, "eval"):
            eval_out = model(x)
        with run_mode(model, "train"):
            train_out = model(x)
        model.load_state_dict(state)
        norms = batch_norms(model)
        assert norms is not None and len(norms) == 2 and not mode_free(model)
        with run_mode(model, "eval"), both_modes(norms):
            both = model(torch.cat((x, x)))
    assert torch.equal(both[:5], eval_out)
    assert torch.allclose(both[5:], train_out, rtol=1e-13, atol=1e-13)
    assert not torch.allclose(eval_out, train_out)  # the modes do differ here
    assert all("forward" not in vars(m) for m in norms)  # patched forwards removed


def test_one_pass_catches_a_defect_in_one_mode_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student whose running mean is off differs in eval mode only; one whose gain is off
    differs in both. The one-pass check (taken: counted) reports each in the right mode."""
    calls = []
    both = verify._both
    monkeypatch.setattr(verify, "_both", lambda *a: calls.append(1) or both(*a))
    monkeypatch.setattr(verify, "compare", None)  # no separate pass may run
    spec, student, ckpt = _teacher(tmp_path)
    out = tmp_path / "s.safetensors"
    convert(spec, student, ckpt, out, verify=False, force=True)
    s_arch = morphspec.resolve(morphspec.load_spec(student))
    t_arch = morphspec.resolve(morphspec.load_spec(spec))
    good = verify_modes(t_arch, ckpt, s_arch, out, samples=4)
    assert [v.mode for v in good] == ["eval", "train"]
    assert all(v.rel_err < 1e-12 for v in good), good
    for key, expect_eval, expect_train in [
        ("bn2.running_mean", True, False),
        ("bn2.weight", True, True),
    ]:
        state = read_tensors(out)
        assert state[key].dtype == torch.float64
        state[key] += 0.5  # every channel: some may be cut by the relu everywhere
        bad = tmp_path / f"bad-{key}.safetensors"
        morphspec.save(state, bad, spec=s_arch)
        ev, tr = verify_modes(t_arch, ckpt, s_arch, bad, samples=4)
        assert (ev.rel_err > 1e-3) == expect_eval, (key, ev)
        assert (tr.rel_err > 1e-3) == expect_train, (key, tr)
    assert len(calls) == 3


def test_a_language_model_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No batch statistics, no dropout of its own: train mode is eval mode, run once."""
    runs = []
    compare = verify.compare
    monkeypatch.setattr(verify, "compare", lambda *a, **k: runs.append(1) or compare(*a, **k))
    spec = ROOT / "examples" / "specs" / "llama_mini.yaml"
    ckpt = make_teacher(spec, out=tmp_path / "t.safetensors")
    arch = morphspec.resolve(morphspec.load_spec(spec))
    ev, tr = verify_modes(arch, ckpt, arch, ckpt, samples=2)
    assert len(runs) == 1 and (ev.mode, tr.mode) == ("eval", "train")
    assert ev.rel_err == tr.rel_err == 0.0


def test_check_samples_follow_the_cost(tmp_path: Path) -> None:
    """Small models get 32 samples; the 1 GB conv benchmark and the 0.5 GB Llama 1 (an image
    whose 2-D batch norms see 64 positions; a token sequence): the check stays a fraction of
    the conversion. A 1-D batchnorm checked in train mode gets 2."""
    import math
    import sys

    def arch(spec: Path, sets: list[str] | None = None) -> morphspec.Arch:
        return morphspec.resolve(morphspec.load_spec(spec, sets))

    def nbytes(a: morphspec.Arch) -> int:
        return sum(math.prod(s) for s in a.state_shapes().values()) * 4

    specs = ROOT / "examples" / "specs"
    t, s = arch(specs / "mlp.yaml"), arch(specs / "mlp_wide.yaml")
    assert conversion_samples(t, s, nbytes(s), 2) == 32
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import convert_throughput as ct

    t_path, s_path = ct.write_specs(tmp_path, 1e9)
    t, s = arch(t_path), arch(s_path)
    assert conversion_samples(t, s, nbytes(s) * 2 // 3, 2) == 1  # its batch norms are 2-D
    assert conversion_samples(t, s, 100 * nbytes(s), 2) == 32
    llama = ["vocab=32000", "dim=768", "heads=12", "kv_heads=12", "hidden=3072"]
    t = arch(specs / "llama_mini.yaml", [*llama, "layers=8"])
    s = arch(specs / "llama_mini.yaml", [*llama, "layers=16"])
    assert conversion_samples(t, s, nbytes(s), 2) == 1  # one sequence of 32 tokens here
    mlp = SPEC_1D
    t = arch(write_spec(tmp_path / "m.yaml", mlp))
    assert conversion_samples(t, t, 1, 2) == 2  # a 1-D batchnorm needs a batch in train mode
