"""The optimizer state that follows a growth: what a family does to a slice of a parameter,
it does to that slice's moments.

Every family builds each student tensor from the teacher's by a *monomial* map: each
entry is a constant (a free parameter, a neutral value, an identity stand-in) or a fixed
multiple of one teacher entry (copied: 1; negated: -1; Net2Net's split column: 1/n; a
rescaled tensor: its factor). Write it `s_i = b_i + c_i · t_π(i)`. A moment follows the
same map without the constants:

    first moments (Adam's exp_avg, SGD's momentum_buffer)    m'_i = c_i · m_π(i)
    second moments (exp_avg_sq, max_exp_avg_sq)               v'_i = c_i² · v_π(i)

so a copy of a teacher entry inherits its moments, a negated copy the negated first
moment, Net2Net's columns divided by n get exp_avg/n and exp_avg_sq/n² (Adam's update
m/√v is then the teacher's, and each of the n copies moves as the teacher's column did).
Entries with no teacher entry (c_i = 0) start with a zero first moment. Their second
moment cannot start at zero: torch keeps one `step` per tensor (the teacher's), so Adam's
bias correction is already ~1 and a zero v would make their first update
(1−β1)/√(1−β2) ≈ 3.2 times the learning rate, a jolt to every free parameter at once. They
get the mean second moment of the tensor's teacher entries instead, so their first update
is ~(1−β1)·|g|/√v̄, at most the size of a teacher entry's. A parameter with no teacher
counterpart (a new block) has no state at all and starts as torch starts it (step 0).

The map is read off the family itself, with its free parameters set to zero (init scale
0, no noise): b = T(0), c = T(1) − b, and π from T(1 + index) − b; a fourth probe with
random values checks that the map is monomial, so a future rule that mixes teacher entries
is refused here rather than given wrong moments. For R2R, NetMorph and randpad the teacher
slice has c = 1 and keeps its state bit for bit.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from morphspec.errors import MorphError
from morphspec.growth.families import Family, make_family

__all__ = [
    "MomentMap",
    "grow_entry",
    "map_optimizer",
    "moment_map",
    "state_family",
    "student_groups",
]

SECOND_MOMENTS = frozenset({"exp_avg_sq", "max_exp_avg_sq"})


@dataclasses.dataclass(frozen=True)
class MomentMap:
    """s_i = b_i + c_i · t[π(i)] for one student tensor (flattened; c = 0 where no teacher)."""

    coeff: torch.Tensor
    index: torch.Tensor
    shape: tuple[int, ...]

    def apply(self, moment: torch.Tensor, power: int, fill: float = 0.0) -> torch.Tensor:
        """The moment of the student tensor; entries with no teacher entry get `fill`."""
        src = moment.detach().reshape(-1).to(torch.float64)
        c = self.coeff if power == 1 else self.coeff**power
        out = torch.where(self.coeff != 0, c * src[self.index], torch.full_like(c, fill))
        return out.reshape(self.shape).to(moment.dtype)


def moment_map(family: Family, key: str, teacher_shape: tuple[int, ...]) -> MomentMap:
    """The monomial map by which `family` makes student tensor `key` from the teacher's."""

    def make(t: torch.Tensor) -> torch.Tensor:
        return family.tensor(key, t, None, torch.float64).reshape(-1)

    n = 1
    for d in teacher_shape:
        n *= d
    base = make(torch.zeros(teacher_shape, dtype=torch.float64))
    coeff = make(torch.ones(teacher_shape, dtype=torch.float64)) - base
    positions = torch.arange(1, n + 1, dtype=torch.float64).reshape(teacher_shape)
    scaled = make(positions) - base
    has = coeff != 0
    index = torch.zeros_like(base, dtype=torch.int64)
    index[has] = torch.round(scaled[has] / coeff[has]).to(torch.int64) - 1
    if bool(((index < 0) | (index >= n)).any()):
        raise _not_monomial(family, key)
    gen = torch.Generator().manual_seed(12345)
    probe = torch.randn(teacher_shape, generator=gen, dtype=torch.float64)
    got = make(probe) - base
    want = torch.where(has, coeff * probe.reshape(-1)[index], torch.zeros_like(coeff))
    if not torch.allclose(got, want, rtol=1e-9, atol=1e-12):
        raise _not_monomial(family, key)
    shape = tuple(int(d) for d in family.shapes[key])
    return MomentMap(coeff, index, shape)


