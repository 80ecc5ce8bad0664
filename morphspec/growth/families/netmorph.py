"""Network Morphism (Wei et al. 2016): half-zero widening, kernel morph, identity deepening.

Widening with `--netmorph-zero out` (default): the new channels' producers are random and
every consumer reads them with zero columns, so the old outputs never see them. With
`--netmorph-zero in`: the new channels' producers (rows and biases) are zero, so the new
channels carry σ(0) along the space, which must be 0 for every channel-wise op of the space
(checked; new batchnorm channels have running_mean 0 and bias 0, so they map 0 to 0), and
consumers may read them with random columns. Either way the teacher's parameters are kept.

Kernel-size morph: a conv whose odd kernel grows from k to k' with padding grown by
(k'-k)/2 keeps its output size; the teacher's kernel sits in the centre of a zero border,
so it computes the same sums. Deepening uses Net2DeeperNet's identity layers.
"""

from __future__ import annotations

import torch

from morphspec.errors import Problem
from morphspec.growth.families.base import Facts, Family
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.kinds import rule_of

__all__ = ["NetMorph"]


class NetMorph(Family):
    name = "netmorph"
    identity_deepen = True
    rules_copy = True

    def check(self, facts: Facts) -> list[Problem]:
        problems = super().check(facts)
        if self.options.netmorph_zero != "in":
            return problems
        for key, fill in facts.inside.items():
            if fill.query and fill.op == "consume" and facts.widened(fill.space):
                node = self.plan.student.node(key.rsplit(".", 2)[0])
                problems.append(Problem(
                    f"--netmorph-zero in: attention '{node.path}' gains query heads in its"
                    " kv groups, and a zero query attends uniformly over the group's values,"
                    " which are not zero, so o_proj would read them; use --netmorph-zero out",
                    node.mark,
                ))  # fmt: skip
        for space in self.plan.graph.spaces:
            if not facts.widened(space):
                continue
            for path, kind in space.ops:
                rule = rule_of(kind)
                if rule is None or not rule.zero_fixed:
                    node = self.plan.student.node(path)
                    problems.append(Problem(
                        f"--netmorph-zero in: channel space '{space.label}' passes through"
                        f" {kind} '{path}', and σ(0) = {0.5 if kind == 'sigmoid' else '≠ 0'},"
                        " so the zero new channels would not stay zero; use"
                        " --netmorph-zero out",
                        node.mark,
                    ))  # fmt: skip
        return problems

    def consume(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str) -> None:
        if self.options.netmorph_zero == "out":
            a = self.sizes[space.id]
            v.narrow(d, a, space.size - a).zero_()

    def produce(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str, role: Role) -> None:
        if self.options.netmorph_zero == "in" and role.kind == "producer":
            a = self.sizes[space.id]
            v.narrow(d, a, space.size - a).zero_()
