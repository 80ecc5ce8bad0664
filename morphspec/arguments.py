"""The public API's argument checks: `grow`, `load` and `probe` refuse bad arguments up
front with an `ArgumentError` (a ValueError) or `ArgumentTypeError` (a TypeError) that
says what was given and what to give, instead of failing later inside torch (a model on
the meta device, `dtype="float64"`, `samples=0`, an LBFGS optimizer accepted and then
failing at its first step)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, get_args

import torch
from torch import nn

from morphspec.errors import ArgumentError, ArgumentTypeError, closest
from morphspec.growth.options import GrowOptions, option_fields, option_infos, option_types

__all__ = [
    "SUPPORTED_OPTIMIZERS",
    "check_dtype",
    "check_optimizer",
    "check_options",
    "check_samples",
    "check_teacher",
]

SUPPORTED_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
)


def check_teacher(teacher: object, what: str = "teacher") -> Mapping[str, torch.Tensor]:
    """A module or a state_dict of tensors, none on the meta device; its tensors by name."""
    if isinstance(teacher, nn.Module):
        state: Mapping[str, Any] = teacher.state_dict()
    elif isinstance(teacher, Mapping):
        state = teacher
    else:
        raise ArgumentTypeError(
            f"{what} must be a torch nn.Module or a state_dict (a mapping of names to"
            f" tensors), not {type(teacher).__name__}"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ArgumentTypeError(
                f"{what} state_dict entry '{key}' is a {type(value).__name__}, not a tensor"
            )
        if value.is_meta:
            raise ArgumentError(
                f"{what} tensor '{key}' is on the meta device: it has a shape but no values;"
                f" load the {what}'s weights first (e.g. model.to_empty(device='cpu') then"
                " load_state_dict)"
            )
    return state


def check_dtype(dtype: object) -> torch.dtype | None:
    """None or a floating torch.dtype (a string such as 'float64' is named with the fix)."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        fix = f"torch.{name}" if isinstance(getattr(torch, name, None), torch.dtype) else "one"
        raise ArgumentTypeError(f"dtype must be a torch.dtype, not the string {dtype!r}: use {fix}")
    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"dtype must be a torch.dtype, not {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ArgumentError(f"dtype must be a floating-point dtype (weights are cast), not {dtype}")
    return dtype


def check_samples(samples: object, name: str = "samples") -> None:
    """A whole number >= 1 (not a bool)."""
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(samples).__name__}")
    if samples < 1:
        raise ArgumentError(f"{name} must be at least 1, got {samples}")


def check_optimizer(optimizer: object) -> None:
    """None, or an optimizer whose state growth knows how to carry over."""
    if optimizer is None:
        return
    names = ", ".join(f"torch.optim.{c.__name__}" for c in SUPPORTED_OPTIMIZERS)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ArgumentTypeError(
            f"optimizer must be a torch optimizer ({names}), not {type(optimizer).__name__}"
        )
    if not isinstance(optimizer, SUPPORTED_OPTIMIZERS):
        raise ArgumentError(
            f"optimizer {type(optimizer).__name__} is not supported: growth carries over the"
            f" state of {names}; grow without optimizer= and make a new one"
        )


def check_options(options: GrowOptions) -> None:
    """Each growth option of the type, range and finiteness its CLI flag enforces."""
    hints = option_types()
    infos = option_infos()
    flat = options.flat()
    for f in option_fields():
        value, kind, info = flat[f.name], hints[f.name], infos[f.name]
        choices = get_args(kind)
        if type(None) in choices:  # an optional option: None (automatic) or its type
            if value is None:
                continue
            kind = next(c for c in choices if c is not type(None))
            choices = get_args(kind)
        if choices:
            if value not in choices:
                hint = closest(str(value), [str(c) for c in choices])
                raise ArgumentError(
                    f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}{hint}"
                )
            continue
        numeric = kind in (int, float) and not isinstance(value, bool)
        if kind is bool and not isinstance(value, bool):
            raise ArgumentTypeError(f"{f.name} must be True or False, not {value!r}")
        if kind is int and (not numeric or not isinstance(value, int)):
            raise ArgumentTypeError(f"{f.name} must be an int, not {type(value).__name__}")
        if kind is float and (not numeric or not isinstance(value, int | float)):
            raise ArgumentTypeError(f"{f.name} must be a number, not {type(value).__name__}")
        if kind in (int, float):
            _check_range(f.name, value, info.min, info.max)


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if not math.isfinite(value):
        raise ArgumentError(f"{name} must be finite, got {value}")
    if low is not None and value < low:
        raise ArgumentError(f"{name} must be at least {low:g}, got {value}")
    if high is not None and value > high:
        raise ArgumentError(f"{name} must be at most {high:g}, got {value}")
