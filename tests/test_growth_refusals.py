"""What `convert` refuses, and that a refusal or a failure leaves nothing behind.

Every refusal of the plan (`diff`) and of R2R raises PlanRefused (a MorphError, exit code 1)
whose message names the layer and points at the YAML places, and `convert` then leaves the
output folder exactly as it was: no output, no hidden `.<name>.unverified` staging file.
The same holds for teacher checkpoints that do not match their spec or are not
safetensors, for outputs that exist or are the teacher, and for a growth family that does
not preserve the function (NotPreservingError, exit code 3).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import (
    check_exact,
    make_teacher,
    one_intraop_thread,
    read_tensors,
    write_spec,
)
from safetensors.torch import save_file

from morphspec.checkpoint import CheckpointReader
from morphspec.convert import ConvertResult, convert
from morphspec.errors import (
    EXIT_INVALID,
    EXIT_NOT_PRESERVING,
    CheckpointError,
    MorphError,
    NotPreservingError,
    PlanRefused,
)
from morphspec.growth.families.r2r import R2R

# -- spec texts ----------------------------------------------------------------------------

MLP = """
morphspec: 1
name: {name}
vars: {{w: {w}}}
input: {{shape: [{d_in}]}}
body:
  - linear: {{name: fc1, out: w}}
  - relu
  - linear: {{name: fc2, out: {h}}}
  - relu
  - linear: {{name: head, out: {classes}}}
{extra}"""


def mlp(
    name: str = "mlp", w: int = 4, h: int = 5, d_in: int = 3, classes: int = 2, extra: str = ""
) -> str:
    return MLP.format(name=name, w=w, h=h, d_in=d_in, classes=classes, extra=extra)


CNN = """
morphspec: 1
name: cnn
vars: {{f: 4}}
input: {{shape: [2, 8, 8]}}
body:
  - conv: {{name: conv1, out: f, kernel: {kernel}, stride: {stride}, padding: {padding}}}
  - batchnorm: {{name: bn1}}
  - relu
  - global_avgpool
  - linear: {{name: head, out: 3}}
"""

# A small ResNet: a stem, then `n` basic blocks of `width` channels; `post` after the sum.
RESNET = """
morphspec: 1
name: resnet
vars: {{w0: {w0}, w1: {w1}, n: {n}}}
input: {{shape: [2, 8, 8]}}
blocks:
  basic:
    args: {{width: required, stride: 1}}
    residual:
      body:
{body}
      shortcut: {{name: downsample{when}}}
{post}
body:
  - conv: {{name: stem, out: w0, kernel: 3, padding: 1, bias: false}}
  - batchnorm: {{name: stem_bn}}
  - relu
  - repeat: {{name: layer1, times: n, block: basic, args: {{width: w1}}}}
  - global_avgpool
  - linear: {{name: fc, out: 3}}
"""
BASIC_BODY = [
    "conv: {name: conv1, out: width, kernel: 3, stride: stride, padding: 1, bias: false}",
    "batchnorm: {name: bn1}",
    "relu",
    "conv: {name: conv2, out: width, kernel: 3, padding: 1, bias: false}",
    "batchnorm: {name: bn2}",
]


def resnet(
    w0: int = 4,
    w1: int = 4,
    n: int = 1,
    body: list[str] | None = None,
    post: str | None = "relu",
    when: str = "",
) -> str:
    layers = "\n".join(f"        - {layer}" for layer in (body or BASIC_BODY))
    return RESNET.format(
        w0=w0,
        w1=w1,
        n=n,
        body=layers,
        post=f"      post: {post}" if post else "",
        when=f", when: {when}" if when else "",
    )


# A repeat of plain (non-residual) conv-bn-relu copies.
PLAIN_REPEAT = """
morphspec: 1
name: plain
vars: {{n: {n}}}
input: {{shape: [2, 8, 8]}}
body:
  - conv: {{name: stem, out: 4, kernel: 3, padding: 1}}
  - repeat:
      name: layer1
      times: n
      body:
        - conv: {{name: conv, out: 4, kernel: 3, padding: 1}}
        - batchnorm: {{name: bn}}
        - relu
  - global_avgpool
  - linear: {{name: fc, out: 3}}
"""

# A GPT-like decoder: the stream passes through layernorm.
GPT = """
morphspec: 1
name: gpt
vars: {{dim: {dim}, n: {n}}}
input: {{shape: [6], dtype: int64}}
blocks:
  blk:
    args: {{dim: required}}
    residual:
      body:
        - layernorm: {{name: ln_1}}
        - attention: {{name: attn, heads: 2, head_dim: 2}}
