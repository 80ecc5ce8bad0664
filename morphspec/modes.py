"""Checking eval and train mode without paying for two passes.

A model computes differently in train mode (with dropout off, as `verify.run_mode` sets
it) only through its modules' own batch statistics or dropout. Without such modules the two
modes are one computation (a language model); with batch statistics only, each of those
modules can compute the first half of a batch in eval mode and the second half in train
mode, so one forward of [x; x] gives both outputs and reads each layer's tensors (streamed
from the checkpoint, converted to the model's dtype) once instead of twice. Every other
layer treats samples independently, so each half is what its mode alone computes.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["batch_norms", "both_modes", "mode_free"]

_STATS = nn.modules.batchnorm._NormBase  # batch and instance norms
# Modules that compute differently in train mode with dropout off: batch statistics, and
# the dropout inside RNNs and torch's attention and transformer layers.
_MODE_KINDS = (
    _STATS, nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)  # fmt: skip


def mode_free(model: nn.Module) -> bool:
    """Whether `model` computes the same in train and eval mode (dropout off)."""
    return not any(isinstance(m, _MODE_KINDS) for m in model.modules())


def batch_norms(model: nn.Module) -> list[nn.Module] | None:
    """`model`'s batch-statistics modules, or None when it has other mode-dependent ones."""
    found: list[nn.Module] = [m for m in model.modules() if isinstance(m, _MODE_KINDS)]
    return found if all(isinstance(m, _STATS) for m in found) else None


def _halves(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first half of the batch in eval mode, then the second in train mode (which
    updates the running statistics after the eval half has read them)."""
    n = x.shape[0] // 2
    forward = type(self).forward
    self.training = False
    first = forward(self, x[:n])
    self.training = True
    second = forward(self, x[n:])
    self.training = False
    return torch.cat((first, second))


@contextmanager
def both_modes(norms: list[nn.Module]) -> Iterator[None]:
    """Within it, each module of `norms` (from `batch_norms`) computes a batch's halves in
    eval and train mode; run the model in eval mode on `torch.cat((x, x))`."""
    for m in norms:
        m.forward = types.MethodType(_halves, m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward
