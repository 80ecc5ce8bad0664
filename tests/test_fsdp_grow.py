"""`morphspec.grow` inside an FSDP2 job: 2 CPU processes over gloo, a fully_shard-ed
float64 teacher with AdamW state. The student comes back sharded the same way on the same
mesh (the new block too), equals grow() of the gathered teacher bit for bit, model and
optimizer, reproduces the teacher in eval and train mode to 1e-10, and its first step
moves it as the unsharded student's moves it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dist_helpers import run_job
from growth_helpers import write_spec
from test_dcp import MLP, STUDENT

TOL = 1e-10


@pytest.mark.slow
def test_grow_a_fully_sharded_model_with_its_optimizer(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "mlp.yaml", MLP)
    ranks = run_job("fsdp", tmp_path, spec=str(spec), student_set=STUDENT, shard=["blocks.0"])
    assert len(ranks) == 2
    for r in ranks:
        assert r["all_dtensor"] and r["same_mesh"], r
        assert r["sharded"] == ["", "blocks.0", "blocks.1"], r
        assert r["model_equal"] and r["optim_equal"] and r["state_is_dtensor"], r
        assert r["new_state_count"] == 4 and r["new_state_zero"], r
        assert r["rel_err_eval"] <= TOL and r["rel_err_train"] <= TOL, r
        assert r["step_moved"] > 1e-4, r
        assert r["step_diff"] <= 1e-12, r
