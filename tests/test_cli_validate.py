"""`morph validate`: each kind of mistake gives exit 1, FILE:LINE:COL and no traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from morphspec.cli.app import app

ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "COLUMNS": "200", "MORPH_DEBUG": None}

GOOD = """\
morphspec: 1
name: good
vars: {r: 0.5}
input: {shape: [3, 8, 8]}
body:
  - conv: {out: floor(16*r), kernel: 3, padding: 1}
  - relu
  - global_avgpool
  - linear: {out: 4}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# name, YAML text, extra CLI args, where (line, col), words the message must contain
MISTAKES: list[tuple[str, str, list[str], tuple[int, int], list[str]]] = [
    (
        "unknown_key",
        """\
        morphspec: 1
        name: x
        input: {shape: [16]}
        body:
          - linear: {out: 8, biass: false}
        """,
        [],
        (5, 22),
        ["unknown key 'biass'", "did you mean 'bias'"],
    ),
    (
        "unknown_kind",
        """\
        morphspec: 1
        name: x
        input: {shape: [3, 8, 8]}
        body:
          - conv2d: {out: 8, kernel: 3}
        """,
        [],
        (5, 5),
        ["unknown layer kind or block 'conv2d'", "did you mean 'conv'"],
    ),
    (
        "yaml_syntax",
        """\
        morphspec: 1
        name: x
        input: {shape: [3, 8, 8]
        body:
          - relu
        """,
        [],
        (4, 1),
        ["YAML syntax error"],
    ),
    (
        "channels_not_positive",
        """\
        morphspec: 1
        name: x
        vars: {r: 0.001}
        input: {shape: [3, 8, 8]}
        body:
          - conv: {out: floor(64*r), kernel: 3}
        """,
        [],
        (6, 17),
        ["'out' must be a positive integer", "'floor(64*r)' = 0"],
    ),
    (
        "residual_unequal_shapes",
        """\
        morphspec: 1
        name: x
        input: {shape: [3, 8, 8]}
        body:
          - residual:
              body:
                - conv: {out: 8, kernel: 3, padding: 1}
        """,
        [],
        (5, 5),
        ["unequal shapes", "[8, 8, 8]", "[3, 8, 8]"],
    ),
    (
        "linear_on_image",
        """\
        morphspec: 1
        name: x
        input: {shape: [3, 8, 8]}
        body:
          - conv: {out: 8, kernel: 3}
          - linear: {out: 10}
        """,
        [],
        (6, 5),
        ["linear", "flat input", "[8, 6, 6]", "flatten"],
    ),
    (
        "heads_not_divisible",
        """\
        morphspec: 1
        name: x
        input: {shape: [16, 32]}
        body:
          - attention: {heads: 4, head_dim: 8, kv_heads: 3}
        """,
        [],
        (5, 50),
        ["heads (4) must be divisible by kv_heads (3)"],
    ),
    (
        "expression_import",
        """\
        morphspec: 1
        name: x
        input: {shape: [16]}
        body:
          - linear: {out: "__import__('os').system('echo pwned')"}
        """,
        [],
        (5, 19),
        ["__import__", "only the functions floor, ceil, round, min, max may be called"],
    ),
    (
        "expression_attribute",
        """\
        morphspec: 1
        name: x
        vars: {d: 8}
        input: {shape: [16]}
        body:
          - linear: {out: d.real}
        """,
        [],
        (6, 19),
        ["d.real", "'Attribute' is not allowed"],
    ),
    (
        "unknown_block_argument",
        """\
        morphspec: 1
        name: x
        input: {shape: [16]}
        blocks:
          fc:
            args: {width: required}
            linear: {out: width}
        body:
          - fc: {width: 8, widht: 9}
        """,
        [],
        (9, 20),
        ["block 'fc' has no argument 'widht'", "did you mean 'width'"],
    ),
    (
        "missing_block_argument",
        """\
        morphspec: 1
        name: x
        input: {shape: [16]}
        blocks:
          fc:
            args: {width: required}
            linear: {out: width}
        body:
          - fc: {name: head}
        """,
        [],
        (9, 5),
        ["block 'fc' needs the argument 'width'"],
    ),
    (
        "set_unknown_var",
        GOOD,
        ["--set", "rr=0.25"],
        (3, 7),
        ["--set rr", "no var 'rr'", "did you mean 'r'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "args", "where", "words"),
    [m[1:] for m in MISTAKES],
    ids=[m[0] for m in MISTAKES],
)
def test_mistake_is_located(
    tmp_path: Path, text: str, args: list[str], where: tuple[int, int], words: list[str]
) -> None:
    path = write(tmp_path, "spec.yaml", text)
    result = invoke("validate", str(path), *args)
    assert result.exit_code == 1, result.output
    line, col = where
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(f"{path}:")]
    assert lines, result.output
    assert lines[0].startswith(f"{path}:{line}:{col}: "), lines[0]
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_extends_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "morphspec: 1\nname: a\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "morphspec: 1\nname: b\nextends: a.yaml\n")
    result = invoke("validate", str(a))
    assert result.exit_code == 1
    # the cycle closes at b's 'extends', so that is the place reported
    assert result.stderr.startswith(f"{b}:3:10: 'extends' forms a cycle"), result.stderr
    assert "Traceback" not in result.output


def test_missing_file(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "nope.yaml" in result.stderr and "not found" in result.stderr


def test_good_file_prints_an_ok_line(tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", GOOD)
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: ok (good,")
    assert result.stderr == ""


def test_set_overrides_vars(tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", GOOD)
    result = invoke("validate", str(path), "--set", "r=0.01")
    assert result.exit_code == 1
    assert "'floor(16*r)' = 0" in result.stderr


def test_every_problem_of_every_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GOOD)
    paths = [write(tmp_path, f"{m[0]}.yaml", m[1]) for m in MISTAKES[:6]]
    two = write(
        tmp_path,
        "two.yaml",
        """\
        morphspec: 1
        name: x
        input: {shape: [16]}
        body:
          - linear: {outt: 8}
          - relu: {nmae: a}
        """,
    )
    result = invoke("validate", *map(str, [*paths, good, two]))
    assert result.exit_code == 1
    for path in paths:
        assert f"{path}:" in result.stderr
    assert f"{two}:5:14: unknown key 'outt'" in result.stderr
    assert f"{two}:6:12: unknown key 'nmae'" in result.stderr
    assert f"{good}: ok" in result.stdout
    assert "problem(s) in 7 of 8 file(s)" in result.stderr


def test_json_on_failure_is_one_document(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", MISTAKES[0][1])
    result = invoke("validate", str(bad), str(good), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)  # fails on anything but exactly one document
    assert doc["ok"] is False
    assert doc["problems"] == [
        {
            "file": str(bad),
            "line": 5,
            "col": 22,
            "message": "unknown key 'biass' (did you mean 'bias'?)",
        }
    ]
    assert [f["ok"] for f in doc["files"]] == [False, True]
    assert result.stderr == ""


def test_json_on_success_is_one_document(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GOOD)
    result = invoke("validate", str(good), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc == {
        "ok": True,
        "files": [{"file": str(good), "ok": True, "name": "good", "params": 8 * 27 + 8 + 36}],
    }


def test_no_files_is_a_usage_error() -> None:
    result = invoke("validate")
    assert result.exit_code == 2
