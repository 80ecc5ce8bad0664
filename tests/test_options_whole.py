"""Options are passed whole (issue 17): GrowOptions with a nested verify group, flat names
on the command line and as keywords, and every option recorded in the student's header
from the dataclass itself."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from growth_helpers import make_teacher
from safetensors import safe_open

from morphspec.convert import convert
from morphspec.growth.options import GrowOptions, VerifyOptions, option_infos

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"


def test_flat_names_reach_the_nested_group() -> None:
    opts = GrowOptions().with_values(rtol=1e-7, samples=5, seed=3)
    assert opts.verify == VerifyOptions(rtol=1e-7, samples=5) and opts.seed == 3
    assert (opts.rtol, opts.samples) == (1e-7, 5)
    assert list(option_infos()) == list(opts.flat())
    assert {"rtol", "samples", "family", "interleave"} <= set(opts.flat())
    with pytest.raises(TypeError):
        GrowOptions().with_values(no_such_option=1)


def test_every_option_is_in_the_header(tmp_path: Path) -> None:
    teacher = make_teacher(SPECS / "mlp.yaml", out=tmp_path / "t.safetensors")
    opts = GrowOptions(family="netmorph", noise=0.25).with_values(samples=8)
    out = tmp_path / "s.safetensors"
    convert(SPECS / "mlp.yaml", SPECS / "mlp_wide.yaml", teacher, out, options=opts)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    recorded = {k.removeprefix("morphspec."): v for k, v in meta.items()}
    for name, value in opts.flat().items():
        assert recorded[name] == (value if isinstance(value, str) else json.dumps(value)), name
    assert recorded["noise"] == "0.25" and recorded["samples"] == "8"
    assert recorded["family"] == "netmorph" and recorded["interleave"] == "false"
    assert len(fields(GrowOptions)) + len(fields(VerifyOptions)) - 1 == len(opts.flat())
