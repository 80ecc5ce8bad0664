"""What `morph convert` adds for distributed training: DCP out, and optimizer state.

- `--to-dcp DIR`: the student as a DCP directory (`dcp_write.py`), with the grown optimizer
  state when the teacher has one (a DCP teacher's own `optim`, or `--optimizer-state`).
- `--optimizer-state FILE` (safetensors and HF teachers): a DCP directory, or a torch
  `optimizer.state_dict()` file (HF Trainer's `optimizer.pt`) read with
  `torch.load(weights_only=True)`. Its integer parameter indices are the teacher's
  parameters in the spec's build order (`model.parameters()`, one group or groups that
  list them in that order); every state shape is checked against its parameter.
- `--optimizer-out PATH`: the grown state in the input's format: a torch file (indices in
  the student's build order) for a torch file, a DCP directory (`optim` only) otherwise.

Staging and commit are in `staged_dcp` and `stage_optimizer_out` only, so they can move to
the shared output module without touching the rest.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from morphspec.arch import Arch
from morphspec.checkpoint.output import (
    check_folder_target,
    check_target,
    commit,
    commit_folder,
    staging_file,
    staging_folder,
)
from morphspec.checkpoint.reader import CheckpointReader
from morphspec.checkpoint.writer import TensorEntry
from morphspec.distributed.optim_state import (
    GrownOptimizer,
    InMemoryState,
    MomentEntry,
    StateSource,
    check_state,
    grow_optimizer_state,
)  # fmt: skip
from morphspec.errors import CheckpointError, Mark, MorphError
from morphspec.growth.families import Family

__all__ = [
    "DistributedOutput",
    "TorchFileState",
    "grown_optimizer",
    "param_shapes",
    "stage_optimizer_out",
    "staged_dcp",
    "teacher_optimizer",
]


def param_shapes(arch: Arch) -> list[tuple[str, tuple[int, ...]]]:
    """The spec's parameters in build order (what `model.parameters()` yields), built on
    the meta device so no memory is used."""
    from morphspec.builder import build_arch

    with torch.device("meta"):
        model = build_arch(arch)
    return [(n, tuple(int(d) for d in p.shape)) for n, p in model.named_parameters()]


class TorchFileState(InMemoryState):
    """An `optimizer.state_dict()` file, loaded with `weights_only=True`, in names."""

    def __init__(self, path: Path, teacher: Sequence[tuple[str, tuple[int, ...]]]) -> None:
        mark = Mark(str(path))
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).splitlines()[0]
            raise CheckpointError(
                f"the optimizer file holds more than plain tensors and numbers ({first}); morph"
                " never unpickles objects: save optimizer.state_dict() itself",
                mark,
            ) from None
        except (OSError, RuntimeError, EOFError) as e:
            raise CheckpointError(f"cannot read the optimizer file ({e})", mark) from None
        groups = sd.get("param_groups") if isinstance(sd, dict) else None
        state = sd.get("state") if isinstance(sd, dict) else None
        if not isinstance(groups, list) or not isinstance(state, dict):
            raise CheckpointError(
                "not an optimizer state_dict (it needs 'state' and 'param_groups')", mark
            )
        indices = [i for g in groups for i in g.get("params", [])]
        if len(indices) != len(teacher) or sorted(indices) != list(range(len(teacher))):
            raise CheckpointError(
                f"the optimizer state is for {len(indices)} parameters but the teacher spec"
                f" has {len(teacher)}; pass the optimizer state saved with this checkpoint",
                mark,
            )
        names = [n for n, _ in teacher]
        super().__init__(
            {names[int(i)]: v for i, v in state.items()},
            [
                {**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in ps]}
                for g in groups
                for ps in [g["params"]]
            ],
        )


@dataclass
class OptimizerInput:
    source: StateSource
    path: Path
    torch_file: bool


def teacher_optimizer(
    reader: Any, optimizer_state: str | Path | None, teacher: Arch
) -> OptimizerInput | None:
    """The teacher's optimizer state, checked against the teacher spec: `--optimizer-state`,
    else a DCP teacher's own, else None."""
    from morphspec.distributed.dcp_source import DCPSource

    shapes = param_shapes(teacher)
    if optimizer_state is not None:
        path = Path(optimizer_state)
        if path.is_dir() and (path / ".metadata").is_file():
            view = DCPSource.optimizer_only(path)
            result = OptimizerInput(view, path, False)
        elif path.is_file():
            result = OptimizerInput(TorchFileState(path, shapes), path, True)
        else:
            raise MorphError(
                "--optimizer-state must be a DCP directory or an optimizer.state_dict() file",
                Mark(str(path)),
            )
    elif isinstance(reader, DCPSource) and (own := reader.optimizer()) is not None:
        result = OptimizerInput(own, reader.folder, False)
    else:
        return None
    check_state(result.source, dict(shapes), result.path)
    return result


def grown_optimizer(family: Family, given: OptimizerInput, dcp_out: bool) -> GrownOptimizer:
    """The grown state; for a DCP output, new parameters get torch's zero state (a DCP
    load asks for every parameter's state)."""
    plan = family.plan
    return grow_optimizer_state(
        family,
        given.source,
        dict(param_shapes(plan.teacher)),
        param_shapes(plan.student),
        fill_new=dcp_out,
    )