body:
  - embedding: {{name: wte, vocab: 11, dim: dim}}
  - position_embedding: {{name: wpe, max_len: 6}}
  - repeat: {{name: h, times: n, block: blk, args: {{dim: dim}}}}
  - layernorm: {{name: ln_f}}
  - linear: {{name: lm_head, out: 11, bias: false}}
"""


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_intraop_thread():
        yield


def listing(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first occurrence of `needle` in the written spec `text`."""
    lines = text.lstrip("\n").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def place(path: Path, text: str, needle: str) -> str:
    """`path:line:` for the line holding `needle`: how a message points into a YAML file."""
    return f"{path}:{line_of(text, needle)}:"


@dataclass
class Pair:
    """A teacher/student pair written to `tmp_path`, with a seeded teacher checkpoint."""

    folder: Path
    teacher: Path
    student: Path
    teacher_text: str
    student_text: str
    ckpt: Path
    out: Path

    def convert(self, **kwargs: Any) -> ConvertResult:
        return convert(self.teacher, self.student, self.ckpt, self.out, **kwargs)


def pair(tmp_path: Path, teacher_text: str, student_text: str) -> Pair:
    teacher = write_spec(tmp_path / "teacher.yaml", teacher_text)
    student = write_spec(tmp_path / "student.yaml", student_text)
    ckpt = make_teacher(teacher, out=tmp_path / "teacher.safetensors")
    return Pair(
        tmp_path, teacher, student, teacher_text, student_text, ckpt, tmp_path / "out.safetensors"
    )


def refused(p: Pair, error: type[MorphError] = PlanRefused, **kwargs: Any) -> str:
    """Convert, expect `error` with exit code 1, check the folder is untouched; the message."""
    before = listing(p.folder)
    with pytest.raises(error) as info:
        p.convert(**kwargs)
    assert info.value.exit_code == EXIT_INVALID == 1
    assert listing(p.folder) == before, "a refused conversion changed the output folder"
    return str(info.value)


# -- refusals of the plan --------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A refused pair: what the message must name, and the lines it must point at."""

    id: str
    teacher: str
    student: str
    names: tuple[str, ...]  # layer paths, quoted in the message
    says: str  # a phrase of the reason (case-insensitive)
    student_at: str | None  # a needle on the student's line the message points at
    teacher_at: str | None = None  # a needle on the teacher's line, when it names one


def params(cases: list[Refusal]) -> list[object]:
    """The cases for parametrize, named by their ids."""
    return [pytest.param(c, id=c.id) for c in cases]


PLAN_REFUSALS = [
    Refusal(
        "removed-layer",
        mlp(),
        mlp().replace("  - linear: {name: fc2, out: 5}\n  - relu\n", ""),
        ("fc2",),
        "cannot remove or rename",
        "name: fc1",  # the student's body: the layer is gone
        "name: fc2",
    ),
    Refusal(
        "renamed-layer",
        mlp(),
        mlp().replace("name: fc2", "name: fc2b"),
        ("fc2", "fc2b"),
        "cannot remove or rename",
        "name: fc2b",
        "name: fc2",
    ),
    Refusal(
        "narrower-width",
        mlp(h=5),
        mlp(h=3),
        ("fc2",),
        "shrinks from 5 to 3",
        "name: fc2",
        "name: fc2",
    ),
    Refusal(
        "changed-kind-linear-to-mlp",
        mlp(),
        mlp().replace("linear: {name: fc2, out: 5}", "mlp: {name: fc2, hidden: 5}"),
        ("fc2",),
        "is a linear in the teacher and a mlp in the student",
        "name: fc2",
        "name: fc2",
    ),
    Refusal(
        "changed-kind-relu-to-tanh",
        mlp(),
        mlp().replace("  - relu\n  - linear: {name: fc2", "  - tanh\n  - linear: {name: fc2"),
        ("1",),
        "is a relu in the teacher and a tanh in the student",
        "tanh",
        "- relu",
    ),
    Refusal(
        "changed-stride",
        CNN.format(kernel=3, stride=1, padding=1),
        CNN.format(kernel=3, stride=2, padding=1),
        ("conv1",),
        "stride changes from 1 to 2",
        "name: conv1",
        "name: conv1",
    ),
    Refusal(
        "changed-kernel",
        CNN.format(kernel=3, stride=1, padding=1),
        CNN.format(kernel=5, stride=1, padding=1),
        ("conv1",),
        "netmorph",
        "name: conv1",
        "name: conv1",
    ),
    Refusal(
        "added-layer-outside-a-repeat",
        mlp(),
        mlp(extra="  - linear: {name: extra, out: 2}\n"),
        ("extra",),
        "not a residual",  # the plan accepts inserted layers; R2R only inserts residual blocks
        "name: extra",
    ),
    Refusal(
        "projection-shortcut-removed",
        resnet(w0=3, w1=5),  # widths differ: layer1.0 has a projection shortcut
        resnet(w0=5, w1=5),  # the stem grows to the stage's width: the identity
        ("layer1.0",),
        "projection shortcut in the teacher but the identity in the student",
        "residual:",
        "residual:",
    ),
]


