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
[Z, -Z, 0] columns in every row and a zero bias; trailing ops must map 0 to 0, and the
`post` op must be the identity on the stream it receives (a relu after a non-negative
stream is). A block whose body ends in a batchnorm instead starts with that batchnorm's
gain and shift at zero (the rule every exact family shares, `Family.check_residual_block`):
pairing the layer before it would feed the batchnorm an exactly-zero input, which in train
mode it rescales to unit variance as soon as a step moves it.
A projection shortcut added where the teacher had the identity starts from an identity
stand-in, so the rule above makes it [I, A, -A] (its batchnorm the identity in eval mode:
weight √(1+eps), running stats 0 and 1).
"""

from __future__ import annotations

import torch

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.families.base import Facts, Family
from morphspec.growth.graph import ChannelSpace, Role

__all__ = ["R2R"]


class R2R(Family):
    """Fills every student tensor from the teacher's by the R2R rules."""

    name = "r2r"
    pairs_new_spaces = True
    rules_copy = True
    lift_split = True

    # -- conditions ---------------------------------------------------------------------
    def check_new_block(self, node: Node, facts: Facts) -> list[Problem]:
        return [Problem(
            f"new block '{node.path}' is a {node.kind}, not a residual: R2DeeperR inserts"
            " residual blocks that start as the identity (Net2DeeperNet, which needs no"
            " residual, is --family net2net)",
            node.mark,
        )]  # fmt: skip

    def zero_output(self, block: Node, terminal: Node, weight: str, facts: Facts) -> list[Problem]:
        """R2DeeperR: the last layer reads the block's (new, paired) hidden space with
        [Z, -Z] columns in every row and a zero bias, so it outputs zero with Z free."""
        in_space = next(s for r, s in self.plan.graph.roles(weight) if r.kind == "consumer")
        if facts.sizes[in_space.id] != 0 or in_space.is_input:
            return [Problem(
                f"new block '{block.path}': the last layer '{terminal.path}' reads the stream"
                " directly; R2DeeperR needs at least two layers in the body (the paper's"
                " zero initialisation pairs a hidden layer between them), or a batchnorm"
                " after the last layer",
                terminal.mark,
            )]  # fmt: skip
        facts.zero_rows.add(weight)
        facts.zero_keys.add(weight.removesuffix("weight") + "bias")
        return []

    # -- the rule -----------------------------------------------------------------------
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
