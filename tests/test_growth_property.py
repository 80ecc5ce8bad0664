"""Property: R2R growth of random MLP, CNN and ResNet specs is exact.

Hypothesis draws a network family and its structure (depth, kernels, strides, norms,
activations, pooling, pre- or post-activation residual blocks, identity or projection
shortcuts, post relu or none), the teacher's sizes, and a growth: widths (odd increments
and increments of 1 included), repeat counts, or both. Teacher and student are written as
YAML files that differ only in their `vars`, the teacher gets seeded weights and non-trivial
batchnorm statistics, and `convert(..., verify=True)` must pass with `rel_err <= 1e-5`
(fp32, eval mode); `check_exact` also checks the teacher's tensors are embedded bit for
bit and that the new channels are not all zero where the rule leaves them free.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from growth_helpers import check_exact
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from morphspec.convert import plan_for

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


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases(), seed=st.integers(0, 3))
def test_r2r_growth_is_exact(case: Case, seed: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher = tmp / "teacher.yaml"
        student = tmp / "student.yaml"
        teacher.write_text(case.yaml("teacher", case.teacher), encoding="utf-8")
        student.write_text(case.yaml("student", case.student), encoding="utf-8")
        ver = check_exact(teacher, student, tmp, teacher_seed=seed, seed=seed)
        plan = plan_for(teacher, student)[2]
    odd = any(op.odd for op in plan.widens)
    event(f"{case.kind}: {' '.join(sorted({op.op for op in plan.ops}))}{' odd' if odd else ''}")
    event(f"rel_err: 1e{math.floor(math.log10(max(ver.rel_err, 1e-12)))}")
