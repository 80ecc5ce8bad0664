"""Reading an input file only when it is a regular file, so a FIFO or device never hangs a
command: the file is opened non-blocking (opening a FIFO returns at once) and checked with
`fstat` before a byte is read. Symbolic links are followed (Hugging Face caches link every
file to a blob). Torch-free."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from morphspec.errors import Mark, MorphError

__all__ = ["read_regular"]


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "the file") -> bytes:
    """The bytes of `path`, refusing (with a located `MorphError`) a missing file, a folder,
    a FIFO, device or socket, and a file of more than `limit` bytes."""
    p = Path(path)
    where = Mark(str(p))
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MorphError(f"{what} does not exist; check the path", where) from None
    except IsADirectoryError:
        raise MorphError(f"{what} is a folder, not a file", where) from None
    except OSError as e:
        raise MorphError(f"cannot open {what} ({e.strerror})", where) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise MorphError(f"{what} is a folder, not a file", where)
        if not stat.S_ISREG(st.st_mode):
            raise MorphError(
                f"{what} is not a regular file (a FIFO, device or socket); morph reads only"
                " regular files",
                where,
            )
        if st.st_size > limit:
            raise MorphError(f"{what} has {st.st_size:,} bytes, more than {limit:,}", where)
        return f.read(limit + 1)[:limit]
