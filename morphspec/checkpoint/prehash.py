"""The teacher's sha256, started before torch is imported.

`morph convert` records the teacher's sha256 in the student's header. Hashing 1 GB takes
0.5 to 0.7 s of CPU; computed while the tensors are made, it competes with the producers
for the cores, while the torch import before them (1.7 s on one core) leaves the other
idle. So the CLI starts hashing a single-file teacher here first (this module does not
import torch), and `convert` takes the digest if the file is the one that was hashed (same
device, inode, size and modification time, before and after), or hashes it itself as
before. `sha256_of` is the one digest of checkpoint files (`CheckpointReader.sha256` too).
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future
from pathlib import Path

__all__ = ["sha256_of", "start", "take"]

_CHUNK = 1 << 20
_INDEX = "model.safetensors.index.json"
_JOBS: dict[Path, tuple[tuple[int, int, int, int], Future[str]]] = {}
_LOCK = threading.Lock()


def sha256_of(paths: list[Path], stop: threading.Event | None = None) -> str:
    """The sha256 of `paths`' bytes, one file after the other, read a MiB at a time (the
    digest the header records); once `stop` is set it ends at the next MiB (the digest is
    then of no use)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while not (stop is not None and stop.is_set()) and (chunk := f.read(_CHUNK)):
                digest.update(chunk)
    return digest.hexdigest()


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _single_file(checkpoint: Path) -> Path | None:
    """The one file a checkpoint reader would hash: the file itself, or a folder's
    model.safetensors when it has no index; None otherwise (shards, DCP, not found)."""
    if checkpoint.is_dir():
        if (checkpoint / _INDEX).exists() or (checkpoint / ".metadata").exists():
            return None
        checkpoint = checkpoint / "model.safetensors"
    return checkpoint if checkpoint.is_file() else None


def start(checkpoint: str | os.PathLike[str]) -> None:
    """Start hashing `checkpoint` on a daemon thread, if it is a single file."""
    path = _single_file(Path(checkpoint))
    if path is None:
        return
    try:
        path = path.resolve()
        identity = _identity(path)
    except OSError:
        return
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(sha256_of([path]))
        except BaseException as err:
            future.set_exception(err)

    with _LOCK:
        _JOBS[path] = (identity, future)
    threading.Thread(target=run, name="morph-prehash", daemon=True).start()


def take(paths: list[Path]) -> Future[str] | None:
    """The digest started for `paths` (one file, unchanged since), or None."""
    if len(paths) != 1:
        return None
    try:
        path = paths[0].resolve()
        with _LOCK:
            job = _JOBS.pop(path, None)
        if job is None or job[0] != _identity(path):
            return None
    except OSError:
        return None
    return job[1]
