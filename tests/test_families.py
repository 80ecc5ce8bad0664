"""Every family on the shipped examples: exact where the family promises it, refused with a
reason where its conditions fail, and randpad's deviation reported (issue 4)."""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from growth_helpers import make_teacher, read_tensors
from typer.testing import CliRunner

import morphspec
from morphspec.cli.app import app
from morphspec.convert import ConvertResult, convert
from morphspec.errors import PlanRefused
from morphspec.growth.catalog import CATALOG
from morphspec.growth.conditions import FAMILY_CONDITIONS
from morphspec.growth.families import FAMILIES
from morphspec.growth.options import GrowOptions
from morphspec.verify import compare, sample_inputs

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
EXACT = ["r2r", "net2net", "netmorph"]

# (teacher, student, teacher --set, student --set)
WIDEN = {
    "mlp": ("mlp.yaml", "mlp_wide.yaml", None, None),
    "smallconv": ("smallconv.yaml", "smallconv_wide.yaml", None, None),
    "resnet_cifar": (
        "resnet_cifar18.yaml",
        "resnet_cifar18.yaml",
        [f"r={2**-3.5}"],
        [f"r={2**-3}"],
    ),
    "preact": ("preact_resnet.yaml", "preact_resnet.yaml", ["L=1", "width=4"], ["L=1", "width=7"]),
    "resnet18": ("resnet18.yaml", "resnet18.yaml", ["r=0.125"], ["r=0.1875"]),
}
DEEPEN = {
    "r2r": [
        ("resnet_cifar10.yaml", "resnet_cifar18.yaml", None, None),
        ("preact_resnet.yaml", "preact_resnet.yaml", ["L=1", "width=4"], ["L=2", "width=6"]),
        ("resnet18.yaml", "resnet34.yaml", ["r=0.125"], ["r=0.125"]),
    ],
    "net2net": [("plain_cnn.yaml", "plain_cnn.yaml", None, ["depth=4", "width=11"])],
    "netmorph": [("plain_cnn.yaml", "plain_cnn.yaml", None, ["depth=4", "width=11"])],
}


def grow(
    tmp_path: Path, case: tuple[str, str, list[str] | None, list[str] | None], **kw: Any
) -> tuple[ConvertResult, float]:
    """Convert a seeded teacher (non-trivial batchnorms); re-check rel_err independently."""
    teacher, student, t_set, s_set = case
    t_spec, s_spec = SPECS / teacher, SPECS / student
    ckpt = make_teacher(t_spec, t_set, out=tmp_path / "teacher.safetensors")
    out = tmp_path / "student.safetensors"
    result = convert(
        t_spec, s_spec, ckpt, out, teacher_set=t_set, student_set=s_set, samples=4, force=True, **kw
    )
    t_model = morphspec.load(t_spec, ckpt, set=t_set)
    s_model = morphspec.load(s_spec, out, set=s_set)
    arch = morphspec.resolve(morphspec.load_spec(t_spec, t_set))
    return result, compare(t_model, s_model, sample_inputs(arch, 4, seed=7)).rel_err


@pytest.mark.parametrize("family", EXACT)
@pytest.mark.parametrize("example", list(WIDEN))
def test_widen_is_exact(tmp_path: Path, family: str, example: str) -> None:
    result, rel_err = grow(tmp_path, WIDEN[example], family=family)
    assert result.plan.widens, "the case must widen something"
    assert rel_err <= 1e-5


@pytest.mark.parametrize(("family", "case"), [(f, c) for f, cs in DEEPEN.items() for c in cs])
def test_deepen_is_exact(tmp_path: Path, family: str, case: tuple[Any, ...]) -> None:
    result, rel_err = grow(tmp_path, case, family=family)
    assert result.plan.inserts
    assert rel_err <= 1e-5


def test_net2net_widens_by_copying_channels(tmp_path: Path) -> None:
    grow(tmp_path, WIDEN["mlp"], family="net2net")
    t, s = (
        read_tensors(tmp_path / "teacher.safetensors"),
        read_tensors(tmp_path / "student.safetensors"),
    )
    rows = s["fc1.weight"]
    for j in range(t["fc1.weight"].shape[0], rows.shape[0]):
        assert any(
            torch.equal(rows[j], t["fc1.weight"][c]) for c in range(t["fc1.weight"].shape[0])
        )
    # consumers: each group of copies sums to the teacher's column
    assert torch.allclose(s["fc2.weight"][:32].sum(1), t["fc2.weight"].sum(1), atol=1e-5)


def test_net2net_noise_splits_columns_and_stays_exact(tmp_path: Path) -> None:
    _, quiet = grow(tmp_path, WIDEN["mlp"], family="net2net")
    plain = read_tensors(tmp_path / "student.safetensors")["fc2.weight"]
    _, noisy_err = grow(tmp_path, WIDEN["mlp"], family="net2net", noise=0.1)
    noisy = read_tensors(tmp_path / "student.safetensors")["fc2.weight"]
    assert noisy_err <= 1e-5 and quiet <= 1e-5
    assert not torch.equal(noisy, plain)


