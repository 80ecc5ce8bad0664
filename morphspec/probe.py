"""How far each residual block moves the data, and how deep each section should be.

Hauser's perturbation study: for a block taking x_l to x_{l+1}, `abs` is the sample mean of
‖x_{l+1} − x_l‖₂ and `scaled` the sample mean of ‖x_{l+1} − x_l‖₂ / ‖x_l‖₂. A *section* is
a run of blocks whose output feeds the next block directly (so all share one shape); its
`distance` d = Σ abs, `scaled_distance` d_s = Σ scaled, `mean_scaled` = d_s / L, and the
depth rule `recommended_blocks = max(L, ceil(d_s / ε))`: if d_s stays put as the section
deepens (the paper measures it saturating), that many blocks bring the mean scaled
perturbation to ε or below. The clamp keeps the rule from ever proposing to remove blocks,
which growth cannot do.

Where the probe measures is data, per layer kind (`POINTS`): a residual is one `Point`. A
kind whose steps should be probed one by one (the reversible units, once they can be built)
registers a function that returns one Point per step, each naming the submodule whose input
and output are that step's state. Everything up to the measurement is torch-free.

This module is imported by `import morphspec` (which binds `morphspec.probe` to the function
below), so it must not import torch at module level; use `from morphspec.probe import ...`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morphspec.arch import Arch, Node, resolve
from morphspec.errors import ArgumentError, MorphError
from morphspec.spec import Spec, load_spec
from morphspec.spec.load import SetArg

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEFAULT_EPSILON",
    "POINTS",
    "BlockStat",
    "Point",
    "ProbeReport",
    "Section",
    "SectionStat",
    "find_sections",
    "probe",
    "recommended_blocks",
]

DEFAULT_EPSILON = 0.1
TRANSPARENT = frozenset({"identity", "dropout"})  # x in, x out in eval mode: no barrier


@dataclass(frozen=True)
class Point:
    """Where one block is measured: x_l is the input of module `enter`; x_{l+1} is the output
    of module `leave`, or its input when `leave_input` (a residual whose `post` is itself a
    residual, as in a transformer block, is measured up to its sum)."""

    path: str
    enter: str
    leave: str
    leave_input: bool = False


Item = Point | None  # None: something that is not a block stands between two blocks
PointsFn = Callable[[Node, list[list[Item]]], Iterator[Item]]


def _stream(node: Node, nested: list[list[Item]]) -> Iterator[Item]:
    """The blocks of `node` in forward order, None where the data passes something else;
    streams inside a block (a residual inside a residual's body) are appended to `nested`."""
    if node.kind in ("sequential", "repeat"):
        for child in node.children:
            yield from _stream(child, nested)
    elif node.kind in POINTS:
        yield from POINTS[node.kind](node, nested)
    elif node.kind not in TRANSPARENT:
        yield None


def _chain(nodes: Sequence[Node], nested: list[list[Item]]) -> list[Item]:
    return [item for n in nodes for item in _stream(n, nested)]


def _residual_points(node: Node, nested: list[list[Item]]) -> Iterator[Item]:
    """x_l is the residual's input; x_{l+1} its output after `post`, except that a residual
    inside `post` is a block of its own: the point then ends at the sum, and the post's
    residuals continue the same stream."""
    nested.append(_chain(node.children, nested))
    if node.shortcut is not None:
        nested.append(_chain(node.shortcut.children, nested))
    cut = next((i for i, p in enumerate(node.post) if p.kind == "residual"), len(node.post))
    head, rest = node.post[:cut], node.post[cut:]
    for p in head:
        nested.append(_chain([p], nested))
    reached = head[-1].out if head else node.children[-1].out
    if reached != node.inp:
        yield None  # a block that changes the shape starts a new section
    elif rest:
        yield Point(node.path, node.path, head[-1].path if head else rest[0].path, not head)
    else:
        yield Point(node.path, node.path, node.path)
    for p in rest:
        yield from _stream(p, nested)


POINTS: dict[str, PointsFn] = {"residual": _residual_points}


@dataclass(frozen=True)
class Section:
    """A run of blocks; `repeat` is the repeat whose next copies would extend it (None when
    no repeat does), each copy adding `per_copy` blocks."""

    name: str
    points: tuple[Point, ...]
    repeat: str | None = None
    per_copy: int = 0


def find_sections(arch: Arch) -> list[Section]:
    """The sections of `arch` in forward order (torch-free; see docs/probe.md)."""
    nested: list[list[Item]] = []
    streams = [list(_stream(arch.root, nested)), *nested]
    runs: list[list[Point]] = []
    for stream in streams:
        run: list[Point] = []
        for item in [*stream, None]:
            if item is None:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append(item)
    order = {n.path: i for i, n in enumerate(arch.nodes())}
    runs.sort(key=lambda r: order[r[0].path])
    everywhere = {p.path for r in runs for p in r}
    owners = [_innermost_repeat(arch, [p.path for p in r]) for r in runs]
    sections = []
    for run, owner in zip(runs, owners, strict=True):
        paths = [p.path for p in run]
        own = owner is not None and owners.count(owner) == 1
        name = (
            owner.path
            if own and owner
            else paths[0]
            if len(run) == 1
            else f"{paths[0]}..{paths[-1]}"
        )
        repeat, per_copy = None, 0
        if own and owner is not None:
            last = f"{owner.path}.{owner.args['times'] - 1}"
            in_last = {q for q in everywhere if _under(q, last)}
            if in_last and in_last <= set(paths) and _under(paths[-1], last):
                repeat, per_copy = owner.path, len(in_last)
        sections.append(Section(name, tuple(run), repeat, per_copy))
    return sections


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _innermost_repeat(arch: Arch, paths: list[str]) -> Node | None:
    inside = [
        n for n in arch.nodes()
        if n.kind == "repeat" and all(p.startswith(n.path + ".") for p in paths)
    ]  # fmt: skip
    return max(inside, key=lambda n: len(n.path), default=None)


def recommended_blocks(scaled_distance: float, epsilon: float, blocks: int) -> int:
    """`max(blocks, ceil(d_s / ε))`; the quotient is rounded to 9 decimals first, so that a
    sum such as 0.1 + 0.2 over ε = 0.1 gives 3 and not 4."""
    if not math.isfinite(scaled_distance):
        return blocks
    return max(blocks, math.ceil(round(scaled_distance / epsilon, 9)))


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStat:
    path: str
    section: str
    abs: float
    scaled: float


@dataclass(frozen=True)
class SectionStat:
    name: str
    blocks: int
    distance: float
    scaled_distance: float
    mean_scaled: float
    recommended_blocks: int
    perturbation_from_identity: bool


@dataclass(frozen=True)
class ProbeReport:
    """What `probe` measured; `to_json()` is exactly `{"blocks": [...], "sections": [...]}`."""

    blocks: list[BlockStat]
    sections: list[SectionStat]
    epsilon: float
    samples: int
    arch: Arch = field(repr=False)
    layout: list[Section] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"blocks": [asdict(b) for b in self.blocks],
                "sections": [asdict(s) for s in self.sections]}  # fmt: skip


