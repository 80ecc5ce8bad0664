"""Property: every exact family, with every rescale strategy, on random specs and growths,
either refuses before writing anything or produces a student within tolerance (issue 4).

The specs and growths are those of `test_growth_property` (MLPs, CNNs, ResNets; widths,
odd counts, repeat counts). Refusals are legitimate (Net2DeeperNet on residual blocks, a
rescale with no exact compensation); hypothesis' statistics show how often each happens.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from growth_helpers import make_teacher, one_intraop_thread
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_growth_property import Case, cases

from morphspec.convert import convert
from morphspec.errors import PlanRefused

RESCALES = ["none", "default_vt", "vt_constraint_old_shape", "vt_constraint_new_shape"]
# A refusal passes one example, so a change that refused almost everything would pass them
# all: at least this share of the generated cases must convert. 134 of 200 do (measured on
# the 200 derandomized examples); a quarter leaves room for new legitimate refusals.
MIN_CONVERTED = 0.25
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_intraop_thread():
        yield


@st.composite
def options(draw: st.DrawFn) -> dict[str, object]:
    family = draw(st.sampled_from(["r2r", "net2net", "netmorph"]))
    opts: dict[str, object] = {"family": family, "seed": draw(st.integers(0, 3))}
    if family != "net2net":
        opts["rescale"] = draw(st.sampled_from(RESCALES))
    if family == "netmorph":
        opts["netmorph_zero"] = draw(st.sampled_from(["out", "in"]))
    if draw(st.booleans()):
        opts["noise"] = draw(st.sampled_from([0.01, 0.1, 0.5]))
    return opts


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases(), opts=options())
def _exact_or_refused(case: Case, opts: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher, student = tmp / "teacher.yaml", tmp / "student.yaml"
        teacher.write_text(case.yaml("teacher", case.teacher), encoding="utf-8")
        student.write_text(case.yaml("student", case.student), encoding="utf-8")
        ckpt = make_teacher(teacher, out=tmp / "teacher.safetensors")
        out = tmp / "student.safetensors"
        label = f"{opts['family']} rescale={opts.get('rescale', 'none')}"
        try:
            result = convert(teacher, student, ckpt, out, samples=8, **opts)  # type: ignore[arg-type]
        except PlanRefused:
            assert not out.exists()
            assert [p.name for p in tmp.iterdir()] != [] and not list(tmp.glob(".*unverified"))
            event(f"{label}: refused")
            OUTCOMES["refused"] += 1
            return
        assert result.verification is not None
        assert result.verification.rel_err <= 1e-5, (opts, result.verification)
        event(f"{label}: exact")
        OUTCOMES["converted"] += 1


def test_exact_families_never_exceed_the_tolerance() -> None:
    OUTCOMES.clear()
    _exact_or_refused()
    total = sum(OUTCOMES.values())
    print(f"converted {OUTCOMES['converted']} of {total}")
    assert total >= 100, OUTCOMES
    assert OUTCOMES["converted"] >= MIN_CONVERTED * total, (
        f"only {OUTCOMES['converted']} of {total} cases converted; the rest were refused"
    )
