"""Lazy reading of teacher checkpoints: one safetensors file or an HF-style sharded set.

Headers are parsed and checked here before `safe_open` ever sees the file, because
`safe_open` maps the file into memory and a truncated or corrupt file would otherwise fail
late (or crash the process) instead of giving the user one clear message naming the file.
Tensor data is only read by `get`, one tensor at a time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import safe_open

from morphspec.checkpoint.prehash import sha256_of
from morphspec.checkpoint.regular import read_regular
from morphspec.checkpoint.source import TensorSource
from morphspec.errors import CheckpointError, Mark, Problem, closest

__all__ = ["INDEX_NAME", "SAFETENSORS_DTYPES", "CheckpointReader", "Span", "check_keys"]

INDEX_NAME = "model.safetensors.index.json"
_SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself enforces
_MAX_INDEX = 256 * 1024 * 1024  # an index of a million tensors is ~100 MB
_FIX = "re-save or re-download the checkpoint"
MAX_KEY_PROBLEMS = 10  # a checkpoint of another model: name a few keys, then count the rest

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (
    ("U16", "uint16"),
    ("U32", "uint32"),
    ("U64", "uint64"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
):
    if hasattr(torch, _attr):
        SAFETENSORS_DTYPES[_name] = getattr(torch, _attr)


@dataclass(frozen=True)
class _Info:
    """What the header says about one tensor; enough to plan without reading data."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    file: Path
    begin: int = 0
    """Where the tensor's bytes start, from the start of the data (after the header)."""
    data: int = 0
    """Where the data starts in the file: 8 + the header's length."""


@dataclass(frozen=True)
class Span:
    """Where one tensor's bytes lie in its file, for readers that read them directly."""

    file: Path
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(message, mark=Mark(str(path)))


