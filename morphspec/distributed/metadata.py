"""A DCP directory's `.metadata`, read without running arbitrary pickled code.

torch writes `.metadata` with `pickle.dump` and its own `FileSystemReader.read_metadata`
reads it back with a plain `pickle.load`, which runs whatever a crafted file names. Morph
reads it with an unpickler that admits only the classes DCP's metadata is made of (its
dataclasses, `torch.Size`, dtypes, layouts, memory formats and a `pathlib` path) and
refuses any other global, naming it. Tensor data is read by torch with
`torch.load(weights_only=True)`; non-tensor values (optimizer hyperparameters) are read
here with `weights_only=True` too (`SafeLoadPlanner`), where torch's default planner uses
`weights_only=False`.

Every storage file the metadata names must be a plain file name inside the directory, so
a crafted `.metadata` cannot make morph read a file elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from morphspec.errors import CheckpointError, Mark

__all__ = [
    "METADATA_NAME",
    "SafeLoadPlanner",
    "SafeReader",
    "is_dcp_dir",
    "quiet_single_process",
    "read_metadata",
]

METADATA_NAME = ".metadata"
_DCP_META = "torch.distributed.checkpoint.metadata"
_ALLOWED: dict[str, frozenset[str]] = {
    _DCP_META: frozenset(
        {
            "Metadata",
            "MetadataIndex",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",
        }
    ),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch._utils": frozenset({"_get_layout"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "pathlib": frozenset({"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}),
    "collections": frozenset({"OrderedDict"}),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits only DCP's metadata classes and torch's plain value types."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch":
            value = getattr(torch, name, None)
            if name == "Size" or isinstance(value, (torch.dtype, torch.layout)):
                return value
            if isinstance(value, torch.memory_format):
                return value
        raise pickle.UnpicklingError(f"it names {module}.{name}, which DCP metadata never holds")


def is_dcp_dir(path: str | Path) -> bool:
    """A folder holding `.metadata` (what `dcp.save` writes last)."""
    p = Path(path)
    return p.is_dir() and (p / METADATA_NAME).is_file()


def read_metadata(folder: str | Path) -> Metadata:
    """The checked metadata of DCP directory `folder`, or a CheckpointError naming it."""
    path = Path(folder) / METADATA_NAME
    mark = Mark(str(path))
    try:
        with path.open("rb") as f:
            meta = _MetadataUnpickler(f).load()
    except OSError as e:
        raise CheckpointError(f"cannot read the DCP metadata ({e.strerror})", mark) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"not a DCP metadata file morph can read safely ({e}); re-save it with"
            " torch.distributed.checkpoint.save",
            mark,
        ) from None
    if not isinstance(meta, Metadata) or not isinstance(meta.state_dict_metadata, dict):
        raise CheckpointError("not a DCP metadata file (no state_dict_metadata)", mark)
    for info in (meta.storage_data or {}).values():
        name = str(getattr(info, "relative_path", ""))
        if not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(
                f"the metadata names storage '{name}' outside the directory; DCP storage"
                " files are plain names beside .metadata",
                mark,
            )
        if not (Path(folder) / name).is_file():
            raise CheckpointError(
                f"storage file {name} named in the metadata is missing", Mark(str(folder))
            )
    if getattr(meta, "storage_meta", None) is None:
        meta.storage_meta = StorageMeta()
    return meta


class SafeReader(FileSystemReader):
    """torch's FileSystemReader with morph's checked metadata (read once)."""

    def __init__(self, path: str | Path, metadata: Metadata | None = None) -> None:
        super().__init__(str(path))
        self._checked = metadata if metadata is not None else read_metadata(path)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self._checked


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner reading non-tensor values with `weights_only=True`."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            fqn = read_item.dest_index.fqn
            raise CheckpointError(f"value '{fqn}' is not plain data ({e})") from None
        self.state_dict[read_item.dest_index.fqn] = obj
        self.original_state_dict[read_item.dest_index.fqn] = obj  # the caller's dict


@contextlib.contextmanager
def quiet_single_process() -> Iterator[None]:
    """Silence torch's note that a `no_dist` load or save runs in one process: morph asks
    for that on purpose (one key at a time, or a one-process conversion)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield
