"""The ranks of the distributed tests (run by dist_helpers.run_job, never by pytest).

usage: dist_workers.py CASE TMP WORLD PG_TIMEOUT; each rank writes TMP/rank<r>.json.
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

warnings.filterwarnings("ignore")


def _fsdp(rank: int, tmp: Path, args: dict[str, Any]) -> dict[str, Any]:
    """grow() on a fully_shard-ed teacher against grow() on its gathered full copy."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.distributed.tensor import DTensor

    import morphspec
    from morphspec.verify import compare

    spec, student_set = Path(args["spec"]), args["student_set"]
    full = StateDictOptions(full_state_dict=True, cpu_offload=False)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    teacher = morphspec.build(spec).double().train()
    for name in args["shard"]:
        fully_shard(teacher.get_submodule(name), mesh=mesh)
    fully_shard(teacher, mesh=mesh)
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        teacher(x).square().mean().backward()
        opt.step()
    # the reference: the same teacher and optimizer state, gathered, grown unsharded
    t_full = get_model_state_dict(teacher, options=full)
    o_full = get_optimizer_state_dict(teacher, opt, options=full)
    ref_teacher = morphspec.build(spec).double().train()
    ref_teacher.load_state_dict(t_full)
    ref_opt = torch.optim.AdamW(ref_teacher.parameters(), lr=1e-2, weight_decay=0.1)
    set_optimizer_state_dict(ref_teacher, ref_opt, o_full)
    ref = morphspec.grow(ref_teacher, spec, spec, student_set=student_set, optimizer=ref_opt)

    res = morphspec.grow(teacher, spec, spec, student_set=student_set, optimizer=opt)
    student, s_opt = res.student, res.optimizer
    assert s_opt is not None and ref.optimizer is not None
    out: dict[str, Any] = {"rank": rank}
    out["all_dtensor"] = all(isinstance(p, DTensor) for p in student.parameters())
    out["same_mesh"] = all(p.device_mesh == mesh for p in student.parameters())  # type: ignore[union-attr]
    out["sharded"] = sorted(n for n, m in student.named_modules() if isinstance(m, FSDPModule))
    s_full = get_model_state_dict(student, options=full)
    r_state = ref.student.state_dict()
    out["model_equal"] = s_full.keys() == r_state.keys() and all(
        torch.equal(s_full[k], r_state[k]) for k in r_state
    )
    so = get_optimizer_state_dict(student, s_opt, options=full)
    ro = ref.optimizer.state_dict()
    names = [n for n, _ in ref.student.named_parameters()]
    ro_named = {names[i]: v for i, v in ro["state"].items()}
    out["state_is_dtensor"] = all(
        isinstance(v, DTensor)
        for st in s_opt.state.values() for k, v in st.items() if k != "step"
    )  # fmt: skip
    out["optim_equal"] = all(
        torch.equal(so["state"][n][k], v) for n, e in ro_named.items() for k, v in e.items()
    )
    out["new_state_zero"] = all(
        float(v.abs().max()) == 0
        for n, e in so["state"].items() if n not in ro_named for v in e.values()
    )  # fmt: skip
    out["new_state_count"] = len(set(so["state"]) - set(ro_named))
    for mode in ("eval", "train"):
        out[f"rel_err_{mode}"] = compare(teacher, student, x, 1e-10, mode=mode).rel_err
    # one training step on both: the sharded student moves as the unsharded one
    for model, o in ((student, s_opt), (ref.student, ref.optimizer)):
        o.zero_grad()
        model(x).square().mean().backward()
        o.step()
    after = get_model_state_dict(student, options=full)
    ref_after = dict(ref.student.named_parameters())  # (compare's train-mode forwards
    # moved the sharded student's batchnorm statistics, not the reference's)
    out["step_diff"] = max(float((after[k] - ref_after[k]).abs().max()) for k in ref_after)
    out["step_moved"] = max(float((after[k] - s_full[k]).abs().max()) for k in ref_after)
    return out


def _convert(rank: int, tmp: Path, args: dict[str, Any]) -> dict[str, Any]:
    """`convert` as torchrun runs it (RANK and WORLD_SIZE set), once per entry of
    `args["calls"]` (each `{"positional", "kwargs"}`, with `vary`: another seed on rank 1),
    optionally with rank 1 dying at its first tensor (`crash`)."""
    import os

    from morphspec.convert import convert
    from morphspec.errors import MorphError

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(dist.get_world_size()))
    if args.get("crash") and rank == 1:
        from morphspec.checkpoint import writer
        from morphspec.distributed import dcp_write

        def die(*a: Any, **k: Any) -> Any:
            os._exit(3)

        dcp_write._LazyPlanner.resolve_data = die  # type: ignore[method-assign]
        writer.write_safetensors = die  # type: ignore[assignment]
        import morphspec.convert

        morphspec.convert.write_safetensors = die  # type: ignore[assignment]
    results: list[dict[str, Any]] = []
    for call in args["calls"]:
        kwargs = dict(call["kwargs"])
        if call.get("vary") and rank == 1:
            kwargs["seed"] = 7
        try:
            result = convert(*call["positional"], **kwargs)
        except MorphError as e:
            results.append({"error": str(e)})
            continue
        v = result.verification
        results.append({"written": result.written, "rel_err": v.rel_err if v else None})
    return {"rank": rank, "calls": results}


CASES = {"fsdp": _fsdp, "convert": _convert}


def _rank(rank: int, case: str, tmp: Path, world: int, timeout: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp / 'store'}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout),
    )
    try:
        args = json.loads((tmp / "args.json").read_text())
        result = CASES[case](rank, tmp, args)
        (tmp / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    case, tmp, world, timeout = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mp.spawn(_rank, args=(case, tmp, world, timeout), nprocs=world, join=True)