def test_netmorph_zero_in_is_exact_and_zeroes_producers(tmp_path: Path) -> None:
    _, rel_err = grow(tmp_path, WIDEN["resnet_cifar"], family="netmorph", netmorph_zero="in")
    assert rel_err <= 1e-5
    s = read_tensors(tmp_path / "student.safetensors")
    assert torch.count_nonzero(s["layer1.0.conv1.weight"][5:]) == 0


def test_netmorph_zero_in_refuses_sigmoid(tmp_path: Path) -> None:
    text = (
        (SPECS / "mlp.yaml")
        .read_text()
        .replace("  - relu\n  - linear: {name: head", "  - sigmoid\n  - linear: {name: head")
    )
    (tmp_path / "s.yaml").write_text(text)
    case = (str(tmp_path / "s.yaml"), str(tmp_path / "s.yaml"), None, ["width=40"])
    with pytest.raises(PlanRefused, match=r"sigmoid 'fc2\.\d?'|sigmoid"):
        grow(tmp_path, case, family="netmorph", netmorph_zero="in")
    assert not (tmp_path / "student.safetensors").exists()


def test_kernel_morph_7_to_9_is_exact(tmp_path: Path) -> None:
    case = ("smallconv.yaml", "smallconv.yaml", None, ["kernel=9"])
    result, rel_err = grow(tmp_path, case, family="netmorph")
    assert [op.op for op in result.plan.ops] == ["grow_kernel"]
    assert rel_err <= 1e-5
    t, s = (
        read_tensors(tmp_path / "teacher.safetensors"),
        read_tensors(tmp_path / "student.safetensors"),
    )
    assert s["conv1.weight"].shape[-1] == 9
    assert torch.equal(s["conv1.weight"][:, :, 1:8, 1:8], t["conv1.weight"])
    assert torch.count_nonzero(s["conv1.weight"][:, :, 0]) == 0


@pytest.mark.parametrize("family", ["r2r", "net2net"])
def test_kernel_growth_refused_by_other_families(tmp_path: Path, family: str) -> None:
    with pytest.raises(PlanRefused, match="netmorph"):
        grow(tmp_path, ("smallconv.yaml", "smallconv.yaml", None, ["kernel=9"]), family=family)


@pytest.mark.parametrize("family", ["net2net", "netmorph"])
@pytest.mark.parametrize("case", DEEPEN["r2r"][:2])
def test_identity_families_deepen_residual_blocks(
    tmp_path: Path, family: str, case: tuple[Any, ...]
) -> None:
    """New residual blocks follow the shared residual rule (zero last-batchnorm gain, or
    a zero last layer), not Net2DeeperNet's identity layers, which would double x."""
    result, rel_err = grow(tmp_path, case, family=family)
    assert result.plan.inserts and rel_err <= 1e-5


def test_identity_deepen_refuses_tanh(tmp_path: Path) -> None:
    text = (SPECS / "plain_cnn.yaml").read_text().replace("        - relu\n", "        - tanh\n")
    (tmp_path / "t.yaml").write_text(text)
    case = (str(tmp_path / "t.yaml"), str(tmp_path / "t.yaml"), None, ["depth=3"])
    with pytest.raises(PlanRefused, match=r"features\.2\.2' is a tanh.*idempotent"):
        grow(tmp_path, case, family="net2net")


def test_randpad_reports_a_large_deviation_and_does_not_fail(tmp_path: Path) -> None:
    result, rel_err = grow(tmp_path, WIDEN["mlp"], family="randpad")
    assert result.written and result.verification is not None
    assert not result.verification.passed and rel_err > 0.05
    assert result.warnings


@pytest.mark.parametrize(
    "strategy", ["default_vt", "vt_constraint_old_shape", "vt_constraint_new_shape"]
)
def test_rescale_on_preact_hidden_widen_is_exact_with_the_table_variances(
    tmp_path: Path, strategy: str
) -> None:
    case = ("preact_resnet.yaml", "preact_resnet.yaml", ["L=1", "width=4"], ["L=1", "width=6"])
    result, rel_err = grow(tmp_path, case, rescale=strategy)
    assert rel_err <= 1e-5
    scales = {s.space: s for s in result.family.rescaler.scales}
    assert "layer1.0.conv1" in scales
    t, s = (
        read_tensors(tmp_path / "teacher.safetensors"),
        read_tensors(tmp_path / "student.safetensors"),
    )
    w1_old, w2_old = s["layer1.0.conv1.weight"][:4, :4], s["layer1.0.conv2.weight"][:4, :4]
    w1_t, w2_t = t["layer1.0.conv1.weight"], t["layer1.0.conv2.weight"]
    c_in_k2 = w1_t.shape[1] * 9
    h_t, h_new = 4, 6
    if strategy == "default_vt":
        assert torch.allclose(w1_old, w1_t)
        assert torch.allclose(w2_old, w2_t * math.sqrt(h_t / h_new))
    else:
        assert float(w1_old.double().var()) == pytest.approx(1 / c_in_k2, rel=1e-5)
        h = h_t if strategy == "vt_constraint_old_shape" else h_new
        assert float(w2_old.double().var()) == pytest.approx(1 / (h * 9), rel=1e-5)


