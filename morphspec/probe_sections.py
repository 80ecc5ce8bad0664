"""Where the probe measures: the residual blocks of a network, in runs (`Section`s) whose
output feeds the next block directly, found from the resolved `Arch` (no torch).

Where a block is measured is data, per container type of the kind records (`POINTS`): a
residual is one `Point`. A container type whose steps should be probed one by one would
register a function that returns one Point per step, each naming the submodule whose input
and output are that step's state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from morphspec.arch import Arch, Node
from morphspec.growth.kinds import rule_of

__all__ = ["POINTS", "Point", "Section", "find_sections"]


def _transparent(node: Node) -> bool:
    """x in, x out in eval mode (identity, dropout: their growth rule says so): no barrier."""
    rule = rule_of(node.kind)
    return rule is not None and rule.is_identity


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
    if node.is_chain:
        for child in node.children:
            yield from _stream(child, nested)
    elif node.container in POINTS:
        yield from POINTS[node.container](node, nested)
    elif not _transparent(node):
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
    cut = next((i for i, p in enumerate(node.post) if p.container == "residual"), len(node.post))
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


def _appends_copies(node: Node) -> bool:
    """A container whose copies growth can append (a repeat: its rule grows `times`)."""
    return node.container == "copies"


def _innermost_repeat(arch: Arch, paths: list[str]) -> Node | None:
    inside = [
        n for n in arch.nodes()
        if _appends_copies(n) and all(p.startswith(n.path + ".") for p in paths)
    ]  # fmt: skip
    return max(inside, key=lambda n: len(n.path), default=None)
