"""What the planner refuses because the registry (growth/kinds.py) does not know it.

Growth fills a tensor dimension only through a role of its kind's entry. So a kind with
parameters and no entry, a tensor dimension that changes with no role growing it, and a
role whose layout no family fills yet are refused at plan time, with the YAML place,
rather than padded by a default.
"""

from __future__ import annotations

from morphspec.arch.nodes import Arch
from morphspec.errors import Problem
from morphspec.growth.experts import mixes_experts
from morphspec.growth.graph import SpaceGraph
from morphspec.growth.groups import is_grouped
from morphspec.growth.kinds import rule_of

__all__ = ["unfilled_layouts", "unknown_kinds", "unruled_dims"]


def unknown_kinds(student: Arch) -> list[Problem]:
    """A kind with parameters and no entry in `growth/kinds.py` is refused: growth cannot
    say which dimension of its tensors reads or writes which channels."""
    return [
        Problem(
            f"'{n.path}' is a {n.kind}, which has parameters ({', '.join(sorted(n.params))})"
            " and no growth rule in morphspec/growth/kinds.py: growth cannot tell which of"
            " their dimensions read or write which channels, so it refuses rather than pad"
            " them. Keep the teacher's architecture around it or convert without it",
            n.mark,
        )
        for n in student.nodes()
        if n.params and rule_of(n.kind) is None
    ]


def unruled_dims(
    teacher: Arch, student: Arch, graph: SpaceGraph, sizes: dict[int, int],
    kernels: set[str],
) -> list[Problem]:  # fmt: skip
    """Every tensor dimension that changes must be grown by a role of a widening space (or
    be a grown kernel's spatial dimension); anything else would be padded blindly."""
    problems = []
    t_shapes = teacher.state_shapes()
    owner = {n.key(p): n for n in student.nodes() for p in n.params}
    for key, shape in student.state_shapes().items():
        tshape = t_shapes.get(key)
        if tshape is None or tshape == shape:
            continue
        path = key.rpartition(".")[0]
        node = owner[key]
        grown = {r.dim for r, sp in graph.roles(key) if sp.size > sizes[sp.id]}
        if node.path in kernels:
            grown |= {2, 3}
        if mixes_experts(node) and key.endswith(".gate.weight"):
            grown.add(0)  # a router's experts: growth/experts.py copies its rows
        for d, (a, b) in enumerate(zip(tshape, shape, strict=True)):
            if a != b and d not in grown:
                problems.append(Problem(
                    f"'{key}': dimension {d} changes from {a} to {b}, and no role of"
                    f" {node.kind} '{path or node.path}' grows it (morphspec/growth/kinds.py);"
                    " growth refuses rather than pad it",
                    node.mark,
                ))  # fmt: skip
    return problems


FILLED = ("append", "segments")
"""Layouts the families fill (segments and ties: growth/segments.py; `groups` of the kinds
whose rule is `grouped`: growth/groups.py)."""


def unfilled_layouts(student: Arch, graph: SpaceGraph, sizes: dict[int, int]) -> list[Problem]:
    """Layouts the registry can describe but no family fills yet."""
    problems = []
    for space in graph.spaces:
        if space.size <= sizes[space.id]:
            continue
        for role in space.roles:
            node = student.node(role.node)
            grouped = role.layout.kind == "groups" and is_grouped(node)
            if role.layout.kind in FILLED or grouped:
                continue
            what = role.layout.describe()
            problems.append(Problem(
                f"channel space '{space.label}' would widen '{role.key}' dimension {role.dim},"
                f" laid out as {what}: no family fills that yet",
                node.mark,
            ))  # fmt: skip
            break
    return problems
