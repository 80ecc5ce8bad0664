"""Property: R2R growth of random MLP, CNN and ResNet specs is exact.

Hypothesis draws a network family and its structure (depth, kernels, strides, norms,
activations, pooling, pre- or post-activation residual blocks, identity or projection
shortcuts, post relu or none), the teacher's sizes, and a growth: widths (odd increments
and increments of 1 included), repeat counts, or both. Teacher and student are written as
YAML files that differ only in their `vars`, the teacher gets seeded weights and non-trivial
batchnorm statistics, the free parameters are drawn with `--init match` or `he`, and
`convert(..., verify=True)` must pass with `rel_err <= 1e-5` (fp32, eval mode);
`check_exact` also checks that the teacher's tensors are embedded bit for bit and that the
new channels are not all zero where the rule leaves them free.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from growth_helpers import (
    check_exact,
    make_teacher,
    one_intraop_thread,
    read_tensors,
    write_spec,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import morphspec
from morphspec.growth.init import std_of

ACTS = ("relu", "tanh", "gelu", "leaky_relu")
WIDTH = st.integers(1, 12)
INC = st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5])  # odd increments and increments of 1


@dataclass
class Case:
    """A spec template (YAML without `vars`), and the teacher's and student's vars."""

    kind: str
    body: str
    teacher: dict[str, int] = field(default_factory=dict)
    student: dict[str, int] = field(default_factory=dict)

    def yaml(self, name: str, which: dict[str, int]) -> str:
        vars_ = ", ".join(f"{k}: {v}" for k, v in sorted(which.items()))
        return f"morphspec: 1\nname: {name}\nvars: {{{vars_}}}\n{self.body}"

    def grow(self, var: str, old: int, inc: int) -> None:
        self.teacher[var] = old
        self.student[var] = old + inc


def _lines(*items: str) -> str:
    return "".join(item + "\n" for item in items)


@st.composite
def mlp_case(draw: st.DrawFn) -> Case:
    case = Case("mlp", "")
    d_in = draw(st.integers(1, 6))
    layers = [f"input: {{shape: [{d_in}]}}", "body:"]
    for i in range(draw(st.integers(1, 3))):
        case.grow(f"w{i}", draw(WIDTH), draw(INC))
        bias = draw(st.booleans())
        layers.append(f"  - linear: {{name: fc{i}, out: w{i}, bias: {str(bias).lower()}}}")
        if draw(st.booleans()):
            layers.append(f"  - batchnorm: {{name: bn{i}}}")
        act = draw(st.sampled_from(ACTS))
        if act == "leaky_relu" and draw(st.booleans()):
            act = "leaky_relu: {slope: 0.2}"
        layers.append(f"  - {act}")
        if draw(st.booleans()):
            layers.append("  - dropout: {p: 0.3}")
    layers.append(f"  - linear: {{name: head, out: {draw(st.integers(1, 4))}}}")
    case.body = _lines(*layers)
    return case


@st.composite
def cnn_case(draw: st.DrawFn) -> Case:
    """conv-bn-act-pool stages, then flatten (or global average pooling) and linear layers."""
    case = Case("cnn", "")
    size = 8
    layers = [f"input: {{shape: [{draw(st.integers(1, 3))}, 8, 8]}}", "body:"]
    for i in range(draw(st.integers(1, 2))):
        case.grow(f"f{i}", draw(WIDTH), draw(INC))
        kernel = draw(st.sampled_from([1, 3]))
        padding = draw(st.sampled_from([0, kernel // 2])) if size >= kernel else kernel // 2
        stride = draw(st.sampled_from([1, 1, 2]))
        bias = str(draw(st.booleans())).lower()
        layers.append(
            f"  - conv: {{name: conv{i}, out: f{i}, kernel: {kernel}, stride: {stride},"
            f" padding: {padding}, bias: {bias}}}"
        )
        size = (size + 2 * padding - kernel) // stride + 1
        if draw(st.booleans()):
            layers.append(f"  - batchnorm: {{name: bn{i}}}")
        layers.append(f"  - {draw(st.sampled_from(ACTS))}")
        if size >= 2 and draw(st.booleans()):
            layers.append(f"  - {draw(st.sampled_from(['maxpool', 'avgpool']))}: {{kernel: 2}}")
            size //= 2
    layers.append(f"  - {draw(st.sampled_from(['flatten', 'global_avgpool']))}")
    if draw(st.booleans()):
        case.grow("h", draw(WIDTH), draw(INC))
        layers += ["  - linear: {name: fc, out: h}", f"  - {draw(st.sampled_from(ACTS))}"]
    layers.append(f"  - linear: {{name: head, out: {draw(st.integers(1, 4))}}}")
    case.body = _lines(*layers)
    return case


@st.composite
def resnet_case(draw: st.DrawFn) -> Case:
    """A stem, then 1-2 stages of residual blocks (`repeat` of a block, stride 2 first in
    stage 2), basic (post-activation) or pre-activation, then pooling and a linear head."""
    case = Case("resnet", "")
    preact = draw(st.booleans())
    post = draw(st.sampled_from(["relu", None]))
    default_shortcut = draw(st.booleans())
    if preact:
        body = [
            "batchnorm: {name: bn1}",
            "relu",
            "conv: {name: conv1, out: width, kernel: 3, stride: stride, padding: 1, bias: false}",
            "batchnorm: {name: bn2}",
            "relu",
            "conv: {name: conv2, out: width, kernel: 3, padding: 1, bias: false}",
        ]
    else:
        body = [
            "conv: {name: conv1, out: width, kernel: 3, stride: stride, padding: 1, bias: false}",
            "batchnorm: {name: bn1}",
            "relu",
            "conv: {name: conv2, out: width, kernel: 3, padding: 1, bias: false}",
            "batchnorm: {name: bn2}",
        ]
    block = [
        "blocks:",
        "  block:",
        "    args: {width: required, stride: 1}",
        "    residual:",
        "      body:",
        *(f"        - {layer}" for layer in body),
    ]
    if default_shortcut:
        block.append("      shortcut: {name: downsample}")
    else:
        block += [
            "      shortcut:",
            "        name: proj",
            "        body:",
            "          - conv: {out: width, kernel: 1, stride: stride, bias: false}",
        ]
        if draw(st.booleans()):
            block.append("          - batchnorm")
    if post:
        block.append(f"      post: {post}")

    layers = [f"input: {{shape: [{draw(st.integers(1, 3))}, 8, 8]}}", *block, "body:"]
    layers.append("  - conv: {name: conv1, out: w0, kernel: 3, padding: 1, bias: false}")
    if not preact or draw(st.booleans()):
        layers += ["  - batchnorm: {name: bn1}", "  - relu"]
    w0, inc0 = draw(WIDTH), draw(INC)
    case.grow("w0", w0, inc0)

    # Stage 1 keeps the stem's width (identity shortcuts, one stream space), has its own
    # (a projection in copy 0), or gets its own only in the student (a projection is added).
    tie = draw(st.sampled_from(["tied", "own", "untie"]))
    if tie == "tied":
        w1 = "w0"
    else:
        w1 = "w1"
        if tie == "own":
            t1 = draw(WIDTH)
            t1 = t1 if t1 != w0 else w0 % 12 + 1
            s1 = max(t1 + draw(INC), t1)
            if s1 == w0 + inc0:
                s1 += 1
        else:
            t1 = w0
            s1 = w0 + inc0 + draw(st.integers(1, 4))
        case.teacher["w1"], case.student["w1"] = t1, s1
    case.grow("n1", draw(st.integers(1, 2)), draw(st.sampled_from([0, 0, 1, 2])))
    layers.append(f"  - repeat: {{name: layer1, times: n1, block: block, args: {{width: {w1}}}}}")
    if draw(st.booleans()):
        case.grow("w2", draw(WIDTH), draw(INC))
        case.grow("n2", draw(st.integers(1, 2)), draw(st.sampled_from([0, 0, 1, 2])))
        layers.append(
            "  - repeat: {name: layer2, times: n2, block: block, args: {width: w2},"
            " first: {stride: 2}}"
        )
    if preact and draw(st.booleans()):
        layers += ["  - batchnorm: {name: bn_final}", "  - relu"]
    layers.append(f"  - {draw(st.sampled_from(['global_avgpool', 'flatten']))}")
    layers.append(f"  - linear: {{name: fc, out: {draw(st.integers(1, 4))}}}")
    case.body = _lines(*layers)
    return case


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["mlp", "cnn", "resnet", "resnet"]))
    case = draw({"mlp": mlp_case(), "cnn": cnn_case(), "resnet": resnet_case()}[kind])
    if case.student == case.teacher:  # make sure the growth does something
        var = draw(st.sampled_from(sorted(case.teacher)))
        case.student[var] += draw(st.integers(1, 3))
    return case


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_intraop_thread():
        yield


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases(), seed=st.integers(0, 3), init=st.sampled_from(["match", "he"]))
def test_r2r_growth_is_exact(case: Case, seed: int, init: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher = tmp / "teacher.yaml"
        student = tmp / "student.yaml"
        teacher.write_text(case.yaml("teacher", case.teacher), encoding="utf-8")
        student.write_text(case.yaml("student", case.student), encoding="utf-8")
        ver = check_exact(teacher, student, tmp, teacher_seed=seed, seed=seed, init=init)
    grown = {k for k in case.teacher if case.student[k] != case.teacher[k]}
    odd = any(
        (case.student[k] - case.teacher[k]) % 2 for k in grown if k.startswith(("w", "f", "h"))
    )
    deeper = any(k.startswith("n") for k in grown)
    event(
        f"{case.kind}: {'deeper ' if deeper else ''}{'wider' if grown - {'n1', 'n2'} else ''}"
        f"{' odd' if odd else ''}"
    )
    event(f"rel_err: 1e{math.floor(math.log10(max(ver.rel_err, 1e-12)))}")


# -- teacher dtypes ----------------------------------------------------------------------------

SMALL_RESNET = """
morphspec: 1
name: {name}
vars: {{w: {w}, n: {n}}}
input: {{shape: [2, 8, 8]}}
blocks:
  basic:
    args: {{width: required, stride: 1}}
    residual:
      body:
        - conv: {{name: conv1, out: width, kernel: 3, stride: stride, padding: 1, bias: false}}
        - batchnorm: {{name: bn1}}
        - relu
        - conv: {{name: conv2, out: width, kernel: 3, padding: 1, bias: false}}
        - batchnorm: {{name: bn2}}
      shortcut: {{name: downsample}}
      post: relu