def _read_header(path: Path) -> tuple[dict[str, _Info], dict[str, str]]:
    """Parse and check one file's header: JSON, dtypes, shapes and that data fits the file."""
    if not path.is_file():
        raise _fail(path, "checkpoint file not found; check the path")
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _fail(path, f"not a safetensors file: only {size} bytes; {_FIX}")
        n = int.from_bytes(prefix, "little")
        if n > size - 8 or n > _MAX_HEADER:
            raise _fail(
                path,
                f"not a safetensors file, or truncated: header claims {n} bytes but the "
                f"file has {size - 8} after the length prefix; {_FIX}",
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"not a safetensors file: header is not valid JSON ({e}); {_FIX}"
        raise _fail(path, msg) from None
    except RecursionError:
        msg = f"not a safetensors file: header JSON nests too deeply; {_FIX}"
        raise _fail(path, msg) from None
    if not isinstance(header, dict):
        raise _fail(path, f"not a safetensors file: header is not a JSON object; {_FIX}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _fail(path, f"corrupt header: __metadata__ must map strings to strings; {_FIX}")
    data_size = size - 8 - n
    infos: dict[str, _Info] = {}
    end_max = 0
    for key, entry in header.items():
        infos[key] = replace(_check_entry(path, key, entry), data=8 + n)
        end_max = max(end_max, entry["data_offsets"][1])
    if end_max > data_size:
        raise _fail(
            path,
            f"truncated: tensor data needs {end_max} bytes but the file holds {data_size}; {_FIX}",
        )
    return infos, meta


def _check_entry(path: Path, key: str, entry: Any) -> _Info:
    bad = f"corrupt header entry for '{key}'"
    if not isinstance(entry, dict):
        raise _fail(path, f"{bad}: not an object; {_FIX}")
    name = entry.get("dtype")
    dtype = SAFETENSORS_DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise _fail(path, f"{bad}: unsupported dtype {entry.get('dtype')!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        raise _fail(path, f"{bad}: shape {shape!r} is not a list of sizes; {_FIX}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_size(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _fail(path, f"{bad}: data_offsets {offsets!r} are invalid; {_FIX}")
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise _fail(path, f"{bad}: {offsets[1] - offsets[0]} bytes for shape {shape}; {_FIX}")
    return _Info(tuple(shape), dtype, nbytes, path, offsets[0])


def _is_size(value: Any) -> bool:
    """A JSON integer >= 0 (JSON true/false are not sizes, though Python counts them as ints)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shard_name(index: Path, name: str) -> Path:
    """A shard must be a plain file name in the index's folder: never a path that could
    read a file elsewhere (`/etc/passwd`, `../../x`)."""
    plain = name not in ("", ".", "..") and not any(c in name for c in "/\\\0:")
    if not plain or Path(name).is_absolute():
        raise _fail(
            index,
            f"shard '{name}' in 'weight_map' is not a plain file name; shards must be files in"
            f" the index's folder ({index.parent}): fix the index",
        )
    return index.parent / name


class CheckpointReader:
    """Read-only view of a checkpoint; use as a context manager so file maps are released."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            if (p / INDEX_NAME).is_file():
                p = p / INDEX_NAME
            elif (p / _SINGLE_NAME).is_file():
                p = p / _SINGLE_NAME
            else:
                raise _fail(p, f"directory has neither {INDEX_NAME} nor {_SINGLE_NAME}")
        elif not p.exists():
            raise _fail(p, "checkpoint not found; check the path")
        self.path = p
        self._index: Path | None = p if p.name.endswith(".json") else None
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}
        self._sha: str | None = None
        if self._index is None:
            self._infos, self._metadata = _read_header(p)
            self._files = [p]
        else:
            self._load_index(p)

    def _load_index(self, index: Path) -> None:
        """Check the index against its shards, reporting every missing shard or key at once."""
        try:
            raw = read_regular(index, _MAX_INDEX, "the index")
            weight_map = json.loads(raw.decode("utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise _fail(index, f"not a valid sharded-checkpoint index ({e!r}); {_FIX}") from None
        except RecursionError:
            raise _fail(
                index, f"not a valid sharded-checkpoint index: nests too deeply; {_FIX}"
            ) from None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise _fail(index, "index 'weight_map' must map tensor names to shard file names")
        shards = sorted({_shard_name(index, name) for name in weight_map.values()})
        missing = [s for s in shards if not s.is_file()]
        if missing:
            msg = "shard listed in the index is missing; restore it or fix the index"
            raise CheckpointError([Problem(msg, Mark(str(s))) for s in missing])
        per_shard = {s: _read_header(s) for s in shards}
        problems: list[Problem] = []
        self._infos = {}
        listed: dict[Path, set[str]] = {s: set() for s in shards}
        for key, name in sorted(weight_map.items()):
            shard = _shard_name(index, name)
            listed[shard].add(key)
            info = per_shard[shard][0].get(key)
            if info is None:
                msg = f"tensor '{key}' is listed in {index.name} for this shard but absent from it"
                problems.append(Problem(msg, Mark(str(shard))))
            else:
                self._infos[key] = info
        for shard, (infos, _) in per_shard.items():
            for key in sorted(set(infos) - listed[shard]):
                msg = f"tensor '{key}' is in this shard but not listed in {index.name}"
                problems.append(Problem(msg, Mark(str(shard))))
        if problems:
            raise CheckpointError(problems)
        self._metadata = per_shard[shards[0]][1] if shards else {}
        self._files = shards

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the memory maps of every opened file."""
        self._handles.clear()
        self._stack.close()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    @property
    def paths(self) -> list[Path]:
        """Every file of the checkpoint: the index first for a sharded set."""
        return ([self._index] if self._index else []) + list(self._files)

    def keys(self) -> list[str]:
        return sorted(self._infos)

    def __contains__(self, key: object) -> bool:
        return key in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._infos)

    def _info(self, key: str) -> _Info:
        try:
            return self._infos[key]
        except KeyError:
            hint = closest(key, self._infos)
            raise _fail(self.path, f"no tensor '{key}' in the checkpoint{hint}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return self._info(key).shape

    def dtype(self, key: str) -> torch.dtype:
        return self._info(key).dtype

    def nbytes(self, key: str) -> int:
        return self._info(key).nbytes

    def span(self, key: str) -> Span | None:
        """Where `key`'s bytes are in its file (stored as the header says, little-endian);
        None for a subclass that computes its tensors (overrides `get`) but not this."""
        if type(self).get is not CheckpointReader.get and type(self).span is CheckpointReader.span:
            return None
        info = self._info(key)
        return Span(info.file, info.data + info.begin, info.nbytes, info.dtype, info.shape)

    def get(self, key: str, copy: bool = True) -> torch.Tensor:
        """The tensor `key`. safe_open's result shares the file's memory map, so by default it
        is copied; `copy=False` returns the mapped tensor itself, for read-only use (writing
        to it would change what later reads return)."""
        info = self._info(key)
        try:
            handle = self._handles.get(info.file)
            if handle is None:
                handle = self._stack.enter_context(safe_open(str(info.file), framework="pt"))
                self._handles[info.file] = handle
            tensor = handle.get_tensor(key)
        except Exception as e:
            raise _fail(info.file, f"cannot read tensor '{key}' ({e}); {_FIX}") from None
        return tensor.clone() if copy else tensor

    def sha256(self) -> str:
        """Hash of the bytes on disk (index, then shards by name), streamed in 1 MiB chunks."""
        if self._sha is None:
            self._sha = sha256_of(self.paths)
        return self._sha


def check_keys(
    reader: TensorSource, expected: Mapping[str, tuple[int, ...]], spec_label: str
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    mark = Mark(str(reader.path))
    head = f"checkpoint does not match spec '{spec_label}'"
    want = {k: tuple(int(d) for d in v) for k, v in expected.items()}
    have = set(reader.keys())
    problems: list[Problem] = []
    missing = sorted(set(want) - have)
    for key in missing:
        problems.append(Problem(f"{head}: missing key '{key}' (shape {list(want[key])})", mark))
    for key in sorted(have - set(want)):
        shape = list(reader.shape(key))
        hint = closest(key, missing)
        problems.append(Problem(f"{head}: unexpected key '{key}' (shape {shape}){hint}", mark))
    for key in sorted(have & set(want)):
        if reader.shape(key) != want[key]:
            got, exp = list(reader.shape(key)), list(want[key])
            problems.append(
                Problem(f"{head}: key '{key}' has shape {got} but the spec expects {exp}", mark)
            )
    if len(problems) > MAX_KEY_PROBLEMS:
        more = len(problems) - MAX_KEY_PROBLEMS
        summary = (
            f"{head}: ... and {more} more key problem(s) ({len(missing)} missing,"
            f" {len(have - set(want))} unexpected of {len(want)} expected keys); is this the"
            " checkpoint of this spec?"
        )
        problems = [*problems[:MAX_KEY_PROBLEMS], Problem(summary, mark)]
    if problems:
        raise CheckpointError(problems)
