"""`morphspec.grow` on an FSDP2 (`fully_shard`) model, inside the training job.

Every rank gathers the teacher's full state (`get_model_state_dict` with
`full_state_dict=True`: DTensor all-gathers over the model's own mesh), grows it as
`grow()` grows any state_dict (the per-tensor seeding makes every rank's student
identical, and verifies it on full tensors in eval and train mode), then shards the
student as the teacher was sharded: `fully_shard` on each module whose path matches a
sharded teacher module's path with its block numbers as wildcards (so new repeat copies
are sharded too), children before parents, the root last, on the teacher's mesh, with
its `reshard_after_forward` and mixed-precision policy. The optimizer's full state is
gathered (`get_optimizer_state_dict`), grown by name (`optim_state.py`, the map
`grow()` uses), and loaded into a new optimizer of the same class over the sharded
student with `set_optimizer_state_dict`, which shards it. Memory per rank is one full
copy of teacher and student for the duration of the growth: growth is a one-off event,
and this is what the full-state-dict API of torch asks for.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from morphspec.distributed.optim_state import InMemoryState, grow_optimizer_state

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from morphspec.growing import GrowResult

__all__ = ["grow_sharded", "is_sharded", "shard_like"]

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=False)


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of `module` is a DTensor (FSDP2, or another DTensor plan)."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(r"\.".join(r"\d+" if part.isdigit() else re.escape(part)
                                 for part in path.split(".")) if path else "")  # fmt: skip


def _fsdp_kwargs(module: FSDPModule) -> dict[str, Any]:
    """The mesh and policies `fully_shard` gave `module` (read from its state)."""
    state = module._get_fsdp_state()
    group = getattr(state, "_fsdp_param_group", None)
    if group is None:
        return {}
    kwargs: dict[str, Any] = {"mesh": group.mesh_info.mesh}
    kwargs["reshard_after_forward"] = group.post_forward_mesh_info is not None
    for name in ("mp_policy", "offload_policy"):
        if getattr(group, name, None) is not None:
            kwargs[name] = getattr(group, name)
    return kwargs


def shard_like(student: nn.Module, teacher: nn.Module) -> None:
    """`fully_shard` the student's modules as the teacher's are (see the module doc)."""
    sharded = {n: m for n, m in teacher.named_modules() if isinstance(m, FSDPModule)}
    mesh = next(p.device_mesh for p in teacher.parameters() if isinstance(p, DTensor))
    kwargs = {n: _fsdp_kwargs(m) for n, m in sharded.items()}
    patterns = [(_pattern(n), n) for n in sharded if n]
    targets: list[tuple[str, nn.Module, dict[str, Any]]] = []
    for name, module in student.named_modules():
        if not name:
            continue
        match = next((t for p, t in patterns if p.fullmatch(name)), None)
        if match is not None:
            targets.append((name, module, {"mesh": mesh, **kwargs[match]}))
    for _, module, kw in sorted(targets, key=lambda t: -t[0].count(".")):
        fully_shard(module, **kw)
    if "" in sharded:
        fully_shard(student, **{"mesh": mesh, **kwargs[""]})


def grow_sharded(
    module: nn.Module,
    teacher_spec: Any,
    student_spec: Any,
    *,
    optimizer: Optimizer | None,
    **kwargs: Any,
) -> GrowResult:
    """`grow()` for a model with DTensor parameters; see the module doc."""
    from morphspec.distributed.convert_io import param_shapes
    from morphspec.growing import grow

    full = {
        k: v for k, v in get_model_state_dict(module, options=_FULL).items()
        if isinstance(v, torch.Tensor)
    }  # fmt: skip
    osd = get_optimizer_state_dict(module, optimizer, options=_FULL) if optimizer else None
    result = grow(full, teacher_spec, student_spec, **kwargs)
    student = result.student
    student.train(module.training)
    shard_like(student, module)
    result.student = student
    if optimizer is None or osd is None:
        return result
    family, plan = result.family, result.family.plan
    grown = grow_optimizer_state(
        family,
        InMemoryState(osd["state"], osd["param_groups"]),
        dict(param_shapes(plan.teacher)),
        param_shapes(plan.student),
        fill_new=True,
    ).materialize()
    params = dict(student.named_parameters())
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [
        {**{k: v for k, v in g.items() if k != "params" and k in accepted},
         "params": [params[n] for n in g["params"]]}
        for g in grown["param_groups"]
    ]  # fmt: skip
    new = type(optimizer)(groups, **defaults)
    set_optimizer_state_dict(student, new, grown, options=StateDictOptions(full_state_dict=True))
    result.optimizer, result.optimizer_state = new, new.state_dict()
    return result
