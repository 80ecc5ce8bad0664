"""Where teacher tensors come from: a checkpoint file, or a state_dict in memory.

Growth reads the teacher only through `TensorSource`, so `morph convert` (a lazy file
reader) and `morphspec.grow` (a module's state_dict) share one code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch

from morphspec.errors import CheckpointError, Mark, closest

__all__ = ["StateSource", "TensorSource"]


class TensorSource(Protocol):
    """Read-only, keyed access to a teacher's tensors."""

    @property
    def path(self) -> Path | str: ...

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str, copy: bool = True) -> torch.Tensor: ...


class StateSource:
    """A state_dict as a TensorSource; tensors are read on the CPU, detached, never written."""

    def __init__(self, state: Mapping[str, torch.Tensor], label: str = "<state_dict>") -> None:
        self._state = state
        self.path = label

    def keys(self) -> list[str]:
        return sorted(self._state)

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def _tensor(self, key: str) -> torch.Tensor:
        try:
            return self._state[key]
        except KeyError:
            hint = closest(key, self._state)
            message = f"no tensor '{key}' in the state_dict{hint}"
            raise CheckpointError(message, Mark(self.path)) from None

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._tensor(key).shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensor(key).dtype

    def get(self, key: str, copy: bool = True) -> torch.Tensor:
        t = self._tensor(key).detach().cpu()
        return t.clone() if copy else t