def _report(
    arch: Arch, layout: list[Section], sums: dict[str, list[float]], n: int, epsilon: float
) -> ProbeReport:
    blocks: list[BlockStat] = []
    sections: list[SectionStat] = []
    for sec in layout:
        stats = [BlockStat(p.path, sec.name, sums[p.path][0] / n, sums[p.path][1] / n)
                 for p in sec.points]  # fmt: skip
        blocks += stats
        d = math.fsum(b.abs for b in stats)
        ds = math.fsum(b.scaled for b in stats)
        mean = ds / len(stats)
        sections.append(SectionStat(
            sec.name, len(stats), d, ds, mean, recommended_blocks(ds, epsilon, len(stats)),
            mean < epsilon,
        ))  # fmt: skip
    return ProbeReport(blocks, sections, epsilon, n, arch, layout)


# -- measuring --------------------------------------------------------------------------------


def _arch_of(spec: Spec | Arch | str | Path, set: SetArg) -> Arch:
    if isinstance(spec, Arch):
        return spec
    return resolve(spec if isinstance(spec, Spec) else load_spec(spec, set))


def probe(
    model_or_spec: nn.Module | Spec | Arch | str | Path,
    checkpoint: str | Path | None = None,
    *,
    spec: Spec | Arch | str | Path | None = None,
    inputs: torch.Tensor | str | Path | None = None,
    samples: int | None = None,
    seed: int = 0,
    epsilon: float = DEFAULT_EPSILON,
    batch: int = 64,
    set: SetArg = None,
) -> ProbeReport:
    """Measure every block of a model in eval mode and apply the depth rule per section.

    Give a spec (path, Spec or Arch) with its `checkpoint` (random weights without one), or
    a built model with `spec=` (the blocks are found from the spec; a model in training mode
    is put back in it afterwards). `inputs` is a tensor or a safetensors file holding tensor
    `inputs` of shape [N, *input shape]; without it, `samples` (256) seeded random inputs as
    `morph verify` draws them. Only running sums are kept, so memory is one batch's.
    """
    from torch import nn

    from morphspec.arguments import check_samples, check_teacher
    from morphspec.probe_inputs import probe_inputs

    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ArgumentError(f"epsilon must be a positive number, got {epsilon}")
    for name, value in (("batch", batch), ("samples", 1 if samples is None else samples)):
        check_samples(value, name)
    if isinstance(model_or_spec, nn.Module):
        if spec is None:
            raise MorphError(
                "probe(model) needs spec= (the model's spec or Arch) to find its blocks"
            )
        arch, model = _arch_of(spec, set), model_or_spec
        check_teacher(model, "model")  # not on the meta device
    else:
        from morphspec.api import build, load

        arch = _arch_of(model_or_spec, set)
        model = load(arch, checkpoint) if checkpoint is not None else build(arch)
    layout = find_sections(arch)
    if not layout:
        raise MorphError(
            f"spec '{arch.name}' has no residual block whose output keeps its input's shape;"
            " there is nothing to probe",
            arch.spec.mark(("body",)),
        )
    data = probe_inputs(arch, inputs, samples, seed)
    sums = _measure(model, [p for s in layout for p in s.points], data, batch)
    return _report(arch, layout, sums, int(data.shape[0]), float(epsilon))


