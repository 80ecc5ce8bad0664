"""`convert` split over 2 ranks (as under torchrun): the DCP student (model and optimizer)
and the sharded folder hold the tensors of a 1-process run; ranks given different
arguments are refused; a rank that dies leaves nothing committed; and the real torchrun
command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from dist_helpers import run_job
from growth_helpers import one_intraop_thread, write_spec
from test_dcp import MLP, STUDENT, _save_dcp, _trained

import morphspec
from morphspec.convert import convert
from morphspec.distributed.dcp_source import DCPSource

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]


def _teacher(tmp: Path) -> tuple[Path, Path]:
    spec = write_spec(tmp / "mlp.yaml", MLP)
    teacher, opt = _trained(spec, "adamw")
    return spec, _save_dcp(tmp / "teacher", teacher, opt)


def _same_dcp(a: Path, b: Path) -> None:
    sa, sb = DCPSource(a), DCPSource(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa.get(k), sb.get(k)), k
    oa, ob = sa.optimizer(), sb.optimizer()
    assert oa is not None and ob is not None and oa.names == ob.names
    assert oa.param_groups() == ob.param_groups()
    for fqn in oa.names:
        for k in oa.layout(fqn):
            va, vb = oa.value(fqn, k), ob.value(fqn, k)
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, (fqn, k)


def _call(spec: Path, ckpt: Path, **kwargs: Any) -> dict[str, Any]:
    return {"positional": [str(spec), str(spec), str(ckpt)],
            "kwargs": {"student_set": STUDENT, **kwargs}}  # fmt: skip


def test_split_outputs_equal_one_process(tmp_path: Path) -> None:
    spec, t_dcp = _teacher(tmp_path)
    big = ["width=300"]
    model = morphspec.build(spec, set=big).double()
    ckpt = morphspec.save(model, tmp_path / "t.safetensors", spec, set=big)
    sharded = {"teacher_set": big, "student_set": ["width=400", "depth=2"],
               "max_shard_size": "1MiB"}  # fmt: skip
    # torchrun runs each rank with one intra-op thread (OMP_NUM_THREADS=1); init=match's
    # float64 spread is a parallel reduction whose last bit follows the thread count, so
    # the 1-process references run with one thread too (docs/distributed.md)
    with one_intraop_thread():
        convert(spec, spec, t_dcp, to_dcp=tmp_path / "one", student_set=STUDENT)
        convert(spec, spec, ckpt, tmp_path / "one_sh", **sharded)  # type: ignore[arg-type]
    calls = [
        {**_call(spec, t_dcp, to_dcp=str(tmp_path / "vary")), "vary": True},
        _call(spec, t_dcp, to_dcp=str(tmp_path / "two")),
        {"positional": [str(spec), str(spec), str(ckpt)],
         "kwargs": {**sharded, "output": str(tmp_path / "two_sh")}},
    ]  # fmt: skip
    ranks = run_job("convert", tmp_path, calls=calls)
    for r in ranks:
        refused, dcp_call, shard_call = r["calls"]
        assert "different arguments" in refused["error"], r
        assert dcp_call["written"] and shard_call["written"], r
    assert ranks[0]["calls"][1]["rel_err"] <= 1e-10
    assert not (tmp_path / "vary").exists()
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert any(f.startswith("__1_") for f in files), f"rank 1 wrote nothing: {files}"
    _same_dcp(tmp_path / "one", tmp_path / "two")
    one = sorted(p.name for p in (tmp_path / "one_sh").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two_sh").iterdir()) and len(one) > 3
    for name in one:
        a, b = tmp_path / "one_sh" / name, tmp_path / "two_sh" / name
        assert a.read_bytes() == b.read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".unverified")]


def test_a_dead_rank_commits_nothing(tmp_path: Path) -> None:
    spec, t_dcp = _teacher(tmp_path)
    calls = [_call(spec, t_dcp, to_dcp=str(tmp_path / "two"))]
    run_job("convert", tmp_path, fails=True, crash=True, calls=calls)
    assert not (tmp_path / "two").exists()
    # (rank 0 removes its staging folder when it learns of the crash, unless the launcher
    # kills it first, as torch.multiprocessing may: a hidden .unverified folder then stays)


def test_torchrun_command_line(tmp_path: Path) -> None:
    """The real launcher: torchrun --standalone (a free loopback port of its choosing)."""
    spec, t_dcp = _teacher(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "morphspec", "convert", str(spec), str(spec), str(t_dcp), "--to-dcp",
           str(tmp_path / "two"), "--student-set", "width=9",
           "--student-set", "depth=2"]  # fmt: skip
    env = {**os.environ, "MORPH_DIST_TIMEOUT": "120", "NO_COLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 verified and committed" in proc.stdout
    with one_intraop_thread():
        convert(spec, spec, t_dcp, to_dcp=tmp_path / "one", student_set=STUDENT)
    _same_dcp(tmp_path / "one", tmp_path / "two")
