"""R2R (R2WiderR and R2DeeperR): exact growth with half of the new parameters free.

Widening a channel space from a to b channels appends P = (b-a)//2 pairs (L, R) and, when
b-a is odd, one unpaired channel u:

    producers  [W; U; U; u]   biases [b; c; c; c_u]   channel-wise params equal on L and R
    consumers  [W, Z, -Z, 0]  (for the rows that existed in the teacher)

Proof: every producer writes x_L = x_R; channel-wise ops keep equal channels equal; a
residual sum adds two spaces paired the same way; so x_L = x_R on every edge of the space.
A consumer then adds Z·x_L - Z·x_R + 0·x_u = 0 to what it computed before. Nothing else
is assumed of U, c, Z or u, which are the free parameters. The unpaired channel gets a zero
consumer column, so an odd count stays exact at the cost of one channel the next layer
reads with zero weight at first.

Deepening appends residual blocks that compute zero: the block's hidden space is entirely
new, so it is paired from the start, and the last producer of the body reads it with
[Z, -Z, 0] columns in every row and a zero bias. A batchnorm after it gets running_mean 0
and bias 0 (so it outputs 0), other trailing ops must map 0 to 0, and the `post` op must
be the identity on the stream it receives (a relu after a non-negative stream is).
A projection shortcut added where the teacher had the identity starts from an identity
stand-in, so the rule above makes it [I, A, -A] (its batchnorm the identity in eval mode:
weight √(1+eps), running stats 0 and 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.families.base import Facts, Family, leaves
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.kinds import kinds_where, rule_of

__all__ = ["R2R"]


@dataclass
class R2RFacts(Facts):
    """R2DeeperR's zeros: the last layer of each new block and what follows it."""

    zero_rows: set[str] = field(default_factory=set)
    zero_keys: set[str] = field(default_factory=set)
    """The bias of the last layer, and what makes the ops after it map 0 to 0."""


class R2R(Family):
    """Fills every student tensor from the teacher's by the R2R rules."""

    name = "r2r"

    def new_facts(self) -> R2RFacts:
        return R2RFacts(dict(self.plan.teacher_size))

    @property
    def r2r_facts(self) -> R2RFacts:
        assert isinstance(self.facts, R2RFacts)
        return self.facts

    # -- conditions ---------------------------------------------------------------------
    def check_new_block(self, node: Node, facts: Facts) -> list[Problem]:
        assert isinstance(facts, R2RFacts)
        where = node.mark
        if node.kind != "residual":
            return [Problem(
                f"new block '{node.path}' is a {node.kind}, not a residual: R2DeeperR inserts"
                " residual blocks that start as the identity (Net2DeeperNet, which needs no"
                " residual, is --family net2net)",
                where,
            )]  # fmt: skip
        if node.shortcut is not None:
            return [Problem(
                f"new block '{node.path}' has a projection shortcut; appended copies must keep"
                " their input shape so the identity shortcut carries the stream",
                where,
            )]  # fmt: skip
        problems: list[Problem] = []
        nonneg = self.plan.graph.input_nonneg.get(node.path, False)
        for post in node.post:
            rule = rule_of(post.kind)
            on_nonneg = rule is not None and rule.identity_on_nonneg
            if (rule is not None and rule.is_identity) or (on_nonneg and nonneg):
                continue
            why = (
                "the stream it receives can be negative"
                if on_nonneg
                else "it is not the identity on the stream"
            )
            problems.append(Problem(
                f"new block '{node.path}': its post op {post.kind} must be the identity on"
                f" the incoming stream so the block starts as the identity, but {why}",
                post.mark,
            ))  # fmt: skip
        trailing: list[Node] = []
        terminal: Node | None = None
        for child in reversed(leaves(node.children)):
            child_rule = rule_of(child.kind)
            if child_rule is not None and child_rule.keeps_channels_independent:
                trailing.append(child)
                continue
            terminal = child
            break
        t_rule = rule_of(terminal.kind) if terminal is not None else None
        matrix = t_rule.out_matrix() if t_rule is not None else None
        if terminal is None or matrix is None:
            what = f"a {terminal.kind}" if terminal else "nothing"
            able = ", ".join(sorted(kinds_where(lambda r: r.out_matrix() is not None)))
            return [*problems, Problem(
                f"new block '{node.path}': its body ends in {what}; R2DeeperR needs a layer"
                f" that writes the stream from a hidden layer of the block there ({able})",
                where,
            )]  # fmt: skip
        weight = terminal.key(matrix)
        in_space = next(s for r, s in self.plan.graph.roles(weight) if r.kind == "consumer")
        if facts.sizes[in_space.id] != 0 or in_space.is_input:
            problems.append(Problem(
                f"new block '{node.path}': the last layer '{terminal.path}' reads the stream"
                " directly; R2DeeperR needs at least two layers in the body (the paper's"
                " zero initialisation pairs a hidden layer between them)",
                terminal.mark,
            ))  # fmt: skip
        for op in trailing:
            op_rule = rule_of(op.kind)
            if op_rule is None or not op_rule.zero_fixed:
                problems.append(Problem(
                    f"new block '{node.path}': '{op.path}' ({op.kind}) does not map 0 to 0, so"
                    " the block cannot start at zero",
                    op.mark,
                ))  # fmt: skip
            if op_rule is not None:
                facts.zero_keys.update(op.key(p) for p in op_rule.zero_at_zero if p in op.params)
        facts.zero_rows.add(weight)
        facts.zero_keys.add(weight.removesuffix("weight") + "bias")
        return problems

    # -- the rule -----------------------------------------------------------------------
    def fix(self, key: str, node_path: str, local: str, x: torch.Tensor) -> None:
        if key in self.r2r_facts.zero_keys:
            x.zero_()

    def protected_rows(self, x: torch.Tensor, key: str, old_rows: int) -> torch.Tensor | None:
        if key in self.r2r_facts.zero_rows:
            return x  # the last layer of a new block: every row must output zero
        return super().protected_rows(x, key, old_rows)

    def consume(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str) -> None:
        a = self.sizes[space.id]
        pairs, odd = (space.size - a) // 2, (space.size - a) % 2
        if pairs:
            v.narrow(d, a + pairs, pairs).copy_(v.narrow(d, a, pairs)).neg_()
        if odd:
            v.narrow(d, a + 2 * pairs, 1).zero_()

    def produce(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str, role: Role) -> None:
        a = self.sizes[space.id]
        pairs = (space.size - a) // 2
        if pairs:
            v.narrow(d, a + pairs, pairs).copy_(v.narrow(d, a, pairs))
