"""Tied weights: a layer that reads another's weight instead of owning one (a tied head).

Which kinds share (`Kind.shares`, the arg naming the owner) and which can be shared
(`Kind.shareable`) is in their records; this checks a resolved pair.
"""

from __future__ import annotations

from morphspec.arch.nodes import Arch, Node
from morphspec.errors import Mark, SpecError, closest
from morphspec.kinds import registry

__all__ = ["check_tie"]


def _shareable(node: Node) -> bool:
    record = registry.get(node.kind)
    return record is not None and record.shareable


def check_tie(arch: Arch, node: Node, where: Mark) -> None:
    """A tied head (a linear) reads an embedding's weight [vocab, dim] as its own [out, in]."""
    path = node.shared_weight() or ""
    paths = [n.path for n in arch.nodes() if _shareable(n)]
    try:
        target = arch.node(path)
    except KeyError:
        raise SpecError(
            f"{node.kind} '{node.path}': tie '{path}' names no layer{closest(path, paths)}"
            f" (embeddings: {', '.join(paths) or 'none'})",
            where,
        ) from None
    if not _shareable(target):
        raise SpecError(
            f"{node.kind} '{node.path}': tie '{path}' is a {target.kind}; a head ties to an"
            " embedding",
            where,
        )
    want = (node.args["out"], node.inp.channels)
    if target.params["weight"] != want:
        raise SpecError(
            f"{node.kind} '{node.path}' ([out, in] = {list(want)}) cannot share the weight of"
            f" '{path}' ([vocab, dim] = {list(target.params['weight'])}); out must be the"
            " vocab and the input width the embedding's dim",
            where,
        )
