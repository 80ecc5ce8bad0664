"""Checkpoint I/O: lazy (sharded) safetensors reading, atomic streaming writing, metadata.

Only safetensors is read or written: never pickle, so a checkpoint cannot run code.
"""

from morphspec.checkpoint.metadata import (
    CONVERSION_KEYS,
    FORMAT_KEYS,
    make_metadata,
    morphspec_version,
)
from morphspec.checkpoint.reader import INDEX_NAME, CheckpointReader, check_keys
from morphspec.checkpoint.source import StateSource, TensorSource
from morphspec.checkpoint.writer import (
    TensorEntry,
    load_state_dict,
    save_state_dict,
    write_safetensors,
)

__all__ = [
    "CONVERSION_KEYS",
    "FORMAT_KEYS",
    "INDEX_NAME",
    "CheckpointReader",
    "StateSource",
    "TensorEntry",
    "TensorSource",
    "check_keys",
    "load_state_dict",
    "make_metadata",
    "morphspec_version",
    "save_state_dict",
    "write_safetensors",
]
