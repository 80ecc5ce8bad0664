"""Checkpoint I/O: lazy (sharded) safetensors reading, atomic streaming writing, metadata.

Only safetensors is read or written: never pickle, so a checkpoint cannot run code.
The reader and writer need torch and safetensors (the `morphspec[torch]` extra); they are
imported on first use, so the torch-free parts (`metadata`, `output`) work without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from morphspec.checkpoint.metadata import (
    CONVERSION_KEYS,
    FORMAT_KEYS,
    make_metadata,
    morphspec_version,
)

if TYPE_CHECKING:
    from morphspec.checkpoint.finite import check_finite
    from morphspec.checkpoint.reader import INDEX_NAME, CheckpointReader, check_keys
    from morphspec.checkpoint.source import StateSource, TensorSource
    from morphspec.checkpoint.writer import (
        TensorEntry,
        load_state_dict,
        save_state_dict,
        write_safetensors,
    )

_LAZY = {
    "check_finite": "finite",
    "INDEX_NAME": "reader",
    "CheckpointReader": "reader",
    "check_keys": "reader",
    "StateSource": "source",
    "TensorSource": "source",
    "TensorEntry": "writer",
    "load_state_dict": "writer",
    "save_state_dict": "writer",
    "write_safetensors": "writer",
}

__all__ = [
    "CONVERSION_KEYS",
    "FORMAT_KEYS",
    "INDEX_NAME",
    "CheckpointReader",
    "StateSource",
    "TensorEntry",
    "TensorSource",
    "check_finite",
    "check_keys",
    "load_state_dict",
    "make_metadata",
    "morphspec_version",
    "save_state_dict",
    "write_safetensors",
]


def __getattr__(name: str) -> Any:
    """Import the torch-backed reader and writer only when one of their names is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'morphspec.checkpoint' has no attribute '{name}'")
    return getattr(importlib.import_module(f"morphspec.checkpoint.{module}"), name)
