"""Output policy: only regular files or morph's own folders are replaced, no input is ever
written, staging is unique and cleaned up on every error and signal (issues 13 and 18).

Every refusal: exit 1 (2 for usage), a message naming the file (FILE:LINE:COL where there
is one), no traceback, and nothing written or left behind.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from adversarial import MLP, ROOT, WIDE, convert, hidden, invoke, pair, refused, write

from morphspec.checkpoint import CheckpointReader, TensorEntry, write_safetensors
from morphspec.checkpoint.output import staging_file
from morphspec.errors import MorphError

__all__ = ["pair"]


def test_fifo_output_is_refused(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(convert(pair, fifo, "--force"), f"{fifo}: ", "not a regular file")
    refused(invoke("init", str(pair[0]), "-o", str(fifo), "--force"), "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert hidden(tmp_path) == []


def test_device_output_is_refused(pair: tuple[Path, Path, Path]) -> None:
    before = os.stat("/dev/null")
    refused(convert(pair, Path("/dev/null"), "--force"), "/dev/null: ", "not a regular file")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_staging_names_are_unique_per_run(tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with staging_file(out) as a, staging_file(out) as b:
        assert a != b and a.exists() and b.exists()
        assert a.name.startswith(".out.safetensors.") and a.name.endswith(".unverified")
    assert hidden(tmp_path) == []


def test_another_runs_staging_file_is_never_moved(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.safetensors"
    decoy = tmp_path / f".{out.name}.unverified"  # the name every run once shared
    decoy.write_bytes(b"another run's unverified student")
    assert convert(pair, out).exit_code == 0
    with CheckpointReader(out) as reader:
        assert reader.shape("fc1.weight") == (12, 4)
    assert decoy.read_bytes() == b"another run's unverified student"


def test_a_failed_run_writes_nothing_and_cleans_up(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.safetensors"
    assert convert(pair, out).exit_code == 0
    good = out.read_bytes()
    refused(convert(pair, out, "--force", "--noise", "1e30"), "no output written", code=3)
    assert out.read_bytes() == good and hidden(tmp_path) == []


def test_convert_never_writes_over_a_spec(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    t, s, _ = pair
    texts = {p: p.read_bytes() for p in (t, s)}
    for target in (t, s):  # t is also the base that s extends
        refused(convert(pair, target, "--force"), f"{target}: ", "this command reads")
    link = tmp_path / "link.yaml"
    link.symlink_to(t)
    refused(convert(pair, link, "--force"), "this command reads")
    assert {p: p.read_bytes() for p in (t, s)} == texts


def test_convert_never_writes_over_an_extends_base(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", MLP)
    t = write(tmp_path, "t.yaml", "morphspec: 1\nname: t\nextends: base.yaml\n")
    s = write(tmp_path, "s.yaml", WIDE)
    ckpt = tmp_path / "t.safetensors"
    assert invoke("init", str(t), "-o", str(ckpt)).exit_code == 0
    refused(convert((t, s, ckpt), base, "--force"), f"{base}: ", "the spec file")
    assert base.read_text() == textwrap.dedent(MLP)


def test_init_never_writes_over_its_spec(pair: tuple[Path, Path, Path]) -> None:
    t, s, _ = pair
    for spec, target in ((t, t), (s, t)):  # s reads t through extends
        refused(invoke("init", str(spec), "-o", str(target), "--force"), "this command reads")
    assert t.read_text() == textwrap.dedent(MLP)


def test_schema_only_replaces_a_schema(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    s = pair[1]
    refused(invoke("schema", "-o", str(s)), f"{s}: ", "--force")
    assert s.read_text() == WIDE
    target = tmp_path / "schema.json"
    assert invoke("schema", "-o", str(target)).exit_code == 0
    assert invoke("schema", "-o", str(target)).exit_code == 0  # regenerating is fine
    assert "$schema" in json.loads(target.read_text())
    assert hidden(tmp_path) == []


KILL_DURING = """\
import os, signal, sys
import morphspec.verify as v
from morphspec.cli.app import main

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.{sig})
    raise AssertionError("the signal did not interrupt")

v.verify_checkpoints = killed
import morphspec.convert
morphspec.convert.verify_checkpoints = killed
sys.argv = ["morph", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_signals_remove_the_staging_file(
    pair: tuple[Path, Path, Path], tmp_path: Path, sig: str
) -> None:
    t, s, ckpt = pair
    out = tmp_path / "out.safetensors"
    code = KILL_DURING.replace("{sig}", sig)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", code, "convert", str(t), str(s), str(ckpt), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), proc.stderr
    assert "terminated" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and hidden(tmp_path) == []


def test_convert_restores_signal_handlers(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    marker = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
        assert convert(pair, tmp_path / "out.safetensors").exit_code == 0
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    finally:
        signal.signal(signal.SIGHUP, marker)


def test_writer_restores_signal_handlers_and_cleans_up(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)

    def boom() -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros(2)

    entries = [TensorEntry("a", (2,), torch.float32, boom)]
    with pytest.raises(KeyboardInterrupt):
        write_safetensors(tmp_path / "x.safetensors", entries)
    assert signal.getsignal(signal.SIGTERM) == before
    assert list(tmp_path.iterdir()) == []


def test_disk_full_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("morphspec.checkpoint.writer.os.fsync", full)
    target = tmp_path / "x.safetensors"
    entries = [TensorEntry("a", (2,), torch.float32, lambda: torch.zeros(2))]
    with pytest.raises(MorphError, match="no space left on device while writing") as err:
        write_safetensors(target, entries)
    assert str(target) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_convert_names_the_output(
    pair: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("morphspec.checkpoint.writer.os.fsync", full)
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out), f"{out}: no space left on device while writing {out};")
    assert not out.exists() and hidden(tmp_path) == []


def test_outputs_honour_the_umask(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert invoke("init", str(pair[0]), "-o", str(tmp_path / "a.safetensors")).exit_code == 0
        assert convert(pair, tmp_path / "b.safetensors").exit_code == 0
        assert invoke("schema", "-o", str(tmp_path / "c.json")).exit_code == 0
    finally:
        os.umask(old)
    for name in ("a.safetensors", "b.safetensors", "c.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
