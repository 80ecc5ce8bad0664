"""Where an output may go, how it is staged, and how it gets there.

Rules, each from a case that once went wrong:
- only a regular file (or nothing) may be replaced: `-o /dev/null --force` as root would
  otherwise swap a device (or a FIFO) for a regular file;
- no file the command read (a spec, an `extends` base, the teacher) is ever a target;
- each run stages under its own unique name (`mkstemp`), so two runs aimed at one output
  can never rename each other's unverified file into place;
- SIGTERM and SIGHUP unwind like Ctrl-C while a file is being written, so the staging
  file is removed (a killed run used to leave tens of MB of hidden files behind);
- the result gets the permissions `cp` would give a new file: 0666 minus the umask
  (`mkstemp` creates 0600).
No torch here: `morph schema -o` uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

from morphspec.errors import CheckpointError, Mark, MorphError

__all__ = [
    "Terminated",
    "check_target",
    "commit",
    "default_mode",
    "disk_error",
    "staging_file",
    "terminate_as_interrupt",
    "write_text_atomic",
]

STAGING_SUFFIX = ".unverified"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while writing: unwinds like Ctrl-C, so `finally` blocks clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the duration of the block, SIGTERM and SIGHUP raise `Terminated`; the previous
    handlers are restored afterwards. Outside the main thread signals cannot be caught, and
    the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {s: signal.signal(getattr(signal, s), _raise_terminated) for s in wanted}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def default_mode() -> int:
    """0666 & ~umask: what `open(..., 'w')` or `cp` gives a new file. The umask is read from
    /proc where it can be (setting it to read it back races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _is_special(path: Path) -> bool:
    """Exists and is not a regular file (after following links): a device, FIFO, socket."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_target(
    output: str | os.PathLike[str],
    *,
    force: bool,
    inputs: Iterable[tuple[str | os.PathLike[str], str]] = (),
) -> Path:
    """Refuse an output that is a folder, a device or FIFO, one of `inputs` (pairs of a path
    and what it is, e.g. 'the teacher checkpoint'), in a missing folder, or that exists
    without `force`. Returns the output as a Path."""
    out = Path(output)
    where = Mark(str(out))
    if out.is_dir():
        raise MorphError(
            f"the output {out} is a folder; give a file name such as {out / 'out.safetensors'}",
            where,
        )
    if _is_special(out):
        raise MorphError(
            f"the output {out} is not a regular file (a device, FIFO or socket); morph only"
            " writes regular files: choose another -o",
            where,
        )
    for path, what in inputs:
        if _same(Path(path), out):
            raise MorphError(
                f"the output {out} is {what}, which this command reads; morph never writes"
                " over its inputs: choose another -o",
                where,
            )
    if not out.parent.is_dir():
        raise MorphError(f"the output folder {out.parent} does not exist; create it first", where)
    if out.exists() and not force:
        raise MorphError(
            "the output file exists; pass --force to replace it (it is replaced only once the"
            " new file is complete)",
            where,
        )
    return out


@contextlib.contextmanager
def staging_file(output: Path) -> Iterator[Path]:
    """A new, empty file beside `output` whose name no other run can have; removed on exit
    unless `commit` moved it. SIGTERM/SIGHUP inside the block clean it up like Ctrl-C."""
    with terminate_as_interrupt():
        fd, name = tempfile.mkstemp(
            dir=output.parent, prefix=f".{output.name}.", suffix=STAGING_SUFFIX
        )
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                path.unlink()


def commit(staged: Path, output: Path) -> None:
    """Move this run's verified `staged` file onto `output`, checking again (just before the
    rename) that the output did not become a folder or a special file meanwhile."""
    if output.is_dir() or _is_special(output):
        raise MorphError(
            f"the output {output} is no longer a regular file; nothing written", Mark(str(output))
        )
    os.chmod(staged, default_mode())
    os.replace(staged, output)


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


def write_text_atomic(output: Path, text: str) -> None:
    """Write `text` to `output` through a unique staging file and a rename."""
    with staging_file(output) as staged:
        try:
            staged.write_text(text, encoding="utf-8")
        except OSError as err:
            raise disk_error(err, output) or err from None
        commit(staged, output)
