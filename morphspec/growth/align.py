"""Pair the teacher's layers with the student's, list by list.

Within one list (a body, a residual's body or post), layers pair by their `name` when they
have one, else by kind in order: a longest common subsequence, so a student may insert
named layers between the teacher's (Net2DeeperNet's new identity layers). Repeat copies
pair by index; copies past the teacher's count are appended blocks, not insertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from morphspec.arch.nodes import Node

__all__ = ["Alignment", "align"]


@dataclass
class Alignment:
    pairs: list[tuple[Node, Node]] = field(default_factory=list)
    removed: list[Node] = field(default_factory=list)
    inserted: list[list[Node]] = field(default_factory=list)
    """Runs of consecutive student layers with no teacher counterpart."""


def align(teacher: Node, student: Node) -> Alignment:
    out = Alignment()
    _pair(teacher, student, out)
    return out


def _named(node: Node) -> bool:
    return not node.name.isdigit()


def _key(node: Node) -> tuple[str, str]:
    return ("name", node.name) if _named(node) else ("kind", node.kind)


def _pair(t: Node, s: Node, out: Alignment) -> None:
    out.pairs.append((t, s))
    if t.kind != s.kind:
        return
    if t.container == "copies":
        for tc, sc in zip(t.children, s.children, strict=False):
            _pair(tc, sc, out)
        return
    if t.container in ("chain", "residual"):
        _list(t.children, s.children, out)
    if t.container == "residual":
        if t.shortcut is not None and s.shortcut is not None:
            _pair(t.shortcut, s.shortcut, out)
        _list(t.post, s.post, out)


def _list(tl: tuple[Node, ...], sl: tuple[Node, ...], out: Alignment) -> None:
    """Longest common subsequence of the two lists by `_key`."""
    n, m = len(tl), len(sl)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if _key(tl[i]) == _key(sl[j]):
                best[i][j] = best[i + 1][j + 1] + 1
            else:
                best[i][j] = max(best[i + 1][j], best[i][j + 1])
    i = j = 0
    run: list[Node] = []
    while i < n or j < m:
        if i < n and j < m and _key(tl[i]) == _key(sl[j]):
            if run:
                out.inserted.append(run)
                run = []
            _pair(tl[i], sl[j], out)
            i, j = i + 1, j + 1
        elif j < m and (i == n or best[i][j + 1] >= best[i + 1][j]):
            run.append(sl[j])
            j += 1
        else:
            out.removed.append(tl[i])
            i += 1
    if run:
        out.inserted.append(run)
