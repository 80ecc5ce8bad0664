"""The bytes `morph convert` writes for example pairs match the recorded hashes
(benchmarks/student_hashes.baseline.json, recorded before the issue-7 refactor and again
when issue 13 drew free parameters in the storage dtype): a refactor of the growth code
must not change what a seed produces. The teachers come from torch's default init, so the
recorded hashes hold for the torch version that recorded them; tests/test_draws.py pins a
teacher made without torch's RNG."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "student_hashes.baseline.json"
RECORDED_WITH = "2."  # torch major version of the recording
CASES = ["mlp_odd/r2r", "smallconv/net2net", "smallconv/netmorph", "spec_example/r2r",
         "mlp/netmorph/netmorph_zero=in", "smallconv/randpad"]  # fmt: skip


def _script() -> object:
    spec = importlib.util.spec_from_file_location(
        "student_hashes", ROOT / "benchmarks" / "student_hashes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["student_hashes"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not torch.__version__.startswith(RECORDED_WITH), reason="other torch")
def test_example_pairs_keep_their_bytes(tmp_path: Path) -> None:
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    got = _script().hashes(tmp_path, CASES)  # type: ignore[attr-defined]
    assert got == {name: baseline[name] for name in CASES}
