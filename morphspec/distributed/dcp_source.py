"""A DCP directory as a teacher: model tensors (and optimizer state) one key at a time.

Two layouts are read:
- `dcp.save({"model": msd, "optim": osd})` with `msd, osd = get_state_dict(model, opt)`
  (torch's recipe, Lightning's FSDP strategy): model keys under `model`, optimizer state
  under `optim` as `state -> fqn -> name` and `param_groups -> i -> name`;
- torchtitan's: model keys at the top level (its `ModelWrapper` state is flattened into the
  saved dict), optimizer state under `optimizer` as flattened `state.<fqn>.<name>` and
  `param_groups.<fqn>.<name>` (`flatten_optimizer_state_dict=True`), beside `train_state`,
  `lr_scheduler` and `dataloader`, which morph ignores.
Where a key sits comes from the metadata's `planner_data` (the path of each flattened key),
never from splitting names on dots. Each `get` is one `dcp.load` of one key into a fresh
full tensor, so a sharded (DTensor) save is read whole and memory stays near one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

from morphspec.checkpoint.reader import CheckpointReader
from morphspec.distributed.metadata import (
    METADATA_NAME,
    SafeLoadPlanner,
    SafeReader,
    quiet_single_process,
    read_metadata,
)  # fmt: skip
from morphspec.errors import CheckpointError, Mark, closest

__all__ = ["DCPSource", "OptimizerView"]

_NOT_MODEL = frozenset({"optim", "optimizer", "train_state", "lr_scheduler", "dataloader"})


class DCPSource(CheckpointReader):
    """The model tensors of a DCP directory under their model keys: a CheckpointReader
    (every method convert and verify use) over DCP instead of safetensors."""

    def __init__(self, folder: str | Path, require_model: bool = True) -> None:
        self._stack = ExitStack()
        self._handles = {}
        self._index = None
        self._sha = None
        self.folder = Path(folder)
        self.path = self.folder
        self._meta = read_metadata(self.folder)
        self._reader = SafeReader(self.folder, self._meta)
        self._model: dict[str, str] = {}  # model key -> flat DCP key
        self._paths: dict[str, tuple[Any, ...]] = {}
        planner = getattr(self._meta, "planner_data", None)
        for flat in self._meta.state_dict_metadata:
            path = planner.get(flat) if isinstance(planner, dict) else None
            path = tuple(path) if isinstance(path, (tuple, list)) else tuple(flat.split(".", 1))
            self._paths[flat] = path
        wrapped = any(p[0] == "model" and len(p) == 2 for p in self._paths.values())
        for flat, path in self._paths.items():
            item = self._meta.state_dict_metadata[flat]
            if not isinstance(item, TensorStorageMetadata):
                continue
            if wrapped and path[0] == "model" and len(path) == 2:
                self._model[str(path[1])] = flat
            elif not wrapped and len(path) == 1 and str(path[0]).split(".")[0] not in _NOT_MODEL:
                self._model[str(path[0])] = flat
        if not self._model and require_model:
            raise CheckpointError(
                "the DCP directory holds no model tensors (neither a 'model' entry, as"
                " get_state_dict's layout saves, nor top-level weights, as torchtitan's);"
                " point at the checkpoint of the model",
                Mark(str(self.folder)),
            )

    @classmethod
    def optimizer_only(cls, folder: str | Path) -> OptimizerView:
        """The optimizer state of a DCP directory that may hold no model tensors."""
        view = OptimizerView(cls(folder, require_model=False))
        if not view.names:
            raise CheckpointError(
                "the DCP directory holds no optimizer state ('optim' or 'optimizer' entries)",
                Mark(str(folder)),
            )
        return view

    # -- CheckpointReader surface --------------------------------------------------------

    @property
    def metadata(self) -> dict[str, str]:
        return {}

    @property
    def paths(self) -> list[Path]:
        """`.metadata`, then the storage files by name."""
        names = sorted({str(i.relative_path) for i in (self._meta.storage_data or {}).values()})
        return [self.folder / METADATA_NAME, *(self.folder / n for n in names)]

    def keys(self) -> list[str]:
        return sorted(self._model)

    def __contains__(self, key: object) -> bool:
        return key in self._model

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._model)

    def _item(self, key: str) -> TensorStorageMetadata:
        try:
            flat = self._model[key]
        except KeyError:
            hint = closest(key, self._model)
            raise CheckpointError(
                f"no tensor '{key}' in the DCP checkpoint{hint}", Mark(str(self.folder))
            ) from None
        item = self._meta.state_dict_metadata[flat]
        assert isinstance(item, TensorStorageMetadata)
        return item

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._item(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._item(key).properties.dtype

    def nbytes(self, key: str) -> int:
        return math.prod(self.shape(key)) * self.dtype(key).itemsize

    def get(self, key: str, copy: bool = True) -> torch.Tensor:
        """Model tensor `key`, read whole (every saved shard) into a new tensor."""
        self._item(key)
        return self.load_flat(self._model[key])

    # -- any key -------------------------------------------------------------------------
    def load_flat(self, flat: str) -> Any:
        """One saved value by its flattened DCP key: a tensor, or plain data."""
        item = self._meta.state_dict_metadata[flat]
        target: dict[str, Any] = {}
        if isinstance(item, TensorStorageMetadata):
            target[flat] = torch.empty(tuple(item.size), dtype=item.properties.dtype)
        elif isinstance(item, BytesStorageMetadata):
            target[flat] = None
        try:
            with quiet_single_process():
                dcp.load(
                    target,
                    storage_reader=self._reader,
                    planner=SafeLoadPlanner(flatten_state_dict=False),
                    no_dist=True,
                )
        except CheckpointError:
            raise
        except Exception as e:  # torch wraps reader errors in CheckpointException
            raise CheckpointError(
                f"cannot read '{flat}' from the DCP checkpoint ({str(e).splitlines()[0]})",
                Mark(str(self.folder)),
            ) from None
        return target[flat]

    def optimizer(self) -> OptimizerView | None:
        """The optimizer state saved beside the model, or None when there is none."""
        view = OptimizerView(self)
        return view if view.names else None


class OptimizerView:
    """The optimizer state of a DCP checkpoint, per parameter name, read on demand."""

    def __init__(self, source: DCPSource) -> None:
        self.source = source
        self._state: dict[str, dict[str, str]] = {}  # fqn -> state name -> flat key
        self._groups: dict[int, dict[str, str]] = {}  # group -> hyperparameter -> flat key
        self._group_fqn: dict[str, dict[str, str]] = {}  # torchtitan: fqn -> name -> flat
        model = set(source.keys())
        for flat, path in source._paths.items():
            if len(path) == 4 and path[0] == "optim" and path[1] == "state":
                self._state.setdefault(str(path[2]), {})[str(path[3])] = flat
            elif len(path) == 4 and path[0] == "optim" and path[1] == "param_groups":
                self._groups.setdefault(int(path[2]), {})[str(path[3])] = flat
            elif len(path) == 2 and path[0] == "optimizer":
                self._titan(str(path[1]), flat, model)
        self.names = sorted(self._state)

    def _titan(self, key: str, flat: str, model: set[str]) -> None:
        """`state.<fqn>.<name>` / `param_groups.<fqn>.<name>`: the fqn is a model key."""
        head, _, rest = key.partition(".")
        fqn, _, name = rest.rpartition(".")
        if fqn not in model:
            return
        if head == "state":
            self._state.setdefault(fqn, {})[name] = flat
        elif head == "param_groups":
            self._group_fqn.setdefault(fqn, {})[name] = flat

    def layout(self, fqn: str) -> dict[str, tuple[tuple[int, ...], torch.dtype] | None]:
        """Each saved state entry of `fqn`: shape and dtype, None for a plain value."""
        out: dict[str, tuple[tuple[int, ...], torch.dtype] | None] = {}
        for name, flat in self._state.get(fqn, {}).items():
            item = self.source._meta.state_dict_metadata[flat]
            if isinstance(item, TensorStorageMetadata):
                out[name] = (tuple(int(d) for d in item.size), item.properties.dtype)
            else:
                out[name] = None
        return out

    def value(self, fqn: str, name: str) -> Any:
        return self.source.load_flat(self._state[fqn][name])

    def param_groups(self) -> list[dict[str, Any]]:
        """The groups with their hyperparameters and `params` as lists of names."""
        if self._groups:
            return [
                {k: self.source.load_flat(f) for k, f in self._groups[g].items()}
                for g in sorted(self._groups)
            ]
        groups: list[dict[str, Any]] = []
        for fqn in sorted(self._group_fqn):
            hyper = {k: self.source.load_flat(f) for k, f in self._group_fqn[fqn].items()}
            for group in groups:
                if {k: v for k, v in group.items() if k != "params"} == hyper:
                    group["params"].append(fqn)
                    break
            else:
                groups.append({**hyper, "params": [fqn]})
        return groups
