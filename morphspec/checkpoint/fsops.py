"""Filesystem primitives of the output policy (`checkpoint/output.py`): the umask a new
file gets, an atomic exchange of two paths, and the message for a full disk."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from morphspec.errors import CheckpointError, Mark, MorphError

__all__ = ["STAGING_SUFFIX", "default_mode", "disk_error", "exchange", "umask"]

STAGING_SUFFIX = ".unverified"


def default_mode() -> int:
    """0666 & ~umask: what `open(..., 'w')` or `cp` gives a new file."""
    return 0o666 & ~umask()


def umask() -> int:
    """The umask, read from /proc where it can be (setting it to read it back races with
    other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def disk_error(err: OSError, target: Path) -> MorphError | None:
    """A located message for a full disk or quota, naming the file; None for other errors."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return None
    reason = os.strerror(err.errno or errno.ENOSPC).lower()
    target = _visible(target)
    return CheckpointError(
        f"{reason} while writing {target}; nothing was written (the partial file was removed):"
        " free space or choose another -o",
        mark=Mark(str(target)),
    )


def _visible(path: Path) -> Path:
    """The output a staging file stands for (`.NAME.xxxx.unverified` -> `NAME`)."""
    name = path.name
    if name.startswith(".") and name.endswith(STAGING_SUFFIX):
        return path.with_name(name[1:].rsplit(".", 2)[0])
    return path