@pytest.mark.parametrize("case", params(PLAN_REFUSALS))
def test_plan_refusal(tmp_path: Path, case: Refusal) -> None:
    p = pair(tmp_path, case.teacher, case.student)
    message = refused(p)
    for name in case.names:
        assert f"'{name}'" in message, message
    assert case.says.lower() in message.lower(), message
    if case.student_at is not None:
        assert place(p.student, p.student_text, case.student_at) in message, message
    if case.teacher_at is not None:
        assert place(p.teacher, p.teacher_text, case.teacher_at) in message, message


def test_changed_input_shape_is_refused(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(d_in=3), mlp(d_in=4))
    message = refused(p)
    assert "input changes from [3]" in message and "[4]" in message, message
    assert place(p.student, p.student_text, "input:") in message, message


def test_changed_output_width_is_refused(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(classes=2), mlp(classes=3))
    message = refused(p)
    assert "output changes from [2] to [3]" in message, message
    assert re.search(re.escape(str(p.student)) + r":\d+:\d+", message), message


def test_changed_input_shape_names_both_places(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(d_in=3), mlp(d_in=4))
    message = refused(p)
    assert place(p.teacher, p.teacher_text, "input:") in message, message


def test_changed_output_width_names_the_layer_and_both_places(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(classes=2), mlp(classes=3))
    message = refused(p)
    assert "'head'" in message, message
    assert place(p.teacher, p.teacher_text, "name: head") in message, message
    assert place(p.student, p.student_text, "name: head") in message, message


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    """Several mistakes in one student: one error lists them all."""
    student = mlp(h=3).replace("name: fc1", "name: fc1b")
    p = pair(tmp_path, mlp(h=5), student)
    message = refused(p)
    for phrase in ("'fc1'", "'fc1b'", "shrinks from 5 to 3"):
        assert phrase in message, message


# -- refusals of R2R -----------------------------------------------------------------------

R2R_REFUSALS = [
    Refusal(
        # a kernel grown with its padding is a valid plan, but not one R2R can do
        "grown-kernel",
        CNN.format(kernel=3, stride=1, padding=1),
        CNN.format(kernel=5, stride=1, padding=2),
        ("conv1",),
        "netmorph",
        "name: conv1",
    ),
    Refusal(
        "new-copy-not-residual",
        PLAIN_REPEAT.format(n=1),
        PLAIN_REPEAT.format(n=2),
        ("layer1.1",),
        "not a residual",
        "- repeat:",
    ),
    Refusal(
        "new-block-single-conv",
        resnet(body=["conv: {name: conv1, out: width, kernel: 3, padding: 1, bias: false}"], n=1),
        resnet(body=["conv: {name: conv1, out: width, kernel: 3, padding: 1, bias: false}"], n=2),
        ("layer1.1", "layer1.1.conv1"),
        "needs at least two layers",
        "name: conv1",
    ),
    Refusal(
        # leaky_relu is the identity only on a non-negative stream, and the stream it
        # receives (the previous block's leaky_relu) can be negative.
        "new-block-post-on-negative-stream",
        resnet(post="leaky_relu", n=1),
        resnet(post="leaky_relu", n=2),
        ("layer1.1",),
        "the stream it receives can be negative",
        "post: leaky_relu",
    ),
    Refusal(
        "new-block-ends-in-sigmoid",
        resnet(body=[*BASIC_BODY, "sigmoid"], n=1),
        resnet(body=[*BASIC_BODY, "sigmoid"], n=2),
        ("layer1.1",),
        "sigmoid) does not map 0 to 0",
        "- sigmoid",
    ),
    Refusal(
        "new-block-post-not-identity",
        resnet(post="tanh", n=1),
        resnet(post="tanh", n=2),
        ("layer1.1",),
        "it is not the identity on the stream",
        "post: tanh",
    ),
    Refusal(
        "new-block-with-projection",
        resnet(n=1, when="always"),
        resnet(n=2, when="always"),
        ("layer1.1",),
        "has a projection shortcut",
        "residual:",
    ),
    Refusal(
        "widen-through-layernorm",
        GPT.format(dim=4, n=1),
        GPT.format(dim=6, n=1),
        ("h.0.ln_1",),
        "layernorm",
        "name: ln_1",
    ),
]


