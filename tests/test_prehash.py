"""checkpoint/prehash.py: the teacher's digest started before torch is imported is used only
for the file it was started for, unchanged; the conversion records the same digest."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from morphspec.checkpoint import prehash


@pytest.fixture(autouse=True)
def _no_jobs() -> None:
    prehash._JOBS.clear()


def test_digest_of_the_unchanged_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(os.urandom(3 << 20))
    prehash.start(path)
    job = prehash.take([tmp_path / "." / "t.safetensors"])  # the same file, spelled otherwise
    assert job is not None
    assert job.result(timeout=60) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prehash.take([path]) is None  # taken once


def test_changed_file_or_other_files_are_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"a" * 1000)
    prehash.start(path)
    os.utime(path, ns=(1, 1))  # touched since: its digest is not trusted
    assert prehash.take([path]) is None
    prehash.start(path)
    assert prehash.take([path, tmp_path / "other"]) is None  # a sharded set: not prehashed


def test_folder_with_one_file_and_sharded_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    prehash.start(tmp_path)
    job = prehash.take([tmp_path / "model.safetensors"])
    assert job is not None and job.result(timeout=60) == hashlib.sha256(b"x" * 100).hexdigest()
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    prehash.start(tmp_path)
    assert prehash.take([tmp_path / "model.safetensors"]) is None
    prehash.start(tmp_path / "missing.safetensors")  # not found: nothing started
    assert not prehash._JOBS


def test_prehash_does_not_import_torch() -> None:
    import subprocess

    code = "import sys; from morphspec.checkpoint import prehash; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
