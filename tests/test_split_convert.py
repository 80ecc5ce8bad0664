"""`convert` split over 2 ranks (as under torchrun): the DCP student (model and optimizer)
and the sharded folder hold the tensors of a 1-process run; a rank that dies leaves
nothing committed; ranks given different arguments are refused."""

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
from morphspec.checkpoint import CheckpointReader
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


def _job(spec: Path, ckpt: Path, **kwargs: Any) -> dict[str, Any]:
    return {"positional": [str(spec), str(spec), str(ckpt)],
            "kwargs": {"student_set": STUDENT, **kwargs}}  # fmt: skip


def test_split_dcp_equals_one_process(tmp_path: Path) -> None:
    spec, t_dcp = _teacher(tmp_path)
    convert(spec, spec, t_dcp, to_dcp=tmp_path / "one", student_set=STUDENT)
    ranks = run_job("convert", tmp_path, **_job(spec, t_dcp, to_dcp=str(tmp_path / "two")))
    assert [r["written"] for r in ranks] == [True, True]
    assert ranks[0]["rel_err"] is not None and ranks[0]["rel_err"] <= 1e-10
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert any(f.startswith("__1_") for f in files), f"rank 1 wrote nothing: {files}"
    _same_dcp(tmp_path / "one", tmp_path / "two")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".unverified")]


def test_split_shards_equal_one_process(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP)
    big = ["width=300"]
    model = morphspec.build(spec, set=big).double()
    ckpt = morphspec.save(model, tmp_path / "t.safetensors", spec, set=big)
    job = {"positional": [str(spec), str(spec), str(ckpt)],
           "kwargs": {"teacher_set": big, "student_set": ["width=400", "depth=2"],
                      "max_shard_size": "1MiB"}}  # fmt: skip
    # torchrun runs each rank with one intra-op thread (OMP_NUM_THREADS=1); init=match's
    # float64 spread is a parallel reduction whose last bit follows the thread count, so
    # the 1-process reference runs with one thread too (docs/distributed.md)
    with one_intraop_thread():
        convert(*job["positional"], tmp_path / "one", **job["kwargs"])  # type: ignore[arg-type]
    run_job("convert", tmp_path, positional=job["positional"],
            kwargs={**job["kwargs"], "output": str(tmp_path / "two")})  # fmt: skip
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(one) > 3
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    with CheckpointReader(tmp_path / "two") as r:
        assert len(r.keys()) > 10


def test_a_dead_rank_commits_nothing(tmp_path: Path) -> None:
    spec, t_dcp = _teacher(tmp_path)
    run_job("convert", tmp_path, fails=True, crash=True,
            **_job(spec, t_dcp, to_dcp=str(tmp_path / "two")))  # fmt: skip
    assert not (tmp_path / "two").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".unverified")]


def test_ranks_with_different_arguments_are_refused(tmp_path: Path) -> None:
    spec, t_dcp = _teacher(tmp_path)
    ranks = run_job("convert", tmp_path, vary=True,
                    **_job(spec, t_dcp, to_dcp=str(tmp_path / "two")))  # fmt: skip
    for r in ranks:
        assert "different arguments" in r["error"], r
    assert not (tmp_path / "two").exists()


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