def _not_monomial(family: Family, key: str) -> MorphError:
    return MorphError(
        f"the optimizer state of '{key}' cannot follow {family.name}'s growth: the student"
        " tensor is not a copy or multiple of single teacher entries; start a fresh optimizer"
    )


def state_family(family: Family) -> Family:
    """The same family and plan with its free parameters at zero (see the module doc)."""
    options = dataclasses.replace(family.options, init_scale=0.0, noise=0.0)
    return make_family(family.name, family.plan, options, family.rescaler.get)


def map_optimizer(
    optimizer: Optimizer, teacher: nn.Module, student: nn.Module, family: Family
) -> tuple[Optimizer, dict[str, Any]]:
    """An optimizer of `optimizer`'s class over `student`'s parameters, with the state and
    hyperparameters that continue the teacher's; and its state_dict."""
    names = {id(p): name for name, p in teacher.named_parameters()}
    group_of: dict[str, int] = {}
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) not in names:
                raise MorphError(
                    "the optimizer holds a parameter that is not the teacher's; pass the"
                    " optimizer built over the teacher's parameters"
                )
            group_of[names[id(p)]] = g
    old_state = optimizer.state_dict()["state"]
    t_index = {
        names[id(p)]: i
        for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])
    }
    teacher_shapes = {k: tuple(p.shape) for k, p in teacher.named_parameters()}
    params = dict(student.named_parameters())
    keys = student_groups(
        family, list(params), teacher_shapes, group_of, len(optimizer.param_groups)
    )
    # AdamW's defaults hold `decoupled_weight_decay`, which its constructor does not take;
    # the groups' hyperparameters are restored from the teacher's below anyway.
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    new = type(optimizer)([{"params": [params[k] for k in ks]} for ks in keys], **defaults)
    state_dict = new.state_dict()
    flat = [k for ks in keys for k in ks]
    mapper = state_family(family)
    state: dict[int, dict[str, Any]] = {}
    for i, name in enumerate(flat):
        src = family.source_key(family.plan.source_key(name))
        old = old_state.get(t_index.get(src, -1))
        if old:  # a new parameter (or one never stepped) starts from zero state
            state[i] = grow_entry(mapper, name, old, teacher_shapes[src], tuple(params[name].shape))
    saved = optimizer.state_dict()["param_groups"]
    state_dict["state"] = state
    state_dict["param_groups"] = [
        {**{k: v for k, v in saved[g].items() if k != "params"}, "params": group["params"]}
        for g, group in enumerate(state_dict["param_groups"])
    ]
    new.load_state_dict(state_dict)
    return new, new.state_dict()


def student_groups(
    family: Family,
    student_params: Sequence[str],
    teacher_params: Collection[str],
    group_of: Mapping[str, int],
    groups: int,
) -> list[list[str]]:
    """The student's parameters in each of the teacher optimizer's `groups`, in build order:
    a parameter joins its source's group (a new block's: the teacher's last copy's, else
    group 0); one whose source the teacher's optimizer did not train stays out too."""
    plan = family.plan
    keys: list[list[str]] = [[] for _ in range(groups)]
    for name in student_params:
        src = family.source_key(plan.source_key(name))
        if src in teacher_params and src not in group_of:
            continue
        ref = src if src in group_of else plan.reference_key(src)
        keys[group_of.get(ref, 0) if ref is not None else 0].append(name)
    return keys


def grow_entry(
    mapper: Family,
    name: str,
    old: Mapping[str, Any],
    teacher_shape: tuple[int, ...],
    student_shape: tuple[int, ...],
) -> dict[str, Any]:
    """The optimizer state of student parameter `name` from its source's state `old`;
    `mapper` is `state_family(family)`. Tensors of the parameter's shape follow the growth
    (see the module doc); anything else (`step`) is copied."""
    key = mapper.plan.source_key(name)
    tshape = tuple(int(d) for d in teacher_shape)
    moves = tshape != tuple(student_shape) or mapper.rescaler.touches(key)
    moves = moves or key != mapper.source_key(key)
    mmap = moment_map(mapper, key, tshape) if moves else None
    entry: dict[str, Any] = {}
    for k, v in old.items():
        if isinstance(v, torch.Tensor) and tuple(v.shape) == tshape and v.dim() > 0:
            if mmap is None:
                entry[k] = v.clone()
            elif k in SECOND_MOMENTS:
                entry[k] = mmap.apply(v, 2, fill=float(v.double().mean()))
            else:
                entry[k] = mmap.apply(v, 1)
        else:
            entry[k] = v.clone() if isinstance(v, torch.Tensor) else v
    return entry
