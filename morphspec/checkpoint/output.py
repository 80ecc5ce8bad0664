"""The one output policy of every command that writes (convert, --to-hf, export-hf,
import-hf, probe --suggest/--plot, init, schema, and any folder writer to come).

Rules, each from a case that once went wrong:
- a file target is a regular file or nothing: never a folder, a device, a FIFO, a socket
  or a symbolic link (`-o /dev/null --force` as root would swap a device for a file; a
  replaced link left `.link.old-PID` folders behind);
- a folder target is nothing, an empty folder, or a folder morph wrote: one that holds a
  `.morph-output` marker listing every file in it (`export-hf --force` once wiped a folder
  of user files);
- nothing any input came from is a target (`inputs`: specs, `extends` bases, teacher files
  and folders, `--source`), however it is spelled (`..`, hard or symbolic links); a folder
  target may neither hold an input nor lie inside an input folder;
- each run stages under its own unique name (`mkstemp`/`mkdtemp`: O_EXCL, so a planted
  symbolic link is never followed) beside the target, and commits by rename (an atomic
  exchange, renameat2, for a folder that exists);
- SIGTERM and SIGHUP unwind like Ctrl-C while staging, so leftovers are removed on every
  error and signal;
- the result gets the permissions `cp`/`mkdir` give a new file/folder (umask honoured).

API (torch-free; `morph schema -o` uses it too). Check early, before the expensive work,
then stage, write, verify and commit in one block:

    out = check_target(path, force=force, inputs=[(spec, "the spec file"), ...])
    with output_file(out, force=force, inputs=...) as staged:   # re-checks, stages
        write(staged)                  # leaving the block normally commits by rename;
                                       # an exception or signal removes `staged`

    inputs = [*folder_inputs(teacher_dir, "the teacher folder"), (spec, "the spec file")]
    check_folder_target(out_dir, force=force, inputs=inputs)   # early, e.g. before growth
    with output_folder(out_dir, force=force, inputs=inputs) as staging:  # HF, DCP, shards
        (staging / "config.json").write_text(...)   # flat files; marked and committed on exit

`folder_inputs` lists an input folder and each entry in it. `check_*` raise `MorphError`
(exit 1) naming the target and the fix. The lower-level `staging_file`/`commit` and
`staging_folder`/`commit_folder` are the same steps apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from morphspec.checkpoint.fsops import STAGING_SUFFIX, default_mode, disk_error, exchange, umask
from morphspec.checkpoint.signals import Terminated, terminate_as_interrupt
from morphspec.errors import Mark, MorphError

__all__ = [
    "MARKER",
    "Inputs",
    "Terminated",
    "check_folder_target",
    "check_target",
    "commit",
    "commit_folder",
    "default_mode",
    "disk_error",
    "folder_inputs",
    "output_file",
    "output_folder",
    "staging_file",
    "staging_folder",
    "terminate_as_interrupt",
    "write_text_atomic",
]

MARKER = ".morph-output"  # in a folder morph wrote: JSON {"morph_output": 1, "files": [...]}
_MARKER_MAX = 1 << 20

Inputs = Iterable[tuple[str | os.PathLike[str], str]]  # (path, what it is: "the spec file")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def _is_special(path: Path) -> bool:
    """Exists and is not a regular file or folder (after following links): a device, FIFO."""
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


def folder_inputs(folder: str | os.PathLike[str], what: str) -> list[tuple[Path, str]]:
    """A folder that is read (an HF folder, `--source`) and every entry in it, as inputs."""
    p = Path(folder)
    found: list[tuple[Path, str]] = [(p, what)]
    with contextlib.suppress(OSError):
        if p.is_dir():
            found += [(c, f"{c.name} of {what}") for c in sorted(p.iterdir())]
    return found


def _refuse_inputs(out: Path, inputs: Inputs, folder: bool) -> None:
    for path, what in inputs:
        p = Path(path)
        if _same(p, out):
            kind = "folder " if folder else ""
            raise MorphError(
                f"the output {kind}{out} is {what}, which this command reads; morph never"
                " writes over its inputs: choose another output",
                Mark(str(out)),
            )
        if folder and p.exists() and p.resolve().is_relative_to(out.resolve()):
            raise MorphError(
                f"the output folder {out} holds {what}, which this command reads; morph never"
                " writes over its inputs: choose another output",
                Mark(str(out)),
            )
        if folder and p.is_dir() and out.resolve().is_relative_to(p.resolve()):
            raise MorphError(
                f"the output folder {out} lies inside {what}, which this command reads;"
                " choose a folder outside it",
                Mark(str(out)),
            )


def _refuse_link(out: Path) -> None:
    st = _lstat(out)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise MorphError(
            f"the output {out} is a symbolic link; morph replaces only regular files and"
            f" folders it wrote: give the real path ({os.path.realpath(out)}) or another -o",
            Mark(str(out)),
        )


def _refuse_missing_parent(out: Path) -> None:
    if out.name in ("", ".", "..") or out.resolve() == out.resolve().parent:
        raise MorphError(
            f"the output {out} names no file or folder of its own (it is '.', '..' or the"
            " root); give it a name, such as ./out",
            Mark(str(out)),
        )
    if not out.parent.is_dir():
        raise MorphError(
            f"the output folder {out.parent} does not exist; create it first", Mark(str(out))
        )


def check_target(output: str | os.PathLike[str], *, force: bool, inputs: Inputs = ()) -> Path:
    """Refuse a file output that is one of `inputs`, a folder, a device, FIFO, socket or
    symbolic link, in a missing folder, or that exists without `force`. Returns a Path."""
    out = Path(output)
    where = Mark(str(out))
    _refuse_inputs(out, inputs, folder=False)
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
    _refuse_link(out)
    _refuse_missing_parent(out)
    if out.exists() and not force:
        raise MorphError(
            "the output file exists; pass --force to replace it (it is replaced only once the"
            " new file is complete)",
            where,
        )
    return out


def _marked_files(folder: Path) -> set[str] | None:
    """The names a morph-written folder's marker lists; None when it has no valid marker."""
    marker = folder / MARKER
    st = _lstat(marker)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > _MARKER_MAX:
        return None
    try:
        doc = json.loads(marker.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _foreign(folder: Path) -> list[str]:
    """What in `folder` morph did not write: everything, unless a marker lists it."""
    names = sorted(p.name for p in folder.iterdir())
    listed = _marked_files(folder)
    if listed is None:
        return names
    return [n for n in names if n != MARKER and (n not in listed or (folder / n).is_symlink())]


def check_folder_target(
    output: str | os.PathLike[str], *, force: bool, inputs: Inputs = ()
) -> Path:
    """Refuse a folder output that is, holds or lies inside one of `inputs`, is a file or
    a symbolic link, holds anything morph did not write, sits in a missing folder, or is
    not empty without `force`. Returns it as a Path."""
    out = Path(output)
    where = Mark(str(out))
    _refuse_inputs(out, inputs, folder=True)
    _refuse_link(out)
    if out.exists() and not out.is_dir():
        raise MorphError(
            f"the output {out} is a file, and this command writes a folder: choose a folder"
            " name for -o",
            where,
        )
    _refuse_missing_parent(out)
    if out.is_dir() and (foreign := _foreign(out)):
        raise MorphError(
            f"the output folder {out} holds files morph did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); morph replaces only an empty folder or"
            " one it wrote: choose another -o",
            where,
        )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MorphError(
            "the output folder exists; pass --force to replace it (it is replaced only once"
            " the new folder is complete)",
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
    rename) that the output did not become a folder, link or special file meanwhile."""
    if output.is_dir() or _is_special(output) or output.is_symlink():
        raise MorphError(
            f"the output {output} is no longer a regular file; nothing written", Mark(str(output))
        )
    os.chmod(staged, default_mode())
    os.replace(staged, output)


@contextlib.contextmanager
def output_file(
    output: str | os.PathLike[str], *, force: bool, inputs: Inputs = ()
) -> Iterator[Path]:
    """Check `output`, yield a staging file beside it, and commit it when the block ends
    normally; on any error or signal the staging file is removed and nothing is replaced."""
    out = check_target(output, force=force, inputs=inputs)
    with staging_file(out) as staged:
        yield staged
        commit(staged, out)


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


def commit_folder(staged: Path, output: Path) -> None:
    """Mark `staged` as morph's (its marker lists its files) and put it at `output`. A
    missing output is a rename; an existing one, checked again to be empty or morph's, is
    exchanged in one step (renameat2 RENAME_EXCHANGE) and the old contents, now at `staged`,
    are removed by `staging_folder`. Where no exchange exists the old folder moves aside."""
    names = sorted(p.name for p in staged.iterdir() if p.name != MARKER)
    text = json.dumps({"morph_output": 1, "files": names}, indent=1) + "\n"
    (staged / MARKER).write_text(text, encoding="utf-8")
    os.chmod(staged, 0o777 & ~umask())  # what mkdir gives (mkdtemp makes 0700)
    for entry in staged.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, default_mode())
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise MorphError(
            f"the output {output} is no longer a folder; nothing written", Mark(str(output))
        )
    if not output.exists():
        os.rename(staged, output)
        return
    if foreign := _foreign(output):
        raise MorphError(
            f"the output folder {output} now holds files morph did not write ({foreign[0]});"
            " nothing written",
            Mark(str(output)),
        )
    if exchange(staged, output):
        return
    aside = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".old"))
    try:
        os.rename(output, aside / "old")
        try:
            os.rename(staged, output)
        except OSError:
            os.rename(aside / "old", output)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def output_folder(
    output: str | os.PathLike[str], *, force: bool, inputs: Inputs = ()
) -> Iterator[Path]:
    """Check `output`, yield an empty staging folder beside it, and mark and commit it when
    the block ends normally; on any error or signal the staging folder is removed whole."""
    out = check_folder_target(output, force=force, inputs=inputs)
    with staging_folder(out) as staged:
        yield staged
        commit_folder(staged, out)


def write_text_atomic(output: Path, text: str) -> None:
    """Write `text` to `output` (already checked) through a unique staging file and a rename."""
    with staging_file(output) as staged:
        try:
            staged.write_text(text, encoding="utf-8")
        except OSError as err:
            raise disk_error(err, output) or err from None
        commit(staged, output)