@pytest.mark.parametrize("case", params(R2R_REFUSALS))
def test_r2r_refusal(tmp_path: Path, case: Refusal) -> None:
    p = pair(tmp_path, case.teacher, case.student)
    message = refused(p)
    for name in case.names:
        assert f"'{name}'" in message, message
    assert case.says.lower() in message.lower(), message
    assert case.student_at is not None
    assert place(p.student, p.student_text, case.student_at) in message, message


@pytest.mark.parametrize("case", params(R2R_REFUSALS))
def test_r2r_refusal_leaves_nothing(tmp_path: Path, case: Refusal) -> None:
    """Whatever its message, each case is refused before anything is written."""
    p = pair(tmp_path, case.teacher, case.student)
    message = refused(p)
    assert re.search(re.escape(str(p.student)) + r":\d+:\d+", message), message


def test_new_projection_must_be_one_by_one(tmp_path: Path) -> None:
    """A projection added where the teacher had the identity must be able to start as I."""
    teacher = resnet(w0=4, w1=4)
    student = teacher.replace(
        "shortcut: {name: downsample}",
        "shortcut: {name: proj, when: always, body: [{conv: {out: width, kernel: 3,"
        " padding: 1, bias: false}}]}",
    )
    p = pair(tmp_path, teacher, student)
    message = refused(p)
    assert "'layer1.0.proj'" in message and "1x1 conv" in message, message
    assert place(p.student, p.student_text, "shortcut:") in message, message


def test_deepening_a_relu_stream_is_accepted(tmp_path: Path) -> None:
    """The counterpart of the refusals: post relu after a relu stream is the identity."""
    p = pair(tmp_path, resnet(n=1), resnet(n=2, w0=5, w1=5))
    check_exact(p.teacher, p.student, tmp_path, teacher_ckpt=p.ckpt)


def test_deepening_a_body_repeat_of_residuals(tmp_path: Path) -> None:
    spec = """
    morphspec: 1
    name: bodyrep
    vars: {{n: {n}}}
    input: {{shape: [2, 8, 8]}}
    body:
      - conv: {{name: stem, out: 4, kernel: 3, padding: 1}}
      - relu
      - repeat:
          name: layer
          times: n
          body:
            - residual:
                name: res
                body:
                  - conv: {{name: c1, out: 4, kernel: 3, padding: 1}}
                  - relu
                  - conv: {{name: c2, out: 4, kernel: 3, padding: 1}}
                post: relu
      - global_avgpool
      - linear: {{out: 3}}
    """
    p = pair(tmp_path, spec.format(n=1), spec.format(n=2))
    check_exact(p.teacher, p.student, tmp_path, teacher_ckpt=p.ckpt)


def test_widening_before_a_sequence_flatten_is_refused_or_exact(tmp_path: Path) -> None:
    spec = """
    morphspec: 1
    name: seqflat
    vars: {{w: {w}}}
    input: {{shape: [4, 3]}}
    body:
      - linear: {{name: a, out: w}}
      - relu
      - flatten
      - linear: {{name: b, out: 2}}
    """
    p = pair(tmp_path, spec.format(w=3), spec.format(w=5))
    with contextlib.suppress(PlanRefused):
        check_exact(p.teacher, p.student, tmp_path, teacher_ckpt=p.ckpt)


# -- teacher checkpoints -------------------------------------------------------------------


def test_teacher_that_does_not_match_its_spec(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    state = read_tensors(p.ckpt)
    del state["fc1.bias"]  # missing
    state["fc9.weight"] = torch.zeros(2, 2)  # unexpected
    state["fc2.weight"] = torch.zeros(5, 3)  # mis-shaped: the spec says [5, 4]
    save_file(state, str(p.ckpt))
    message = refused(p, CheckpointError)
    assert "missing key 'fc1.bias'" in message, message
    assert "unexpected key 'fc9.weight'" in message, message
    assert "'fc2.weight' has shape [5, 3] but the spec expects [5, 4]" in message, message
    assert str(p.ckpt) in message


@pytest.mark.parametrize("keep", [0, 5, 100, -7], ids=["empty", "5-bytes", "header", "data"])
def test_truncated_teacher(tmp_path: Path, keep: int) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    data = p.ckpt.read_bytes()
    p.ckpt.write_bytes(data[:keep])
    message = refused(p, CheckpointError)
    assert str(p.ckpt) in message, message


def test_garbage_teacher(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    gen = torch.Generator().manual_seed(0)
    p.ckpt.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=gen).tolist()))
    message = refused(p, CheckpointError)
    assert "not a safetensors file" in message and str(p.ckpt) in message, message


