"""Hostile inputs, races and signals (issue 13): each case once misbehaved; keep it fixed.

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
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner, Result

from morphspec.checkpoint import CheckpointReader, TensorEntry, write_safetensors
from morphspec.checkpoint.output import staging_file
from morphspec.cli.app import app
from morphspec.errors import CheckpointError, MorphError

ROOT = Path(__file__).resolve().parents[1]
ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "COLUMNS": "200", "MORPH_DEBUG": None}

MLP = """\
morphspec: 1
name: mlp
vars: {width: 8}
input: {shape: [4]}
body:
  - linear: {name: fc1, out: width}
  - relu
  - linear: {name: head, out: 3}
"""
WIDE = "morphspec: 1\nname: wide\nextends: t.yaml\nvars: {width: 12}\n"


def invoke(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env={**ENV, **env})


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(result: Result, *words: str, code: int = 1) -> str:
    """The result failed cleanly with `code`, mentioning every word; returns stderr."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def hidden(folder: Path) -> list[str]:
    """Staging and temp files a run might leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A teacher spec, a student that extends it, and a teacher checkpoint."""
    t, s = write(tmp_path, "t.yaml", MLP), write(tmp_path, "s.yaml", WIDE)
    ckpt = tmp_path / "t.safetensors"
    assert invoke("init", str(t), "-o", str(ckpt)).exit_code == 0
    return t, s, ckpt


def convert(pair: tuple[Path, Path, Path], out: Path, *extra: str) -> Result:
    t, s, ckpt = pair
    return invoke("convert", str(t), str(s), str(ckpt), "-o", str(out), *extra)


# -- 1. only regular files are replaced ----------------------------------------------------
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


# -- 2. unique staging: one run never renames another's unverified file -------------------
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


# -- 3. shards stay inside the index's folder ----------------------------------------------
@pytest.mark.parametrize("name", ["../elsewhere.safetensors", "ABS", "sub/x.safetensors", ".."])
def test_shard_paths_cannot_escape(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"w": torch.zeros(2)}, str(outside))
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "sub" / "x.safetensors"))
    shard = str(outside) if name == "ABS" else name
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(CheckpointError, match="not a plain file name") as err:
        CheckpointReader(folder)
    assert err.value.problems[0].mark is not None
    assert err.value.problems[0].mark.file == str(index)


# -- 4. no input is ever an output ---------------------------------------------------------
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


# -- 5. bounded expansion ------------------------------------------------------------------
ALIAS_BOMB = """\
morphspec: 1
name: bomb
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
NESTED_REPEAT = """\
morphspec: 1
name: r
input: {shape: [4]}
body:
  - repeat: {times: 100000, body: [repeat: {times: 100000, body: [relu]}]}
