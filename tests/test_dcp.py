"""DCP checkpoints in and out of `morph convert`, with optimizer state: the DCP student
(model and optimizer) equals `morphspec.grow(..., optimizer=)` bit for bit, offline
optimizer state for safetensors teachers equals it too, and bad input is refused with
exit 1 and nothing written (a crafted `.metadata` is never unpickled)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from growth_helpers import write_spec
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from typer.testing import CliRunner

import morphspec
from morphspec.cli.app import app
from morphspec.convert import convert
from morphspec.distributed.metadata import quiet_single_process
from morphspec.errors import MorphError
from morphspec.verify import compare, sample_inputs

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MLP = """
morphspec: 1
name: mlp-bn
vars: {width: 6, depth: 1}
input: {shape: [5]}
blocks:
  res:
    residual:
      body: [linear: {name: a, out: 4}, relu, linear: {name: b, out: width}]
body:
  - linear: {name: fc1, out: width}
  - batchnorm: {name: bn, eps: 0.1}
  - relu
  - linear: {name: fc2, out: width}
  - relu
  - repeat: {name: blocks, times: depth, block: res}
  - linear: {name: head, out: 3}
"""
STUDENT = ["width=9", "depth=2"]
TOL = 1e-10


def _optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9)
    return torch.optim.Adagrad(params, lr=1e-2)


def _trained(spec: Path, optimizer: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = morphspec.build(spec).double().train()
    opt = _optimizer(optimizer, model.parameters())
    x = torch.randn(16, 5, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model, opt


def _save_dcp(folder: Path, model: nn.Module, opt: torch.optim.Optimizer | None) -> Path:
    msd, osd = get_state_dict(model, opt or [])
    state: dict[str, Any] = {"model": msd}
    if opt is not None:
        state["optim"] = osd
    with quiet_single_process():
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    return folder


def _load_dcp(folder: Path, spec: Path, optimizer: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """What a user does: build(S), an optimizer of the teacher's type, dcp.load, set."""
    student = morphspec.build(spec, set=STUDENT).double()
    opt = _optimizer(optimizer, student.parameters())
    msd, osd = get_state_dict(student, opt)
    with quiet_single_process():
        dcp.load({"model": msd, "optim": osd}, checkpoint_id=str(folder), no_dist=True)
    set_state_dict(student, opt, model_state_dict=msd, optim_state_dict=osd)
    return student, opt


def _assert_same(loaded: tuple[nn.Module, Any], grown: tuple[nn.Module, Any]) -> None:
    """Equal model and optimizer state; a new block's parameters have no state in
    `grow()`'s optimizer and the zero state torch's first step makes in the DCP's."""
    ma, oa = get_state_dict(*loaded)
    mb, ob = get_state_dict(*grown)
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert oa["param_groups"] == ob["param_groups"]
    assert set(ob["state"]) <= set(oa["state"])
    assert len(ob["state"]) > len(oa["state"]) // 2
    for fqn, entry in oa["state"].items():
        if fqn not in ob["state"]:
            assert fqn.startswith("blocks.1."), fqn
            assert all(float(v.abs().max()) == 0 for v in entry.values()), fqn
            continue
        assert entry.keys() == ob["state"][fqn].keys(), fqn
        for k, v in entry.items():
            assert torch.equal(v, ob["state"][fqn][k]), (fqn, k)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "mlp.yaml", MLP)


@pytest.mark.parametrize(("family", "optimizer"), [("r2r", "adamw"), ("net2net", "sgd")])
def test_dcp_student_equals_grow_with_optimizer(
    tmp_path: Path, spec: Path, family: str, optimizer: str
) -> None:
    teacher, opt = _trained(spec, optimizer)
    grown = morphspec.grow(teacher, spec, spec, student_set=STUDENT, optimizer=opt, family=family)
    assert grown.optimizer is not None
    t_dcp = _save_dcp(tmp_path / "teacher", teacher, opt)
    result = convert(spec, spec, t_dcp, to_dcp=tmp_path / "student", student_set=STUDENT,
                     family=family)  # fmt: skip
    assert result.verification is not None and result.verification.rel_err <= TOL
    _assert_same(_load_dcp(tmp_path / "student", spec, optimizer), (grown.student, grown.optimizer))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_dcp_student_is_exact_in_eval_and_train_mode(tmp_path: Path, spec: Path) -> None:
    teacher, opt = _trained(spec, "adamw")
    convert(spec, spec, _save_dcp(tmp_path / "t", teacher, opt), to_dcp=tmp_path / "s",
            student_set=STUDENT)  # fmt: skip
    student, _ = _load_dcp(tmp_path / "s", spec, "adamw")
    x = sample_inputs(morphspec.resolve(morphspec.load_spec(spec)), 16, 3).double()
    for mode in ("eval", "train"):
        v = compare(teacher, student, x, TOL, mode=mode)  # type: ignore[arg-type]
        assert v.rel_err <= TOL, (mode, v)


def test_dcp_teacher_to_safetensors_and_model_only(tmp_path: Path, spec: Path) -> None:
    teacher, _ = _trained(spec, "adamw")
    t_dcp = _save_dcp(tmp_path / "t", teacher, None)
    out = tmp_path / "s.safetensors"
    result = convert(spec, spec, t_dcp, out, student_set=STUDENT)
    assert result.verification is not None and result.verification.rel_err <= TOL
    grown = morphspec.grow(teacher, spec, spec, student_set=STUDENT)
    loaded = morphspec.load(spec, out, set=STUDENT, dtype=torch.float64)
    for k, v in grown.student.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    convert(spec, spec, t_dcp, to_dcp=tmp_path / "s_dcp", student_set=STUDENT)
    assert (tmp_path / "s_dcp" / ".metadata").is_file()


