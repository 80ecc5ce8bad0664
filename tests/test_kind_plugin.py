"""A layer kind from outside the package (issue 17): examples/plugins/scale_kind.py, a
per-channel gain, registered by import and by the entry-point group `morphspec.kinds`,
validated by the CLI without torch, and grown exactly by every exact family in float64, in
eval and train mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import make_teacher, one_intraop_thread, read_tensors, write_spec

import morphspec
from morphspec.convert import convert
from morphspec.errors import MorphError
from morphspec.growth.families import FAMILIES
from morphspec.kinds import plugins, registry
from morphspec.spec.schema import spec_schema

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "examples" / "plugins"
EXACT = sorted(name for name, cls in FAMILIES.items() if cls.exact)
RTOL = 1e-10

MLP = """
morphspec: 1
name: {name}
vars: {{w: {w}}}
input: {{shape: [4]}}
body:
  - linear: {{name: fc1, out: w}}
  - scale: {{name: gain}}
  - relu
  - linear: {{name: fc2, out: 3}}
"""

CNN = """
morphspec: 1
name: {name}
vars: {{w: {w}}}
input: {{shape: [2, 5, 5]}}
body:
  - conv: {{name: c1, out: w, kernel: 3, padding: 1}}
  - scale: {{name: gain}}
  - batchnorm: {{name: bn, eps: 0.1}}
  - relu
  - conv: {{name: c2, out: 4, kernel: 3, padding: 1}}
  - global_avgpool
  - linear: {{name: fc, out: 3}}
"""


def _forget() -> None:
    registry.unregister_kind("scale")
    sys.modules.pop("scale_kind", None)
    plugins._LOADED.clear()


@pytest.fixture
def scale_imported(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Route 1: importing the plugin module registers the kind."""
    _forget()
    monkeypatch.syspath_prepend(str(PLUGINS))
    import scale_kind  # noqa: F401

    yield
    _forget()


def _site(tmp: Path, value: str) -> Path:
    """A directory holding one installed distribution's metadata with our entry point."""
    info = tmp / "site" / "scale_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scale-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[morphspec.kinds]\nscale = {value}\n")
    return info.parent


@pytest.mark.parametrize("value", ["scale_kind", "scale_kind:SCALE"])
def test_entry_point_registers_the_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Route 2, in process: load_plugins finds the distribution on sys.path."""
    _forget()
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(_site(tmp_path, value)))
    try:
        assert registry.get("scale") is None
        assert plugins.load_plugins() == ["scale"]
        assert plugins.load_plugins() == []  # once only
        record = registry.get("scale")
        assert record is not None and record.growth is not None
        assert "scale" in morphspec.spec.LAYER_KINDS
        assert "ScaleArgs" in spec_schema()["definitions"]  # morph schema knows it too
        spec = write_spec(tmp_path / "m.yaml", MLP.format(name="m", w=5))
        arch = morphspec.resolve(morphspec.load_spec(spec))
        assert arch.node("gain").params == {"weight": (5,)}
        assert dict(morphspec.build(arch).named_parameters())["gain.weight"].shape == (5,)
    finally:
        _forget()


def _cli(tmp: Path, site: Path, *args: str) -> dict[str, Any]:
    """`morph ARGS --json` in a fresh interpreter; also reports whether torch was imported."""
    code = (
        "import json, sys\n"
        "from morphspec.cli.app import main\n"
        f"sys.argv = ['morph', *{list(args)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp
    )
    lines = done.stdout.strip().splitlines()
    return {**json.loads(lines[-1]), "out": "\n".join(lines[:-1]), "err": done.stderr}


def test_cli_loads_the_entry_point_without_torch(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "m.yaml", MLP.format(name="m", w=5))
    site = _site(tmp_path, "scale_kind")
    ran = _cli(tmp_path, site, "validate", str(spec))
    assert ran["code"] == 0, ran
    assert json.loads(ran["out"])["ok"] is True
    assert ran["torch"] is False
    # without the distribution, the same spec names an unknown kind
    ran = _cli(tmp_path, tmp_path, "validate", str(spec))
    assert ran["code"] == 1 and "scale" in ran["out"], ran


def test_a_broken_plugin_is_one_clear_problem(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "m.yaml", MLP.format(name="m", w=5))
    ran = _cli(tmp_path, _site(tmp_path, "no_such_plugin_module"), "validate", str(spec))
    problems = json.loads(ran["out"])["problems"]
    assert ran["code"] == 1 and len(problems) == 1, ran
    assert "layer-kind plugin 'scale = no_such_plugin_module'" in problems[0]["message"]
    assert "scale-demo" in problems[0]["message"] and "Traceback" not in ran["err"]


def test_a_taken_name_is_refused_and_removal_forgets_it(
    tmp_path: Path, scale_imported: None
) -> None:
    from scale_kind import SCALE

    spec = write_spec(tmp_path / "m.yaml", MLP.format(name="m", w=5))
    assert morphspec.resolve(morphspec.load_spec(spec)).node("gain").kind == "scale"
    assert morphspec.register_kind is registry.register_kind
    assert registry.register_kind(SCALE) is SCALE  # the same record again: a no-op
    with pytest.raises(ValueError, match="already registered"):
        registry.register_kind(type(SCALE)("scale", SCALE.model, SCALE.shape, SCALE.builder))
    registry.unregister_kind("scale")
    with pytest.raises(MorphError, match="unknown layer kind or block 'scale'"):
        morphspec.resolve(morphspec.load_spec(spec))
    assert "ScaleArgs" not in spec_schema()["definitions"]


def _teacher64(spec: Path, tmp: Path) -> Path:
    """A seeded float64 teacher whose gains are drawn, not the initial ones."""
    state = read_tensors(make_teacher(spec, out=tmp / "t32.safetensors"))
    gen = torch.Generator().manual_seed(7)
    state["gain.weight"] = torch.rand(state["gain.weight"].shape, generator=gen) + 0.5
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    return morphspec.save(state, tmp / "teacher.safetensors", spec=spec)


def _model64(arch: morphspec.Arch, path: Path, train: bool) -> torch.nn.Module:
    model = morphspec.build(arch).double()
    model.load_state_dict(read_tensors(path), strict=True)
    return model.train(train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("text", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("family", EXACT)
def test_scale_grows_exactly_in_every_exact_family(
    tmp_path: Path, scale_imported: None, family: str, text: str, train: bool
) -> None:
    with one_intraop_thread():
        t_spec = write_spec(tmp_path / "t.yaml", text.format(name="t", w=3))
        s_spec = write_spec(tmp_path / "s.yaml", text.format(name="s", w=5))
        ckpt = _teacher64(t_spec, tmp_path)
        out = tmp_path / "student.safetensors"
        result = convert(t_spec, s_spec, ckpt, out, family=family, verify=False, force=True)
        assert result.plan.ops, "nothing grew"
        student = read_tensors(out)["gain.weight"]
        assert student.shape == (5,)
        assert torch.equal(student[:3], read_tensors(ckpt)["gain.weight"])
        t_model = _model64(result.plan.teacher, ckpt, train)
        s_model = _model64(result.plan.student, out, train)
        shape = (16, *result.plan.teacher.input.dims)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        with torch.no_grad():
            t, s = t_model(x), s_model(x)
    assert t.abs().max() > 0
    assert float((s - t).abs().max() / t.abs().max()) <= RTOL
