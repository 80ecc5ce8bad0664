"""Running a 2-process gloo job from a test: a subprocess (so a hung process group can be
killed by its timeout) that spawns the ranks, which meet through a FileStore in the test's
tmp folder (no ports, loopback or otherwise), with a bounded collective timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent / "dist_workers.py"
JOB_TIMEOUT = 300  # seconds for the whole job, under 2 loaded cores
PG_TIMEOUT = 90  # seconds for one collective


def run_job(
    case: str, tmp: Path, world: int = 2, fails: bool = False, **args: Any
) -> list[dict[str, Any]]:
    """Run `case` of dist_workers.py on `world` ranks; each rank's JSON result (with
    `fails`, the job must fail, and the results of the ranks that wrote one)."""
    (tmp / "args.json").write_text(json.dumps(args), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        "OMP_NUM_THREADS": "1",
    }
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKERS), case, str(tmp), str(world), str(PG_TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT,
            env=env,
            cwd=tmp,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {world}-process job '{case}' did not finish in {JOB_TIMEOUT}s")
    if fails:
        assert proc.returncode != 0, "the job should have failed"
        files = [tmp / f"rank{r}.json" for r in range(world)]
        return [json.loads(f.read_text()) for f in files if f.is_file()]
    if proc.returncode != 0:
        pytest.fail(f"job '{case}' failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]
