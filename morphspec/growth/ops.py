"""The typed operations a Plan lists: plain frozen data, printable and JSON-able."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from morphspec.growth.steps import AddSteps

__all__ = [
    "AddExperts", "AddProjection", "AddSteps", "GrowKernel", "InsertBlocks", "InsertLayers",
    "InterleaveBlocks", "Op", "PlanRow", "WidenSpace",
]  # fmt: skip


@dataclass(frozen=True)
class WidenSpace:
    """Widen one channel space from `old` to `new` channels: `pairs` (L, R) pairs, then
    `odd` (0 or 1) unpaired channel."""

    space: str
    old: int
    new: int
    pairs: int
    odd: int
    edges: tuple[str, ...]
    op: str = "widen"


@dataclass(frozen=True)
class InsertBlocks:
    """Append copies `old_times ... new_times-1` to the repeat at `repeat`."""

    repeat: str
    old_times: int
    new_times: int
    blocks: tuple[str, ...]
    op: str = "insert_blocks"


@dataclass(frozen=True)
class AddProjection:
    """The student's residual has a projection shortcut where the teacher's was the identity."""

    residual: str
    shortcut: str
    op: str = "add_projection"


@dataclass(frozen=True)
class GrowKernel:
    """A conv's odd kernel grows from `old` to `new`, its padding by the same half-difference,
    so the output keeps its size (NetMorph's kernel-size morph)."""

    layer: str
    old: int
    new: int
    op: str = "grow_kernel"


@dataclass(frozen=True)
class InsertLayers:
    """New layers inserted between the teacher's in one list (consecutive, in order)."""

    layers: tuple[str, ...]
    op: str = "insert_layers"


@dataclass(frozen=True)
class InterleaveBlocks:
    """New copies of the repeat at `repeat` placed between the old ones (`--interleave`):
    each (from, to) moves a copy of the appended layout (old copies, then new) to its place;
    an old copy's move says where that teacher block went."""

    repeat: str
    moves: tuple[tuple[str, str], ...]
    op: str = "interleave_blocks"


@dataclass(frozen=True)
class AddExperts:
    """An mlp's experts grow from `old` (1: dense, upcycled) to `new`, and its top_k from
    `old_top_k` to `new_top_k` (growth/experts.py)."""

    layer: str
    old: int
    new: int
    old_top_k: int
    new_top_k: int
    op: str = "add_experts"


Op = (
    WidenSpace
    | AddExperts
    | InsertBlocks
    | AddProjection
    | GrowKernel
    | InsertLayers
    | InterleaveBlocks
    | AddSteps
)


@dataclass(frozen=True)
class PlanRow:
    """One operation: what (`operation`), where (a path or space), and the change."""

    operation: str
    where: str
    change: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