def test_rescale_without_exact_compensation_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(PlanRefused, match="--allow-inexact"):
        grow(tmp_path, WIDEN["mlp"], rescale="default_vt")
    result, rel_err = grow(tmp_path, WIDEN["mlp"], rescale="default_vt", allow_inexact=True)
    assert result.written and result.warnings and rel_err > 1e-3


def test_rescale_refused_with_net2net(tmp_path: Path) -> None:
    with pytest.raises(PlanRefused, match="net2net"):
        grow(tmp_path, WIDEN["preact"], family="net2net", rescale="default_vt")


def test_families_command_prints_the_matrix() -> None:
    result = CliRunner().invoke(app, ["families", "--json"])
    assert result.exit_code == 0
    import json

    doc = json.loads(result.stdout)
    assert set(doc["families"]) == {"r2r", "net2net", "netmorph", "randpad", "ode-refine", "stack"}
    assert doc["families"]["net2net"]["preserves_parameters"] is False
    assert doc["families"]["netmorph"]["kernel_morph"] is True


def test_families_command_shows_every_word_at_80_columns() -> None:
    """No cell is cut ("activatio…"): each condition's every word is printed."""
    result = CliRunner().invoke(app, ["families"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.stdout
    words = set(re.findall(r"\S+", result.stdout.replace("│", " ")))
    for name, info in CATALOG.items():
        assert name in result.stdout
        for value in info.conditions.to_json().values():
            if isinstance(value, str):
                missing = [w for w in value.split() if w not in words]
                assert not missing, (name, missing)


def test_every_family_list_derives_from_the_catalog() -> None:
    assert list(FAMILIES) == list(CATALOG) == list(FAMILY_CONDITIONS)
    assert typing.get_args(typing.get_type_hints(GrowOptions)["family"]) == tuple(CATALOG)
    for name, info in CATALOG.items():
        assert FAMILIES[name].name == name and FAMILIES[name].exact == info.exact


INSERT_TEACHER = """morphspec: 1
name: t
vars: {w: 6}
input: {shape: [5]}
body:
  - linear: {name: fc1, out: w}
  - relu
  - linear: {name: fc2, out: w}
  - relu
  - linear: {name: head, out: 3}
"""


def _insert(tmp_path: Path, layers: str, w: int = 6) -> tuple[Any, ...]:
    """The teacher above and a student with `layers` inserted after fc1's relu."""
    (tmp_path / "t.yaml").write_text(INSERT_TEACHER)
    student = INSERT_TEACHER.replace(
        "  - relu\n  - linear: {name: fc2", layers + "  - linear: {name: fc2", 1
    )
    (tmp_path / "s.yaml").write_text(student.replace("name: t\n", "name: s\n"))
    return (str(tmp_path / "t.yaml"), str(tmp_path / "s.yaml"), None, [f"w={w}"])


@pytest.mark.parametrize("family", ["net2net", "netmorph"])
def test_named_layers_inserted_in_a_list_start_as_the_identity(tmp_path: Path, family: str) -> None:
    case = _insert(tmp_path, "  - relu\n  - linear: {name: extra, out: w}\n  - relu\n", w=9)
    result, rel_err = grow(tmp_path, case, family=family)
    assert [op.op for op in result.plan.ops if op.op != "widen"] == ["insert_layers"]
    assert rel_err <= 1e-5


def test_inserted_residual_block_is_exact_with_r2r(tmp_path: Path) -> None:
    block = (
        "  - relu\n  - residual: {name: extra, body: [{linear: {name: a, out: 4}}, relu,"
        " {linear: {name: b, out: w}}], post: relu}\n"
    )
    result, rel_err = grow(tmp_path, _insert(tmp_path, block), family="r2r")
    assert result.plan.inserted == ["extra"]
    assert rel_err <= 1e-5


def test_inserted_plain_layer_is_refused_by_r2r(tmp_path: Path) -> None:
    case = _insert(tmp_path, "  - relu\n  - linear: {name: extra, out: w}\n  - relu\n")
    with pytest.raises(PlanRefused, match=r"'extra' is a linear, not a residual"):
        grow(tmp_path, case, family="r2r")


def test_inserting_before_an_unnamed_layer_with_parameters_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(INSERT_TEACHER.replace("{name: fc2, out: w}", "{out: w}"))
    text = INSERT_TEACHER.replace("{name: fc2, out: w}", "{out: w}")
    text = text.replace(
        "  - relu\n  - linear: {out: w}",
        "  - relu\n  - identity: {name: x}\n  - linear: {out: w}",
        1,
    )
    (tmp_path / "s.yaml").write_text(text)
    case = (str(tmp_path / "t.yaml"), str(tmp_path / "s.yaml"), None, None)
    with pytest.raises(PlanRefused, match=r"layer '2' would become '3'.*give it a `name`"):
        grow(tmp_path, case, family="net2net")
