"""How far each residual block moves the data, and how deep each section should be.

Hauser's perturbation study: for a block taking x_l to x_{l+1}, `abs` is the sample mean of
‖x_{l+1} − x_l‖₂ and `scaled` the sample mean of ‖x_{l+1} − x_l‖₂ / ‖x_l‖₂. A *section* is
a run of blocks whose output feeds the next block directly (so all share one shape); its
`distance` d = Σ abs, `scaled_distance` d_s = Σ scaled, `mean_scaled` = d_s / L, and the
depth rule `recommended_blocks = max(L, ceil(d_s / ε))`: if d_s stays put as the section
deepens (the paper measures it saturating), that many blocks bring the mean scaled
perturbation to ε or below. The clamp keeps the rule from ever proposing to remove blocks,
which growth cannot do.

Where the probe measures (`find_sections`, `POINTS`) is in probe_sections.py. Everything
up to the measurement is torch-free.

This module is imported by `import morphspec` (which binds `morphspec.probe` to the function
below), so it must not import torch at module level; use `from morphspec.probe import ...`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morphspec.arch import Arch, resolve
from morphspec.errors import ArgumentError, MorphError
from morphspec.probe_sections import POINTS, Point, Section, find_sections
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