def test_optimizer_file_for_a_safetensors_teacher(tmp_path: Path, spec: Path) -> None:
    teacher, opt = _trained(spec, "adamw")
    grown = morphspec.grow(teacher, spec, spec, student_set=STUDENT, optimizer=opt)
    ckpt = morphspec.save(teacher, tmp_path / "t.safetensors", spec)
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    out = tmp_path / "s_optimizer.pt"
    convert(spec, spec, ckpt, tmp_path / "s.safetensors", student_set=STUDENT,
            optimizer_state=tmp_path / "optimizer.pt", optimizer_out=out)  # fmt: skip
    state = torch.load(out, weights_only=True)
    assert grown.optimizer_state is not None
    assert state["param_groups"] == grown.optimizer_state["param_groups"]
    assert state["state"].keys() == grown.optimizer_state["state"].keys()
    for i, entry in grown.optimizer_state["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, state["state"][i][k]), (i, k)
    # the same state from a DCP folder (model and optimizer of a DCP save), into DCP
    t_dcp = _save_dcp(tmp_path / "t_dcp", teacher, opt)
    convert(spec, spec, ckpt, tmp_path / "s2.safetensors", student_set=STUDENT,
            optimizer_state=t_dcp, optimizer_out=tmp_path / "s_optim_dcp")  # fmt: skip
    student = morphspec.build(spec, set=STUDENT).double()
    s_opt = _optimizer("adamw", student.parameters())
    _, osd = get_state_dict(student, s_opt)
    with quiet_single_process():
        dcp.load({"optim": osd}, checkpoint_id=str(tmp_path / "s_optim_dcp"), no_dist=True)
    for fqn, entry in get_state_dict(grown.student, grown.optimizer)[1]["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, osd["state"][fqn][k]), (fqn, k)


# -- refusals ----------------------------------------------------------------------------


def _cli(*args: Any) -> Any:
    return CliRunner().invoke(app, ["convert", *map(str, args)], env={"NO_COLOR": "1"})


def _refused(tmp_path: Path, *args: Any, match: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    r = _cli(*args)
    assert r.exit_code == 1, r.output
    assert match in r.output, r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_refuses_a_dcp_folder_without_model(tmp_path: Path, spec: Path) -> None:
    teacher, opt = _trained(spec, "adamw")
    _, osd = get_state_dict(teacher, opt)
    with quiet_single_process():
        dcp.save({"optim": osd}, checkpoint_id=str(tmp_path / "t"), no_dist=True)
    _refused(tmp_path, spec, spec, tmp_path / "t", "--to-dcp", tmp_path / "s",
             match="holds no model tensors")  # fmt: skip


def test_refuses_keys_of_another_model(tmp_path: Path, spec: Path) -> None:
    other = write_spec(tmp_path / "other.yaml", MLP.replace("fc2", "mid").replace("head", "out"))
    teacher, _ = _trained(other, "adamw")
    _save_dcp(tmp_path / "t", teacher, None)
    _refused(tmp_path, spec, spec, tmp_path / "t", "--to-dcp", tmp_path / "s",
             match="missing key 'fc2.bias'")  # fmt: skip


def test_refuses_state_of_another_optimizer_or_model(tmp_path: Path, spec: Path) -> None:
    teacher, opt = _trained(spec, "adagrad")
    _save_dcp(tmp_path / "t", teacher, opt)
    _refused(tmp_path, spec, spec, tmp_path / "t", "--to-dcp", tmp_path / "s",
             "--student-set", "width=9", match="not state of torch's Adam")  # fmt: skip
    small = write_spec(tmp_path / "small.yaml", "morphspec: 1\nname: s\ninput: {shape: [5]}\n"
                       "body: [linear: {name: fc, out: 3}]\n")  # fmt: skip
    _, other_opt = _trained(small, "adamw")
    torch.save(other_opt.state_dict(), tmp_path / "other.pt")
    ckpt = morphspec.save(teacher, tmp_path / "t.safetensors", spec)
    _refused(tmp_path, spec, spec, ckpt, "-o", tmp_path / "s.safetensors",
             "--student-set", "width=9", "--optimizer-state", tmp_path / "other.pt",
             "--optimizer-out", tmp_path / "o.pt",
             match="for 2 parameters but the teacher spec has 12")  # fmt: skip


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def test_a_crafted_metadata_is_never_unpickled(tmp_path: Path, spec: Path) -> None:
    teacher, _ = _trained(spec, "adamw")
    folder = _save_dcp(tmp_path / "t", teacher, None)
    (folder / ".metadata").write_bytes(pickle.dumps(_Boom()))
    _refused(tmp_path, spec, spec, folder, "--to-dcp", tmp_path / "s",
             match="it names posix.system")  # fmt: skip
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_refuses_pickled_objects_in_an_optimizer_file(tmp_path: Path, spec: Path) -> None:
    teacher, _ = _trained(spec, "adamw")
    ckpt = morphspec.save(teacher, tmp_path / "t.safetensors", spec)
    torch.save({"state": {}, "param_groups": [_Boom()]}, tmp_path / "bad.pt")
    _refused(tmp_path, spec, spec, ckpt, "-o", tmp_path / "s.safetensors",
             "--optimizer-state", tmp_path / "bad.pt", "--optimizer-out", tmp_path / "o.pt",
             match="never unpickles")  # fmt: skip


def test_optimizer_options_need_each_other(spec: Path, tmp_path: Path) -> None:
    teacher, _ = _trained(spec, "adamw")
    ckpt = morphspec.save(teacher, tmp_path / "t.safetensors", spec)
    with pytest.raises(MorphError, match="needs the teacher's optimizer state"):
        convert(spec, spec, ckpt, tmp_path / "s.safetensors", optimizer_out=tmp_path / "o.pt")
    with pytest.raises(MorphError, match="needs --to-dcp or --optimizer-out"):
        convert(spec, spec, ckpt, tmp_path / "s.safetensors", optimizer_state=ckpt)