body:
  - conv: {{name: conv1, out: w, kernel: 3, padding: 1, bias: false}}
  - batchnorm: {{name: bn1}}
  - relu
  - repeat: {{name: layer1, times: n, block: basic, args: {{width: w}}}}
  - repeat: {{name: layer2, times: n, block: basic, args: {{width: 2*w}}, first: {{stride: 2}}}}
  - global_avgpool
  - linear: {{name: fc, out: 3}}
"""


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float16,
        torch.bfloat16,
        torch.float64,
    ],
    ids=str,
)
def test_teacher_dtype_is_kept_and_growth_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    teacher = write_spec(tmp_path / "teacher.yaml", SMALL_RESNET.format(name="t", w=3, n=1))
    student = write_spec(tmp_path / "student.yaml", SMALL_RESNET.format(name="s", w=6, n=2))
    ckpt = make_teacher(teacher, out=tmp_path / "fp32.safetensors")
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in read_tensors(ckpt).items()}
    cast = morphspec.save(state, tmp_path / "teacher.safetensors", spec=teacher)
    # check_exact checks that every teacher tensor keeps its dtype and its bits
    check_exact(teacher, student, tmp_path, teacher_ckpt=cast)
    for key, value in read_tensors(tmp_path / "student.safetensors").items():
        assert value.dtype == (dtype if value.is_floating_point() else torch.int64), key


def test_std_of_leaves_its_input_alone() -> None:
    t = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    std_of(t)
    assert t.tolist() == [1.0, 2.0, 4.0]
