"""Optimizer state in names (get_state_dict's layout), grown offline one moment at a time.

`morphspec.grow(..., optimizer=)` maps a live optimizer (`growth/optim.py`). Offline, the
teacher's state comes from a DCP directory or a torch `optimizer.state_dict()` file, and
the student's is written without holding either whole: each student moment is a producer
that reads its source moment and applies the same per-entry map (`grow_entry`), so the
result equals `grow()`'s. The state is named by parameter name, as
`torch.distributed.checkpoint.state_dict.get_optimizer_state_dict` names it:
`{"state": {fqn: {name: value}}, "param_groups": [{..., "params": [fqn, ...]}]}`.

What morph can grow is the state of torch's Adam, AdamW and SGD (first moments, second
moments, `step`); state of another optimizer (Adagrad's `sum`, Adafactor's factored
moments) is refused, naming the key, as is state whose shapes do not fit the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from morphspec.errors import CheckpointError, Mark
from morphspec.growth.families import Family
from morphspec.growth.optim import grow_entry, state_family, student_groups

__all__ = [
    "KNOWN_STATE",
    "GrownOptimizer",
    "InMemoryState",
    "MomentEntry",
    "StateSource",
    "check_state",
    "grow_optimizer_state",
]

KNOWN_STATE = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})


class StateSource(Protocol):
    """A teacher optimizer's state by parameter name, read on demand."""

    names: list[str]

    def layout(self, fqn: str) -> dict[str, tuple[tuple[int, ...], torch.dtype] | None]:
        """Each state entry of `fqn`: its shape and dtype (None for a non-tensor)."""
        ...

    def value(self, fqn: str, name: str) -> Any: ...

    def param_groups(self) -> list[dict[str, Any]]: ...


class InMemoryState:
    """A StateSource over a state held in memory: `state` and `param_groups` by parameter
    name (a loaded optimizer file, a gathered FSDP state)."""

    def __init__(self, state: Any, groups: Any) -> None:
        """`state`: {name: {entry: value}}; `groups`: param groups listing names."""
        self._state = {k: dict(v) for k, v in state.items()}
        self._groups = [dict(g) for g in groups]
        self.names = sorted(self._state)

    def layout(self, fqn: str) -> dict[str, tuple[tuple[int, ...], torch.dtype] | None]:
        return {
            k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else None
            for k, v in self._state.get(fqn, {}).items()
        }

    def value(self, fqn: str, name: str) -> Any:
        v = self._state[fqn][name]
        return v.detach().clone() if isinstance(v, torch.Tensor) else v

    def param_groups(self) -> list[dict[str, Any]]:
        return [dict(g) for g in self._groups]


@dataclass(frozen=True)
class MomentEntry:
    """One student state tensor, made on demand."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class GrownOptimizer:
    """The student's optimizer state in names; tensor values are `MomentEntry`s."""

    state: dict[str, dict[str, Any]]
    param_groups: list[dict[str, Any]]

    def materialize(self) -> dict[str, Any]:
        """The whole state dict in memory (tests; small models)."""
        state = {
            fqn: {k: v.produce() if isinstance(v, MomentEntry) else v for k, v in entry.items()}
            for fqn, entry in self.state.items()
        }
        return {"state": state, "param_groups": self.param_groups}


def check_state(
    source: StateSource, teacher_params: Mapping[str, tuple[int, ...]], where: Path | str
) -> None:
    """Refuse state of another optimizer type, or of another model (names or shapes)."""
    mark = Mark(str(where))
    unknown = sorted(n for n in source.names if n not in teacher_params)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CheckpointError(
            f"the optimizer state is for other parameters: {', '.join(unknown[:10])}{more} are"
            f" not parameters of the teacher spec ({len(teacher_params)} parameters); pass the"
            " optimizer state saved with this checkpoint",
            mark,
        )
    for fqn in source.names:
        for name, layout in source.layout(fqn).items():
            if name not in KNOWN_STATE:
                raise CheckpointError(
                    f"the optimizer state has '{name}' (for '{fqn}'), which is not state of"
                    " torch's Adam, AdamW or SGD; morph grows only their state: start the"
                    " student with a fresh optimizer",
                    mark,
                )
            if layout is not None and name != "step" and layout[0] != teacher_params[fqn]:
                raise CheckpointError(
                    f"the optimizer state '{name}' of '{fqn}' has shape {list(layout[0])} but"
                    f" the parameter has {list(teacher_params[fqn])}; pass the optimizer state"
                    " of this checkpoint",
                    mark,
                )


def grow_optimizer_state(
    family: Family,
    source: StateSource,
    teacher_params: Mapping[str, tuple[int, ...]],
    student_params: Sequence[tuple[str, tuple[int, ...]]],
    fill_new: bool = False,
) -> GrownOptimizer:
    """The student's state: its parameters (in build order) in the teacher's groups, each
    with the state its source had, mapped as `grow()` maps it. A parameter with no source
    state starts as torch starts it: no state, or with `fill_new` the state torch's first
    step would make from zero (step 0, zero moments), which a DCP load needs to find."""
    groups = source.param_groups()
    group_of = {str(n): g for g, group in enumerate(groups) for n in group["params"]}
    s_shapes = dict(student_params)
    keys = student_groups(family, [n for n, _ in student_params], teacher_params, group_of,
                          max(len(groups), 1))  # fmt: skip
    mapper = state_family(family)
    have = set(source.names)
    state: dict[str, dict[str, Any]] = {}
    for name in (k for ks in keys for k in ks):
        src = family.source_key(family.plan.source_key(name))
        if src not in have:
            if fill_new and have:
                state[name] = _initial(source, sorted(have)[0], s_shapes[name])
            continue
        entry: dict[str, Any] = {}
        for k, layout in source.layout(src).items():
            if layout is None or (layout[0] != teacher_params[src] or not layout[0]):
                entry[k] = source.value(src, k)  # step and plain values are copied
                continue
            entry[k] = MomentEntry(s_shapes[name], layout[1], _producer(
                mapper, source, name, src, k, teacher_params[src], s_shapes[name]))  # fmt: skip
        if entry:
            state[name] = entry
    saved = [{k: v for k, v in g.items() if k != "params"} for g in groups] or [{}]
    return GrownOptimizer(state, [{**saved[g], "params": ks} for g, ks in enumerate(keys)])


def _initial(source: StateSource, like: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """Zero state with the names and dtypes of parameter `like`'s."""
    entry: dict[str, Any] = {}
    for k, layout in source.layout(like).items():
        if layout is None:
            entry[k] = source.value(like, k)
        elif k == "step" or not layout[0]:
            entry[k] = torch.zeros(layout[0], dtype=layout[1])
        else:
            entry[k] = MomentEntry(shape, layout[1], _zeros(shape, layout[1]))
    return entry


def _zeros(shape: tuple[int, ...], dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(shape, dtype=dtype)


def _producer(
    mapper: Family,
    source: StateSource,
    name: str,
    src: str,
    key: str,
    tshape: tuple[int, ...],
    sshape: tuple[int, ...],
) -> Callable[[], torch.Tensor]:
    def produce() -> torch.Tensor:
        value = source.value(src, key)
        return grow_entry(mapper, name, {key: value}, tshape, sshape)[key]

    return produce