"""


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    spec = write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    start = time.perf_counter()
    refused(invoke("validate", str(spec)), f"{spec}:", "MORPH_MAX_YAML_VALUES")
    assert time.perf_counter() - start < 10


def test_repeat_inside_repeat_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path, "r.yaml", NESTED_REPEAT)
    refused(invoke("validate", str(spec)), f"{spec}:5:", "MORPH_MAX_LAYERS")


def test_nested_repeats_are_refused_after_one_copy(tmp_path: Path) -> None:
    text = NESTED_REPEAT.replace("100000", "50")
    spec = write(tmp_path, "r.yaml", text)
    refused(invoke("validate", str(spec), MORPH_MAX_LAYERS="1000"), f"{spec}:5:21: 'times: 50'")
    assert invoke("validate", str(spec), MORPH_MAX_LAYERS="3000").exit_code == 0


def test_layer_limit_can_be_raised_and_lowered(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    refused(invoke("validate", str(spec), MORPH_MAX_LAYERS="2"), "limit of 2")
    assert invoke("validate", str(spec), MORPH_MAX_LAYERS="3").exit_code == 0


@pytest.mark.parametrize("digits", ["-1000000000", "31", "0.5"])
def test_round_digits_are_bounded(tmp_path: Path, digits: str) -> None:
    text = MLP.replace("out: width", f"out: 'round(8, {digits})'")
    spec = write(tmp_path, "t.yaml", text)
    refused(invoke("validate", str(spec)), f"{spec}:6:", "round()")


def test_init_checks_the_size_before_allocating(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("width: 8", "width: 1e9"))
    out = tmp_path / "big.safetensors"
    refused(invoke("init", str(spec), "-o", str(out)), f"{spec}: ", "MORPH_MAX_PARAMS")
    assert not out.exists()
    small = write(tmp_path, "small.yaml", MLP)
    refused(invoke("init", str(small), "-o", str(out), MORPH_MAX_PARAMS="50"), "limit of 50")
    assert not out.exists()


def test_huge_plain_numbers_are_refused(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        "t.yaml",
        MLP.replace("width: 8", "width: 8").replace("out: 3", "out: 1" + "0" * 30),
    )
    refused(invoke("validate", str(spec)), f"{spec}:8:", "beyond the limit")


def test_integers_too_long_to_read_are_located(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("width: 8", "width: " + "9" * 5000))
    refused(invoke("validate", str(spec)), f"{spec}:3:15: cannot read this value")
    err = refused(
        invoke("validate", str(write(tmp_path, "u.yaml", MLP)), "--set", "width=" + "9" * 5000)
    )
    assert len(err) < 300


def test_extends_chains_are_bounded(tmp_path: Path) -> None:
    for i in range(40):
        write(tmp_path, f"e{i}.yaml", f"morphspec: 1\nname: e\nextends: e{i + 1}.yaml\n")
    write(tmp_path, "e40.yaml", MLP)
    refused(invoke("validate", str(tmp_path / "e0.yaml")), "'extends' chains more than 32 files")
    assert invoke("validate", str(tmp_path / "e20.yaml")).exit_code == 0


# -- 6. located messages instead of internal errors ----------------------------------------
@pytest.mark.parametrize("byte", ["\x07", "\x00", "\x1b"])
def test_control_bytes_are_located_and_do_not_stop_validate(tmp_path: Path, byte: str) -> None:
    bad = write(tmp_path, "bad.yaml", MLP.replace("name: mlp", f"name: ml{byte}p"))
    good = write(tmp_path, "good.yaml", MLP)
    result = invoke("validate", str(bad), str(good))
    refused(result, f"{bad}:2:9: control character U+{ord(byte):04X}")
    assert f"{good}: ok" in result.stdout


@pytest.mark.parametrize(
    "value",
    ["[", "!!python/object/apply:os.system ['true']", "abc", ".nan", ".inf", "1e400", "true"],
)
def test_bad_set_values_are_refused(tmp_path: Path, value: str) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    refused(invoke("validate", str(spec), "--set", f"width={value}"), "--set width=")


@pytest.mark.parametrize(("value", "width"), [("1e1", 10), ("16", 16), ("1.6e1", 16)])
def test_set_accepts_numbers_in_any_notation(tmp_path: Path, value: str, width: int) -> None:
    spec = write(tmp_path, "t.yaml", MLP)
    result = invoke("summary", str(spec), "--set", f"width={value}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == 4 * width + width + width * 3 + 3


def test_set_r_1e_minus_1_is_a_float(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP.replace("{width: 8}", "{width: 8, r: 1}"))
    assert invoke("validate", str(spec), "--set", "r=1e-1").exit_code == 0


def _header_file(path: Path, header: object) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
    return path


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]},
        {"dtype": {"a": 1}, "shape": [2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2], "data_offsets": [False, 8]},
        {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]},
    ],
)
def test_headers_with_wrong_types_are_refused(tmp_path: Path, entry: dict[str, object]) -> None:
    path = _header_file(tmp_path / "x.safetensors", {"w": entry})
    with pytest.raises(CheckpointError, match="corrupt header entry") as err:
        CheckpointReader(path)
    assert str(err.value).startswith(f"{path}: ")


def test_deeply_nested_index_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="nests too deeply"):
        CheckpointReader(tmp_path)


@pytest.mark.parametrize("special", ["/dev/zero", "FIFO", "DIR"])
def test_specs_must_be_regular_files(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "FIFO":
        path = tmp_path / "fifo.yaml"
        os.mkfifo(path)
    elif special == "DIR":
        path = tmp_path
    good = write(tmp_path, "good.yaml", MLP)
    result = invoke("validate", str(path), str(good))
    refused(result, f"{path}: ", "not a regular file")
    assert f"{good}: ok" in result.stdout


def test_oversized_spec_is_refused_before_reading(tmp_path: Path) -> None:
    spec = write(tmp_path, "t.yaml", MLP + "# " + "x" * 2000 + "\n")
    refused(invoke("validate", str(spec), MORPH_MAX_SPEC_BYTES="1000"), "MORPH_MAX_SPEC_BYTES")
    assert invoke("validate", str(spec)).exit_code == 0


def test_deeply_nested_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.safetensors"
    raw = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CheckpointError, match="nests too deeply"):
        CheckpointReader(path)


def test_verify_of_another_models_checkpoint_is_short(
    pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    t = pair[0]
    other = write(tmp_path, "other.yaml", LOTS_OF_KEYS)
    other_ckpt = tmp_path / "other.safetensors"
    assert invoke("init", str(other), "-o", str(other_ckpt)).exit_code == 0
    err = refused(invoke("verify", str(t), str(other_ckpt), str(t), str(other_ckpt)))
    assert len(err) < 3000 and len(err.splitlines()) <= 12, err
    assert "missing key 'fc1.weight'" in err and "more key problem(s)" in err
    assert "Arch(" not in err and "Node(" not in err


LOTS_OF_KEYS = """\
morphspec: 1
name: other
input: {shape: [4]}
body:
  - repeat: {times: 20, body: [linear: {name: l, out: 4}]}
