"""Sharded output: HF-style `model-00001-of-0000N.safetensors` files and their index.

The student's tensors, sorted by key as in a single file, are cut into consecutive runs
whose files (header included) stay at or below the size limit; a tensor larger than the
limit gets a shard of its own, as Hugging Face does. Every shard is an ordinary safetensors
file carrying the full `__metadata__` (a reader of the folder finds the spec in any shard);
`model.safetensors.index.json` maps each tensor to its shard and records `total_size`, the
tensor bytes. Each tensor's bytes are those of the single-file output: only the file they
live in differs. The folder is written into a staging folder (checkpoint/output.py), then
committed whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from morphspec.checkpoint.direct import AppendFile
from morphspec.checkpoint.output import disk_error
from morphspec.checkpoint.reader import INDEX_NAME
from morphspec.checkpoint.writer import (
    LateMetadata,
    TensorEntry,
    check_entries,
    final_header,
    header_bytes,
    produced,
)
from morphspec.errors import MorphError

__all__ = ["parse_size", "plan_shards", "shard_name", "write_index", "write_sharded"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
MIN_SHARD = 1 << 20  # smaller shards are a typo (500 for 500MB), not a wish


def parse_size(text: str | int) -> int:
    """Bytes from `500MB`, `2GB`, `1.5GiB` or a plain count (units as Hugging Face's
    `max_shard_size`: KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.fullmatch(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise MorphError(
                f"--max-shard-size {text!r} is not a size; write a number with an optional unit,"
                " such as 500MB, 2GB or 1.5GiB"
            )
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < MIN_SHARD:
        raise MorphError(
            f"--max-shard-size {text!r} is below 1 MiB; give a unit, such as 500MB or 2GB"
        )
    return value


def shard_name(i: int, n: int) -> str:
    """The Hugging Face name of shard `i` (from 1) of `n`."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def plan_shards(
    entries: Sequence[TensorEntry], metadata: Mapping[str, str] | None, limit: int
) -> list[list[TensorEntry]]:
    """Consecutive runs of the sorted entries whose files stay within `limit` bytes.

    A file is the 8-byte length, the JSON header padded to 8, then the data. The header is
    bounded before the run is known by giving every tensor offsets as long as the limit's
    digits (real offsets within a shard are no longer), so no shard is planned too large.
    """
    ordered = check_entries(entries)
    base = len(json.dumps({"__metadata__": dict(metadata or {})}, separators=(",", ":")))
    wide = [limit, limit]
    shards: list[list[TensorEntry]] = []
    run: list[TensorEntry] = []
    size = 0
    for entry in ordered:
        part = {entry.key: {"dtype": "F64", "shape": list(entry.shape), "data_offsets": wide}}
        cost = len(json.dumps(part, separators=(",", ":"))) - 1 + entry.nbytes  # braces -> comma
        if run and size + cost > limit:
            shards.append(run)
            run, size = [], 0
        if not run:
            size = 8 + base + 7  # length prefix, metadata, padding
        run.append(entry)
        size += cost
    if run or not shards:
        shards.append(run)
    return shards


def write_sharded(
    folder: Path,
    entries: Sequence[TensorEntry],
    metadata: Mapping[str, str] | None,
    limit: int,
    progress: Callable[[int], None] | None = None,
    late: LateMetadata | None = None,
) -> list[Path]:
    """Write the shards and the index into `folder` (an empty staging folder), each file
    fsynced; returns the shard paths. Tensors stream through `produced`, one ahead."""
    runs = plan_shards(entries, metadata, limit)
    names = [shard_name(i + 1, len(runs)) for i in range(len(runs))]
    headers = [header_bytes(run, metadata) for run in runs]
    stream: Generator[tuple[memoryview, Any], None, None] = produced(
        [e for run in runs for e in run]
    )
    files: list[AppendFile] = []
    done = 0
    try:
        for name, run, header in zip(names, runs, headers, strict=True):
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            shard = AppendFile(fd, keep_head=len(header))
            files.append(shard)
            shard.write(header)
            for _entry, (data, owner) in zip(run, stream, strict=False):
                shard.write(data)
                done += len(data)
                del data, owner
                if progress is not None:
                    progress(done)
        final = late() if late is not None else None
        for shard, run, header in zip(files, runs, headers, strict=True):
            shard.finish(final_header(header, run, None if final is None else lambda: final))
    except OSError as err:
        raise disk_error(err, folder) or err from None
    finally:
        stream.close()
        for shard in files:
            shard.close()
    write_index(folder, names, runs)
    return [folder / n for n in names]


def write_index(folder: Path, names: Sequence[str], runs: Sequence[Sequence[TensorEntry]]) -> None:
    """`model.safetensors.index.json` for shards `names` holding `runs`, fsynced."""
    weight_map = {e.key: name for name, run in zip(names, runs, strict=True) for e in run}
    total = sum(e.nbytes for run in runs for e in run)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    with open(folder / INDEX_NAME, "w", encoding="utf-8") as index_file:
        index_file.write(text)
        index_file.flush()
        os.fsync(index_file.fileno())