def _measure(
    model: nn.Module, points: list[Point], data: torch.Tensor, batch: int
) -> dict[str, list[float]]:
    """Run `data` through `model` in batches; per point, Σ‖y−x‖ and Σ‖y−x‖/‖x‖ over samples."""
    import torch

    sums = {p.path: [0.0, 0.0] for p in points}
    entered: dict[str, torch.Tensor] = {}
    handles = []

    def module(path: str) -> nn.Module:
        try:
            return model.get_submodule(path)
        except AttributeError:
            raise MorphError(
                f"the model has no module '{path}'; probe a model built from its spec"
            ) from None

    def add(path: str, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.detach().flatten(1).double(), y.detach().flatten(1).double()
        moved, size = (y - x).norm(dim=1), x.norm(dim=1)
        still = torch.where(moved > 0, torch.inf, 0.0).to(moved)
        scaled = torch.where(size > 0, moved / size.clamp_min(1e-300), still)
        sums[path][0] += float(moved.sum())
        sums[path][1] += float(scaled.sum())

    for p in points:

        def enter(_: nn.Module, args: tuple[Any, ...], p: Point = p) -> None:
            entered[p.path] = args[0]

        def leave_in(_: nn.Module, args: tuple[Any, ...], p: Point = p) -> None:
            add(p.path, entered.pop(p.path), args[0])

        def leave_out(_: nn.Module, args: tuple[Any, ...], out: Any, p: Point = p) -> None:
            add(p.path, entered.pop(p.path), out)

        handles.append(module(p.enter).register_forward_pre_hook(enter))
        target = module(p.leave)
        handles.append(
            target.register_forward_pre_hook(leave_in)
            if p.leave_input
            else target.register_forward_hook(leave_out)
        )
    was_training = model.training
    param = next(model.parameters(), None)
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, int(data.shape[0]), batch):
                x = data[start : start + batch]
                if param is not None:
                    x = x.to(param.device, param.dtype if x.is_floating_point() else x.dtype)
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums
