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
  (`mkstemp` creates 0600);
- a sharded output is a folder: only a folder that holds nothing but shards and an index
  (what morph writes) may be replaced, and the new folder takes its place whole (an atomic
  exchange where Linux offers one), so it appears complete or not at all.
No torch here: `morph schema -o` uses it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from types import FrameType

from morphspec.errors import CheckpointError, Mark, MorphError

__all__ = [
    "Terminated",
    "check_folder_target",
    "check_target",
    "commit",
    "commit_folder",
    "default_mode",
    "disk_error",
    "staging_file",
    "staging_folder",
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
    """0666 & ~umask: what `open(..., 'w')` or `cp` gives a new file."""
    return 0o666 & ~_umask()


def _umask() -> int:
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


_OURS = re.compile(r"model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json")


def _foreign(folder: Path, also: Collection[str] = ()) -> list[str]:
    """What in `folder` morph did not write (anything but shards, their index and, for a
    Hugging Face folder, the file names in `also`)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if not ((_OURS.fullmatch(p.name) or p.name in also) and p.is_file())
    )


def check_folder_target(
    output: str | os.PathLike[str],
    *,
    force: bool,
    inputs: Iterable[tuple[str | os.PathLike[str], str]] = (),
    also: Collection[str] = (),
) -> Path:
    """Refuse a sharded output folder that is a file, holds or is one of `inputs`, holds
    files morph did not write (shards, the index, and the names in `also`: an HF folder's),
    sits in a missing folder, or exists (non-empty) without `force`. Returns it as a Path."""
    out = Path(output)
    where = Mark(str(out))
    if out.exists() and not out.is_dir():
        raise MorphError(
            f"the output {out} is a file, and --max-shard-size writes a folder of shards:"
            " choose a folder name for -o",
            where,
        )
    for path, what in inputs:
        p = Path(path)
        if _same(p, out) or p.resolve().is_relative_to(out.resolve()):
            raise MorphError(
                f"the output folder {out} holds {what}, which this command reads; morph never"
                " writes over its inputs: choose another -o",
                where,
            )
    if not out.parent.is_dir():
        raise MorphError(f"the output folder {out.parent} does not exist; create it first", where)
    if out.is_dir() and (foreign := _foreign(out, also)):
        raise MorphError(
            f"the output folder {out} holds files morph did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); only a folder of shards can be replaced:"
            " choose another -o",
            where,
        )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MorphError(
            "the output folder exists; pass --force to replace it (it is replaced only once"
            " the new shards are complete)",
            where,
        )
    return out


@contextlib.contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A new, empty folder beside `output` that no other run can have; removed with its
    contents on exit unless `commit_folder` moved it (Ctrl-C, SIGTERM, SIGHUP included)."""
    with terminate_as_interrupt():
        path = Path(
            tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=STAGING_SUFFIX)
        )
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def commit_folder(staged: Path, output: Path, also: Collection[str] = ()) -> None:
    """Put this run's verified `staged` folder at `output`. A missing (or empty) output is
    a rename; an existing folder of shards is exchanged with the staged one in one step
    (renameat2 RENAME_EXCHANGE), and the old shards, now at `staged`, are removed by the
    caller's `staging_folder`. Where no exchange exists the old folder is moved aside first."""
    if output.exists() and not output.is_dir():
        raise MorphError(
            f"the output {output} is no longer a folder; nothing written", Mark(str(output))
        )
    os.chmod(staged, 0o777 & ~_umask())  # what mkdir gives (mkdtemp makes 0700)
    for shard in staged.iterdir():
        os.chmod(shard, default_mode())
    if not output.exists():
        os.rename(staged, output)
        return
    if foreign := _foreign(output, also):
        raise MorphError(
            f"the output folder {output} now holds files morph did not write ({foreign[0]});"
            " nothing written",
            Mark(str(output)),
        )
    if _exchange(staged, output):
        return
    aside = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".old"))
    os.rename(output, aside / "old")
    try:
        os.rename(staged, output)
    except OSError:
        os.rename(aside / "old", output)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
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


def write_text_atomic(output: Path, text: str) -> None:
    """Write `text` to `output` through a unique staging file and a rename."""
    with staging_file(output) as staged:
        try:
            staged.write_text(text, encoding="utf-8")
        except OSError as err:
            raise disk_error(err, output) or err from None
        commit(staged, output)
