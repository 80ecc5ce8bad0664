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

import torch

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.conditions import FIXED_POINT_AT_ZERO, KEEPS_CHANNELS_INDEPENDENT
from morphspec.growth.families.base import Family, GrowOptions, TensorGetter, leaves
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.plan import Plan

__all__ = ["R2R"]

IDENTITY_ON_NONNEG = frozenset({"relu", "leaky_relu"})
ALWAYS_IDENTITY = frozenset({"identity", "dropout"})


class R2R(Family):
    """Fills every student tensor from the teacher's by the R2R rules."""

    name = "r2r"

    def __init__(
        self, plan: Plan, options: GrowOptions | None = None, get: TensorGetter | None = None
    ) -> None:
        self.zero_rows: set[str] = set()
        self.zero_bias: set[str] = set()
        self.zero_bn: set[str] = set()
        super().__init__(plan, options, get)

    # -- conditions ---------------------------------------------------------------------
    def check_new_block(self, node: Node) -> list[Problem]:
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
            if post.kind in ALWAYS_IDENTITY or (post.kind in IDENTITY_ON_NONNEG and nonneg):
                continue
            why = (
                "the stream it receives can be negative"
                if post.kind in IDENTITY_ON_NONNEG
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
            if child.kind in KEEPS_CHANNELS_INDEPENDENT:
                trailing.append(child)
                continue
            terminal = child
            break
        if terminal is None or terminal.kind not in ("linear", "conv", "mlp"):
            what = f"a {terminal.kind}" if terminal else "nothing"
            return [*problems, Problem(
                f"new block '{node.path}': its body ends in {what}; R2DeeperR needs a linear,"
                " conv or mlp there reading a hidden layer of the block",
                where,
            )]  # fmt: skip
        weight = terminal.key("down_proj.weight" if terminal.kind == "mlp" else "weight")
        in_space = next(s for r, s in self.plan.graph.roles(weight) if r.kind == "consumer")
        if self.sizes[in_space.id] != 0 or in_space.is_input:
            problems.append(Problem(
                f"new block '{node.path}': the last layer '{terminal.path}' reads the stream"
                " directly; R2DeeperR needs at least two layers in the body (the paper's"
                " zero initialisation pairs a hidden layer between them)",
                terminal.mark,
            ))  # fmt: skip
        for op in trailing:
            if op.kind not in FIXED_POINT_AT_ZERO:
                problems.append(Problem(
                    f"new block '{node.path}': '{op.path}' ({op.kind}) does not map 0 to 0, so"
                    " the block cannot start at zero",
                    op.mark,
                ))  # fmt: skip
            if op.kind == "batchnorm":
                self.zero_bn.add(op.path)
        self.zero_rows.add(weight)
        self.zero_bias.add(weight.removesuffix("weight") + "bias")
        return problems

    # -- the rule -----------------------------------------------------------------------
    def fix(self, key: str, node_path: str, local: str, x: torch.Tensor) -> None:
        if key in self.zero_bias or (
            node_path in self.zero_bn and local in ("bias", "running_mean")
        ):
            x.zero_()

    def protected_rows(self, x: torch.Tensor, key: str, old_rows: int) -> torch.Tensor | None:
        if key in self.zero_rows:
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