@contextlib.contextmanager
def staged_dcp(out: Path) -> Iterator[tuple[Path, Any]]:
    """A staging folder for `out` and the function that commits it whole."""
    with staging_folder(out) as staging:

        def commit_dcp() -> None:
            commit_folder(staging, out)

        yield staging, commit_dcp


@contextlib.contextmanager
def stage_optimizer_out(
    out: Path, grown: GrownOptimizer, given: OptimizerInput, force: bool
) -> Iterator[Any]:
    """Write the grown state beside `out` and give the function that commits it."""
    if given.torch_file:
        with staging_file(out) as staged:
            torch.save(_indexed(grown), staged)
            yield lambda: commit(staged, out)
        return
    from morphspec.distributed.dcp_write import write_dcp

    with staged_dcp(out) as (staging, commit_dcp):
        write_dcp(staging, [], grown)
        yield commit_dcp


def _indexed(grown: GrownOptimizer) -> dict[str, Any]:
    """torch's own state_dict layout: parameters numbered over the groups in order."""
    order = [n for g in grown.param_groups for n in g["params"]]
    index = {n: i for i, n in enumerate(order)}
    state = {
        index[fqn]: {k: v.produce() if isinstance(v, MomentEntry) else v for k, v in e.items()}
        for fqn, e in grown.state.items()
    }
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in grown.param_groups]
    return {"state": state, "param_groups": groups}


class DistributedOutput:
    """What `convert` does for --to-dcp, --optimizer-state and --optimizer-out; each step
    is a no-op when its option is absent, so `convert` calls them unconditionally."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.given: OptimizerInput | None = None
        self.opt_out: Path | None = None
        self._grown: GrownOptimizer | None = None
        self._commit: Any = None
        self._commit_opt: Any = None

    @classmethod
    def check(
        cls,
        reader: CheckpointReader,
        out: Path,
        force: bool,
        to_dcp: str | Path | None,
        optimizer_state: str | Path | None,
        optimizer_out: str | Path | None,
        teacher: Arch,
    ) -> DistributedOutput:
        """Every refusal before a tensor moves: targets, and the optimizer state."""
        d = cls(force)
        inputs = [*reader.paths, *(Path(f) for f in teacher.spec.files)]
        if optimizer_state is not None:
            inputs.append(Path(optimizer_state))
            if to_dcp is None and optimizer_out is None:
                raise MorphError(
                    "--optimizer-state needs --to-dcp or --optimizer-out (where the grown state"
                    " goes)",
                    Mark(str(optimizer_state)),
                )
        named = [(p, "an input of this command") for p in inputs]
        if to_dcp is not None:
            check_folder_target(out, force=force, inputs=named)
        if to_dcp is not None or optimizer_out is not None:
            d.given = teacher_optimizer(reader, optimizer_state, teacher)
        if optimizer_out is not None:
            d.opt_out = Path(optimizer_out)
            where = Mark(str(d.opt_out))
            if d.given is None:
                raise MorphError(
                    "--optimizer-out needs the teacher's optimizer state: pass"
                    " --optimizer-state (a DCP teacher saved with its optimizer has it)",
                    where,
                )
            if not d.opt_out.parent.is_dir():
                raise MorphError(
                    f"the output folder {d.opt_out.parent} does not exist; create it first", where
                )
            if d.opt_out.resolve() == out.resolve():
                raise MorphError(
                    "--optimizer-out names the student's output; choose another", where
                )
            if d.given.torch_file:
                check_target(d.opt_out, force=force, inputs=named)
            else:
                check_folder_target(d.opt_out, force=force, inputs=named)
        return d

    def grown(self, family: Family) -> GrownOptimizer | None:
        if self.given is not None and self._grown is None:
            self._grown = grown_optimizer(family, self.given, not self.given.torch_file)
        return self._grown

    @contextlib.contextmanager
    def staged_model(self, out: Path) -> Iterator[Path]:
        with staged_dcp(out) as (staging, commit_dcp):
            self._commit = commit_dcp
            yield staging

    def write_model(
        self,
        staging: Path,
        family: Family,
        entries: Sequence[TensorEntry],
        progress: Any,
        ranks: Any = None,
    ) -> None:
        """Write the student (and grown state) as DCP; under torchrun, this rank's share
        of the tensors (`ranks.share`), rank 0 adding the optimizer's param_groups."""
        from morphspec.distributed.dcp_write import write_dcp

        grown = self.grown(family)
        if ranks is not None:
            entries = ranks.share(list(entries), [e.nbytes for e in entries])
            if grown is not None:
                fqns = list(grown.state)
                sizes = [sum(v.nbytes for v in grown.state[f].values()
                             if isinstance(v, MomentEntry)) for f in fqns]  # fmt: skip
                mine = ranks.share(fqns, sizes)
                grown = GrownOptimizer({f: grown.state[f] for f in mine}, grown.param_groups)
        write_dcp(staging, entries, grown, progress=progress, distributed=ranks is not None,
                  groups=ranks is None or ranks.leader)  # fmt: skip

    @contextlib.contextmanager
    def optimizer_out(self, family: Family) -> Iterator[None]:
        grown = self.grown(family) if self.opt_out is not None else None
        if self.opt_out is None or grown is None or self.given is None:
            yield
            return
        with stage_optimizer_out(self.opt_out, grown, self.given, self.force) as commit_opt:
            self._commit_opt = commit_opt
            yield

    def commit(self) -> None:
        self._commit()

    def commit_optimizer(self) -> None:
        if self._commit_opt is not None:
            self._commit_opt()
