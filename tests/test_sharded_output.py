"""`morph convert --max-shard-size` (issue 13): HF-style shards and index, staged and
committed whole, with each tensor's bytes those of the single-file output."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher, read_tensors, same_bits, write_spec
from typer.testing import CliRunner

from morphspec.checkpoint import INDEX_NAME, CheckpointReader, TensorEntry
from morphspec.checkpoint.output import MARKER
from morphspec.checkpoint.sharding import parse_size, plan_shards, write_sharded
from morphspec.checkpoint.writer import header_bytes, write_safetensors
from morphspec.cli.app import app
from morphspec.convert import convert
from morphspec.errors import MorphError, NotPreservingError

# Four layers of about 1 MB (teacher) to 1.6 MB (student), so a 2 MB limit needs shards.
MLP = """\
morphspec: 1
name: {name}
vars: {{w: {w}}}
input: {{shape: [512]}}
body:
  - linear: {{name: fc1, out: w}}
  - relu
  - linear: {{name: fc2, out: w}}
  - relu
  - linear: {{name: fc3, out: w}}
  - relu
  - linear: {{name: fc4, out: 10}}
"""
LIMIT = 2_000_000
SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("pair")
    t = write_spec(d / "t.yaml", MLP.format(name="t", w=512))
    s = write_spec(d / "s.yaml", MLP.format(name="s", w=640))
    return t, s, make_teacher(t)


def _files(folder: Path) -> list[str]:
    """What a folder holds, less the marker morph writes into every output folder."""
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER)


def test_shards_match_the_single_file(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    t, s, ckpt = pair
    single = convert(t, s, ckpt, tmp_path / "one.safetensors", verify=False).output
    out = tmp_path / "sharded"
    result = convert(t, s, ckpt, out, max_shard_size="2MB")
    assert result.written and result.output == out and result.verification is not None
    assert result.verification.passed
    index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    names = sorted(set(index["weight_map"].values()))
    assert len(names) >= 3 and _files(out) == sorted([*names, INDEX_NAME])
    for name in names:
        match = SHARD.fullmatch(name)
        assert match and int(match.group(2)) == len(names), name
        assert 0 < (out / name).stat().st_size <= LIMIT, name
    want = read_tensors(single)
    with CheckpointReader(out) as got, CheckpointReader(single) as one:
        assert got.keys() == sorted(want)
        assert all(same_bits(got.get(k), want[k]) for k in want)
        assert got.metadata == one.metadata  # the teacher's hash and the spec included
    with CheckpointReader(ckpt) as teacher:  # hashed on a thread, written into the header last
        assert one.metadata["morphspec.teacher_sha256"] == teacher.sha256() == result.teacher_sha256
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in want.values())
    assert _files(tmp_path) == ["one.safetensors", "sharded"]  # no staging left behind


def test_a_failed_check_leaves_nothing(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    t, s, ckpt = pair
    with pytest.raises(NotPreservingError):
        convert(t, s, ckpt, tmp_path / "out", max_shard_size="2MB", noise=1e3)
    assert _files(tmp_path) == []


def test_replacing_a_folder_of_shards(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Only with --force; a failing run keeps the old shards; a passing one replaces them
    whole (the shard count may change)."""
    t, s, ckpt = pair
    out = tmp_path / "out"
    convert(t, s, ckpt, out, max_shard_size="5MB", verify=False)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(MorphError, match="--force"):
        convert(t, s, ckpt, out, max_shard_size="2MB", verify=False)
    with pytest.raises(NotPreservingError):
        convert(t, s, ckpt, out, max_shard_size="2MB", noise=1e3, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    convert(t, s, ckpt, out, max_shard_size="2MB", force=True, seed=1)
    assert len(_files(out)) > len(old) and _files(tmp_path) == ["out"]


@pytest.mark.parametrize("case", ["foreign", "teacher inside", "file"])
def test_refusals_write_nothing(pair: tuple[Path, Path, Path], tmp_path: Path, case: str) -> None:
    t, s, ckpt = pair
    out = tmp_path / "out"
    if case == "file":
        out.write_bytes(b"not a folder")
        match = "is a file"
    else:
        out.mkdir()
        if case == "foreign":
            (out / "notes.txt").write_text("mine", encoding="utf-8")
            match = "did not write"
        else:
            ckpt = Path(shutil.copy(ckpt, out / "model.safetensors"))
            match = "the teacher checkpoint"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(MorphError, match=match):
        convert(t, s, ckpt, out, max_shard_size="2MB", force=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_plan_keeps_every_file_within_the_limit() -> None:
    """The planned header bound is never below the real header; an oversize tensor gets a
    shard of its own."""
    sizes = [300, 5000, 1, 2000, 40, 7000, 10, 3000, 9000, 64]
    entries = [
        TensorEntry(f"layer{i:02d}.weight", (n, 1000), torch.float32, lambda: torch.empty(0))
        for i, n in enumerate(sizes)
    ]
    meta = {"format": "pt", "morphspec.spec": "x" * 500}
    limit = 12_000_000
    runs = plan_shards(entries, meta, limit)
    assert [e.key for run in runs for e in run] == sorted(e.key for e in entries)
    for run in runs:
        size = len(header_bytes(run, meta)) + sum(e.nbytes for e in run)
        assert size <= limit or len(run) == 1, [e.key for e in run]
    assert any(len(run) > 1 for run in runs) and len(runs) >= 4
    assert [e.key for e in plan_shards(entries, meta, 36_000_000 // 8)[-1]]  # none empty


def test_writer_streams_one_ahead_and_reports_progress(tmp_path: Path) -> None:
    entries = [
        TensorEntry(
            f"t{i}", (1 << 18,), torch.float32, lambda i=i: torch.full((1 << 18,), float(i))
        )
        for i in range(5)
    ]
    seen: list[int] = []
    paths = write_sharded(
        tmp_path, entries, {"format": "pt"}, (2 << 20) + 4096, progress=seen.append
    )
    assert len(paths) == 3 and seen == [(i + 1) << 20 for i in range(5)]
    with CheckpointReader(tmp_path) as r:
        assert all(torch.equal(r.get(f"t{i}"), torch.full((1 << 18,), float(i))) for i in range(5))


@pytest.mark.parametrize(
    ("text", "n"),
    [("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("2mib", 2 << 20),
     ("3000000", 3_000_000), (4 << 20, 4 << 20)],
)  # fmt: skip
def test_sizes(text: str | int, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["2 parsecs", "", "MB", "-1GB", "500"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(MorphError, match="max-shard-size"):
        parse_size(text)


def test_cli(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    t, s, ckpt = pair
    args = ["convert", str(t), str(s), str(ckpt), "-o", str(tmp_path / "out")]
    bad = CliRunner().invoke(app, [*args, "--max-shard-size", "2 parsecs"])
    assert bad.exit_code == 1 and "max-shard-size" in bad.output and "Traceback" not in bad.output
    assert _files(tmp_path) == []
    ok = CliRunner().invoke(app, [*args, "--max-shard-size", "2MB", "--no-verify"])
    assert ok.exit_code == 0, ok.output
    assert INDEX_NAME in _files(tmp_path / "out")


def test_late_metadata_must_keep_the_header_length(tmp_path: Path) -> None:
    """The final header is written over the placeholder: a longer one would overwrite the
    first tensor's bytes, so it is refused and nothing is left behind."""
    entries = [TensorEntry("a", (2,), torch.float32, lambda: torch.ones(2))]
    path = tmp_path / "x.safetensors"
    write_safetensors(path, entries, {"k": "0" * 8}, late=lambda: {"k": "f" * 8})
    with CheckpointReader(path) as r:
        assert r.metadata == {"k": "f" * 8} and torch.equal(r.get("a"), torch.ones(2))
    with pytest.raises(ValueError, match="same length"):
        write_safetensors(
            tmp_path / "y.safetensors", entries, {"k": "0"}, late=lambda: {"k": "0" * 20}
        )
    assert _files(tmp_path) == ["x.safetensors"]


def test_producers_run_without_grad(tmp_path: Path) -> None:
    """Producers run on the writer's worker thread, where grad mode would be on by default."""
    w = torch.nn.Parameter(torch.ones(3))

    def produce() -> torch.Tensor:
        assert not torch.is_grad_enabled()
        return w * 2

    write_safetensors(tmp_path / "x.safetensors", [TensorEntry("w", (3,), torch.float32, produce)])
    with CheckpointReader(tmp_path / "x.safetensors") as r:
        assert torch.equal(r.get("w"), torch.full((3,), 2.0))