"""


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_out_of_range_seed_is_a_usage_error(pair: tuple[Path, Path, Path], seed: str) -> None:
    t, s, ckpt = pair
    result = invoke("convert", str(t), str(s), str(ckpt), "--seed", seed, "--dry-run")
    refused(result, "--seed", code=2)


@pytest.mark.parametrize("option", ["--noise", "--init-scale"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_options_are_usage_errors(
    pair: tuple[Path, Path, Path], tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out, option, value), option, code=2)
    assert not out.exists()


def test_a_checkpoint_given_as_spec_is_named(pair: tuple[Path, Path, Path]) -> None:
    ckpt = pair[2]
    refused(invoke("summary", str(ckpt)), f"{ckpt}: ", "not UTF-8 text (is it a checkpoint?)")


def test_absurd_samples_are_refused(pair: tuple[Path, Path, Path]) -> None:
    t, _, ckpt = pair
    refused(invoke("verify", str(t), str(ckpt), str(t), str(ckpt), "--samples", "1e9"), code=2)
    refused(
        invoke("verify", str(t), str(ckpt), str(t), str(ckpt), "--samples", "1000000000"),
        "--samples",
        code=2,
    )


# -- 7. signals clean up like Ctrl-C -------------------------------------------------------
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


# -- 8. a teacher with NaN or inf ----------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_teacher_is_named(
    pair: tuple[Path, Path, Path], tmp_path: Path, bad: float
) -> None:
    t, _, ckpt = pair
    with CheckpointReader(ckpt) as reader:
        state = {k: reader.get(k) for k in reader}
        meta = reader.metadata
    state["fc1.weight"][0, 0] = bad
    save_file(state, str(ckpt), metadata=meta)
    out = tmp_path / "out.safetensors"
    refused(convert(pair, out), f"{ckpt}: ", "not finite", "'fc1.weight'")
    assert not out.exists() and hidden(tmp_path) == []
    refused(invoke("verify", str(t), str(ckpt), str(t), str(ckpt)), "not finite")


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_finiteness_check_in_every_float_dtype(dtype: torch.dtype, bad: float) -> None:
    from morphspec.checkpoint.finite import check_finite_tensors
    from morphspec.errors import Mark

    good = torch.linspace(-2, 2, 100)
    check_finite_tensors([("w", good.to(dtype))], Mark("x"))
    worse = good.clone()
    worse[17] = bad
    with pytest.raises(CheckpointError, match="tensor 'w' holds"):
        check_finite_tensors([("ok", good.to(dtype)), ("w", worse.to(dtype))], Mark("x"))


# -- 9. smaller ----------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "t.yaml", "--json"],
        ["validate", "--json", "--nope"],
        ["init", "t.yaml", "--seed", "x", "--json"],
        ["nosuchcommand", "--json"],
    ],
)
def test_usage_errors_under_json_are_one_document(tmp_path: Path, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "morphspec", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["problems"][0]["message"]


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


def test_input_shape_takes_expressions(tmp_path: Path) -> None:
    text = """\
    morphspec: 1
    name: lm
    vars: {ctx: 8, half: 2}
    input: {shape: ['ctx * half'], dtype: int64}
    body: [embedding: {vocab: 10, dim: 4}]
    """
    spec = write(tmp_path, "lm.yaml", text)
    result = invoke("summary", str(spec), "--json", "--set", "ctx=4")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input"] == [8]
    bad = write(tmp_path, "bad.yaml", text.replace("half: 2", "half: 0.5").replace("8", "3"))
    refused(invoke("validate", str(bad)), f"{bad}:4:17: input size 0 must be a positive integer")


def test_extends_refusal_points_at_the_student(tmp_path: Path) -> None:
    t = write(tmp_path, "t.yaml", MLP)
    s = write(tmp_path, "s.yaml", "morphspec: 1\nname: s\nextends: t.yaml\nvars: {width: 0}\n")
    err = refused(invoke("validate", str(s)), f"{s}:4:")
    assert f"{t}:6:" in err  # the expression's place is named too
    # a value the student did not set still points at the base
    s2 = write(tmp_path, "s2.yaml", "morphspec: 1\nname: s\nextends: t.yaml\nvars: {other: 0}\n")
    bad = write(tmp_path, "t.yaml", MLP.replace("out: 3", "out: 0"))
    assert bad == t
    refused(invoke("validate", str(s2)), f"{t}:8:")