def test_garbage_json_header(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    header = b"{not json}      "
    p.ckpt.write_bytes(len(header).to_bytes(8, "little") + header)
    message = refused(p, CheckpointError)
    assert "not valid JSON" in message, message


def test_missing_teacher_file(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    p.ckpt.unlink()
    message = refused(p, CheckpointError)
    assert "not found" in message and str(p.ckpt) in message, message


# -- the output ----------------------------------------------------------------------------


def test_existing_output_without_force(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    p.out.write_bytes(b"precious")
    message = refused(p, MorphError)
    assert "exists" in message and "--force" in message and str(p.out) in message, message
    assert p.out.read_bytes() == b"precious"


@pytest.mark.parametrize("spelling", ["same", "dotdot", "hardlink", "symlink"])
def test_output_is_the_teacher(tmp_path: Path, spelling: str) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    (tmp_path / "sub").mkdir()
    if spelling == "same":
        p.out = p.ckpt
    elif spelling == "dotdot":
        p.out = tmp_path / "sub" / ".." / p.ckpt.name
    elif spelling == "hardlink":
        p.out = tmp_path / "sub" / "link.safetensors"
        os.link(p.ckpt, p.out)
    else:
        p.out = tmp_path / "sub" / "link.safetensors"
        p.out.symlink_to(p.ckpt)
    teacher_bytes = p.ckpt.read_bytes()
    message = refused(p, MorphError, force=True)
    assert "is the teacher checkpoint" in message, message
    assert p.ckpt.read_bytes() == teacher_bytes


def test_output_is_a_folder(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    p.out = tmp_path / "folder"
    p.out.mkdir()
    message = refused(p, MorphError, force=True)
    assert str(p.out) in message, message


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=7))
    before = listing(tmp_path)
    result = p.convert(dry_run=True)
    assert listing(tmp_path) == before
    assert not p.out.exists()
    assert result.written is False
    assert [op.op for op in result.plan.ops] == ["widen"]


def test_dry_run_still_refuses(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(h=5), mlp(h=3))
    refused(p, dry_run=True)


def test_output_folder_missing(tmp_path: Path) -> None:
    p = pair(tmp_path, mlp(w=4), mlp(w=6))
    p.out = tmp_path / "nowhere" / "out.safetensors"
    message = refused(p, MorphError)
    assert "does not exist" in message, message


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    p = pair(tmp_path, resnet(n=1), resnet(w0=7, w1=7, n=2))
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        p.out = tmp_path / f"{name}.safetensors"
        p.convert(seed=seed)
        outs[name] = p.out.read_bytes()
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]
    with CheckpointReader(tmp_path / "c.safetensors") as reader:
        assert reader.metadata["morphspec.seed"] == "4"


# -- a family that does not preserve the function ------------------------------------------


def _broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """R2R without its -Z columns: consumers read the new pairs with random weights."""
    name = "_cancel_columns" if hasattr(R2R, "_cancel_columns") else "consume"
    monkeypatch.setattr(R2R, name, lambda self, *args, **kwargs: None)


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-output-force"])
def test_broken_family_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    p = pair(tmp_path, resnet(n=1), resnet(w0=6, w1=6, n=2))
    if existing:
        p.out.write_bytes(b"the user's file")
    before = listing(tmp_path)
    _broken(monkeypatch)
    with pytest.raises(NotPreservingError) as info:
        p.convert(force=True)
    assert info.value.exit_code == EXIT_NOT_PRESERVING == 3
    message = str(info.value)
    match = re.search(r"rel_err ([0-9.e+-]+) > rtol 1e-05", message)
    assert match and float(match.group(1)) > 1e-5, message
    assert "max_abs_err" in message, message
    assert listing(tmp_path) == before, "a failed verification changed the output folder"
    if existing:
        assert p.out.read_bytes() == b"the user's file"
    else:
        assert not p.out.exists()
