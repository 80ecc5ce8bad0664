"""The output policy for the commands added since issue 13 (issue 18): import-hf, export-hf,
--to-hf and probe --suggest obey the same rules as convert, through one module.

Each case once misbehaved: a folder of user files wiped by `export-hf --force`, the input
folder's own files overwritten by `import-hf`, a FIFO or device replaced, a planted symlink
followed through a fixed staging name, the `extends` base overwritten, leftovers after a
symlinked output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
from adversarial import MLP, hf_folder, hidden, invoke, refused, snapshot, write

from morphspec.checkpoint.output import MARKER, Terminated, output_folder
from morphspec.errors import MorphError


@pytest.fixture
def hf(tmp_path: Path) -> tuple[Path, Path]:
    """An HF folder and its imported spec."""
    folder = hf_folder(tmp_path)
    spec = tmp_path / "t.yaml"
    assert invoke("import-hf", str(folder), "-o", str(spec)).exit_code == 0
    return folder, spec


def snapshot_of(root: Path, name: str) -> dict[str, bytes | str]:
    """`snapshot` of root/name with keys relative to root."""
    return {f"{name}/{k}": v for k, v in snapshot(root / name).items()} | {name: "dir"}


def export(spec: Path, folder: Path, out: Path, *extra: str) -> object:
    return invoke("export-hf", str(spec), str(folder), "-o", str(out), *extra)


def test_export_hf_force_never_wipes_a_folder_of_user_files(
    hf: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, spec = hf
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "precious.txt").write_text("x")
    (project / "sub" / "notes.md").write_text("y")
    before = snapshot(tmp_path)
    refused(export(spec, folder, project, "--force"), f"{project}: ", "did not write")
    refused(export(spec, folder, tmp_path, "--force"), "which this command reads")  # holds t.yaml
    source = tmp_path / "src"
    shutil.copytree(folder, source)
    for target in (source, source / "sub", folder):
        result = export(spec, folder, target, "--source", str(source), "--force")
        refused(
            result, f"{target}: ", "this command reads" if target != source / "sub" else "inside"
        )
    assert snapshot(tmp_path) == {**before, **snapshot_of(tmp_path, "src")}
    out = tmp_path / "out"
    assert export(spec, folder, out).exit_code == 0  # morph's own folder, marked
    assert export(spec, folder, out, "--force").exit_code == 0  # so --force replaces it
    (out / "mine.txt").write_text("added by the user")
    refused(export(spec, folder, out, "--force"), "did not write (mine.txt)")
    assert (out / "mine.txt").read_text() == "added by the user"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_import_hf_never_overwrites_the_folder_it_reads(
    hf: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    folder, _ = hf
    before = snapshot(tmp_path)
    target = folder / name
    refused(invoke("import-hf", str(folder), "-o", str(target), "--force"), "this command reads")
    assert snapshot(tmp_path) == before


def test_devices_and_fifos_are_never_replaced(hf: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = hf
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = write(tmp_path, "mlp.yaml", MLP)
    ckpt = tmp_path / "mlp.safetensors"
    assert invoke("init", str(t), "-o", str(ckpt)).exit_code == 0
    null = os.stat("/dev/null")
    for target in (fifo, Path("/dev/null")):
        refused(invoke("import-hf", str(folder), "-o", str(target), "--force"), "not a regular")
        for flag in ("--suggest", "--plot"):
            result = invoke("probe", str(t), str(ckpt), flag, str(target), "--force")
            refused(result, f"{target}: ", "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert os.stat("/dev/null").st_ino == null.st_ino
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert hidden(tmp_path) == []


def test_import_hf_staging_never_follows_a_planted_symlink(
    hf: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = hf
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for planted in (".planted.yaml.tmp", ".planted.yaml.unverified", ".morph-import-x.yaml"):
        (tmp_path / planted).symlink_to(victim)
    out = tmp_path / "planted.yaml"
    assert invoke("import-hf", str(folder), "-o", str(out)).exit_code == 0
    assert victim.read_text() == "keep me"
    assert out.is_file() and not out.is_symlink() and "naming: hf-gpt2" in out.read_text()
    assert all((tmp_path / p).is_symlink() for p in (".planted.yaml.tmp",))


def test_probe_suggest_never_overwrites_the_extends_base(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", MLP)
    t = write(tmp_path, "t.yaml", "morphspec: 1\nname: t\nextends: base.yaml\n")
    ckpt = tmp_path / "t.safetensors"
    assert invoke("init", str(t), "-o", str(ckpt)).exit_code == 0
    before = snapshot(tmp_path)
    for target in (base, t, ckpt):
        result = invoke("probe", str(t), str(ckpt), "--suggest", str(target), "--force")
        refused(result, f"{target}: ", "which this command reads")
    assert snapshot(tmp_path) == before


def test_to_hf_into_the_teachers_own_folder_is_refused(
    hf: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, spec = hf
    before = snapshot(tmp_path)
    for extra in ((), ("--force",)):
        result = invoke(
            "convert", str(spec), str(spec), str(folder), "--to-hf", str(folder), *extra
        )
        refused(result, f"{folder}: ", "which this command reads")
    inside = folder / "student"
    result = invoke("convert", str(spec), str(spec), str(folder), "--to-hf", str(inside))
    refused(result, "lies inside the teacher folder")
    assert snapshot(tmp_path) == before


def test_symlinked_outputs_are_refused_and_leave_nothing(
    hf: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, spec = hf
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file.yaml").write_text("theirs")
    (elsewhere / "dir").mkdir()
    link_file, link_dir = tmp_path / "link.yaml", tmp_path / "link_out"
    link_file.symlink_to(elsewhere / "file.yaml")
    link_dir.symlink_to(elsewhere / "dir")
    before = snapshot(tmp_path)
    refused(invoke("import-hf", str(folder), "-o", str(link_file), "--force"), "symbolic link")
    refused(invoke("schema", "-o", str(link_file), "--force"), "symbolic link")
    refused(export(spec, folder, link_dir, "--force"), "symbolic link")
    args = ("convert", str(spec), str(spec), str(folder))
    refused(invoke(*args, "--to-hf", str(link_dir), "--force"), "symbolic link")
    refused(invoke(*args, "-o", str(link_file), "--force"), "symbolic link")
    assert snapshot(tmp_path) == before
    assert hidden(tmp_path) == [] and hidden(elsewhere) == []


def test_output_folder_marks_commits_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_folder(out, force=False) as staging:
        (staging / "a.bin").write_bytes(b"1")
    assert json.loads((out / MARKER).read_text())["files"] == ["a.bin"]
    with pytest.raises(MorphError, match="--force"), output_folder(out, force=False):
        pass
    with pytest.raises(RuntimeError), output_folder(out, force=True) as staging:
        (staging / "b.bin").write_bytes(b"2")
        raise RuntimeError("the writer failed")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.bin"]
    with pytest.raises(Terminated), output_folder(out, force=True) as staging:
        (staging / "b.bin").write_bytes(b"2")
        os.kill(os.getpid(), signal.SIGTERM)
    assert (out / "a.bin").read_bytes() == b"1" and hidden(tmp_path) == []
    with output_folder(out, force=True) as staging:
        (staging / "c.bin").write_bytes(b"3")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "c.bin"]
    (out / MARKER).write_text(json.dumps({"morph_output": 1, "files": []}))  # c.bin unlisted
    with pytest.raises(MorphError, match=r"did not write \(c\.bin\)"):
        output_folder(out, force=True).__enter__()
    source = tmp_path / "src"
    source.mkdir()
    with pytest.raises(MorphError, match="lies inside the source"):
        output_folder(source / "x", force=True, inputs=[(source, "the source")]).__enter__()
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("target", [".", "..", "/"])
def test_outputs_need_a_name_of_their_own(
    hf: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    folder, spec = hf
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    refused(export(spec, folder, Path(target), "--force"))
    refused(invoke("import-hf", str(folder), "-o", target, "--force"))
    assert snapshot(tmp_path) == before
