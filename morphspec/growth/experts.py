"""Mixtures of experts (an `mlp` with `experts` > 1): the two exact ways their experts grow.

A mixture's output is Σ_k w_k · E_k(x) over the top_k experts the router picks, with the
kept weights renormalised to sum 1 (Mixtral). So:

- **Upcycling** (experts 1 -> E, any top_k; Komatsuzaki et al.'s sparse upcycling): every
  expert is a copy of the dense MLP. Whatever the router picks, Σ_k w_k · MLP(x) = MLP(x).
  The router is new and drawn small and non-zero (`ROUTER_SCALE` times the family's draw),
  so tokens go to different experts, the copies get different gradients and drift apart.
- **Doubling** (experts E -> 2E with top_k k -> 2k): expert E + j copies expert j and router
  row E + j copies row j. Each teacher probability p_j becomes two of p_j / 2; the top 2k
  are both copies of each of the teacher's top k, and renormalised they give each pair the
  teacher's weight: the same mixture.

Anything else is refused with the reason: more experts that are not copied equally often
change the router's softmax; a top_k that changes alone changes which experts mix. The
copies' tensors come from their source's (`sources`, which the optimizer state follows
too, so a copied expert carries its source's moments); widening the mixture at the same
time applies the family's rule to every copy alike (kinds.py: the mlp's roles apply to
`experts.<j>.*`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from morphspec.arch.nodes import Arch, Node
from morphspec.errors import Problem
from morphspec.growth.kinds import rule_of

if TYPE_CHECKING:
    import torch

__all__ = ["ROUTER_SCALE", "ExpertGrowth", "expert_growths", "finish_router", "register_experts"]

ROUTER_SCALE = 0.1
"""A new router's entries are this fraction of the family's usual draw: small, not zero."""


def mixes_experts(node: Node) -> bool:
    """The node's kind may hold experts (its rule's `nested` copies are `experts.<j>`)."""
    rule = rule_of(node.kind)
    return rule is not None and rule.nested == "experts"


@dataclass(frozen=True)
class ExpertGrowth:
    path: str
    old: int  # experts in the teacher (1: dense)
    new: int


def expert_growths(teacher: Arch, student: Arch) -> tuple[dict[str, ExpertGrowth], list[Problem]]:
    """Every mlp whose experts grow, or why not."""
    t_nodes = {n.path: n for n in teacher.nodes() if mixes_experts(n)}
    growths: dict[str, ExpertGrowth] = {}
    problems: list[Problem] = []
    for s in student.nodes():
        t = t_nodes.get(s.path)
        if not mixes_experts(s) or t is None:
            continue
        e1, k1, e2, k2 = t.args["experts"], t.args["top_k"], s.args["experts"], s.args["top_k"]
        if (e1, k1) == (e2, k2) or e2 < e1 or k2 < k1:
            continue  # shrinking is refused by the argument comparison
        where = f"mlp '{s.path}': experts {e1} -> {e2}, top_k {k1} -> {k2}"
        if e1 == 1 or (e2 == 2 * e1 and k2 == 2 * k1):
            growths[s.path] = ExpertGrowth(s.path, e1, e2)
        elif e1 == e2:
            problems.append(Problem(
                f"{where}: a top_k that grows alone mixes experts that the teacher left out,"
                " which changes the output; top_k grows with the experts (1 -> E: any top_k;"
                " E -> 2E: top_k doubles)",
                s.mark,
            ))  # fmt: skip
        elif e2 == 2 * e1:
            problems.append(Problem(
                f"{where}: with every expert and router row copied once, each teacher"
                f" expert's weight is split over two copies, so top_k must double ({k1} ->"
                f" {2 * k1}) to pick both and keep the mixture",
                s.mark,
            ))  # fmt: skip
        else:
            problems.append(Problem(
                f"{where}: new experts keep the function only when every expert is copied"
                f" equally often (experts {e1} -> {2 * e1}, each router row duplicated,"
                f" top_k {k1} -> {2 * k1}); other counts change the router's softmax. Grow in"
                " doublings, or upcycle a dense MLP (experts 1 -> E)",
                s.mark,
            ))  # fmt: skip
    return growths, problems


def register_experts(
    teacher: Arch, student: Arch, sources: dict[str, str], routers: dict[str, int]
) -> list[Problem]:
    """Record the teacher tensor each new expert tensor copies (`sources`) and, per router,
    the teacher's expert count (`routers`; 0: a new router)."""
    growths, problems = expert_growths(teacher, student)
    for path, g in growths.items():
        node = student.node(path)
        for param in node.params:
            head, j, local = ([*param.split(".", 2), "", ""])[:3]
            if head != "experts" or not j.isdigit():
                continue
            if g.old == 1:
                sources[node.key(param)] = node.key(local)
            elif int(j) >= g.old:
                sources[node.key(param)] = node.key(f"experts.{int(j) - g.old}.{local}")
        routers[node.key("gate.weight")] = 0 if g.old == 1 else g.old
    return problems


def finish_router(x: torch.Tensor, old: int) -> None:
    """A new router is scaled down; a doubled one gets its rows [W; W]."""
    if old == 0:
        x.mul_(ROUTER_SCALE)
    else:
        x.narrow(0, old, x.shape[0] - old).copy_(x.narrow(0, 0, old))
