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
A projection shortcut added where the teacher had the identity starts as [I, A, -A] (its
batchnorm as the identity in eval mode: weight √(1+eps), running stats 0 and 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from morphspec.arch.nodes import Node
from morphspec.errors import PlanRefused, Problem
from morphspec.growth.graph import CHANNEL_WISE, ChannelSpace, Role
from morphspec.growth.init import InitMode, generator, tensor_std, uniform_into
from morphspec.growth.plan import Plan

__all__ = ["R2R", "GrowOptions"]

ZERO_AT_ZERO = frozenset(
    {"relu", "leaky_relu", "gelu", "silu", "tanh", "identity", "dropout", "maxpool", "avgpool"}
)
IDENTITY_ON_NONNEG = frozenset({"relu", "leaky_relu"})
ALWAYS_IDENTITY = frozenset({"identity", "dropout"})
CHANNEL_DEFAULTS = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


@dataclass(frozen=True)
class GrowOptions:
    init: InitMode = "match"
    init_scale: float = 1.0
    seed: int = 0


@dataclass
class _Deepen:
    """What R2DeeperR fixes in the appended blocks."""

    zero_rows: set[str] = field(default_factory=set)
    zero_bias: set[str] = field(default_factory=set)
    zero_bn: set[str] = field(default_factory=set)


class R2R:
    """Fills every student tensor from the teacher's by the R2R rules."""

    name = "r2r"

    def __init__(self, plan: Plan, options: GrowOptions | None = None):
        self.plan = plan
        self.options = options or GrowOptions()
        self.deepen = _Deepen()
        self.check()

    # -- conditions ---------------------------------------------------------------------
    def check(self) -> None:
        """Refuse, before any tensor moves, what R2R cannot keep exact."""
        problems: list[Problem] = []
        plan = self.plan
        for space in plan.graph.spaces:
            a = plan.teacher_size[space.id]
            if a and space.size > a and space.mixing_norms:
                norm = plan.student.node(space.mixing_norms[0])
                problems.append(Problem(
                    f"channel space '{space.label}' passes through {norm.kind} '{norm.path}',"
                    " whose statistics mix channels: R2R's (L, R) pairs would change them."
                    " Keep that width, or wait for norm-preserving lifts",
                    norm.mark,
                ))  # fmt: skip
        for block in plan.new_blocks:
            problems.extend(self._check_block(plan.student.node(block)))
        for shortcut in plan.projections:
            problems.extend(self._check_projection(plan.student.node(shortcut)))
        if problems:
            raise PlanRefused(problems)

    def _check_block(self, node: Node) -> list[Problem]:
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
        nonneg = self.plan.graph.residual_input_nonneg.get(node.path, False)
        for post in node.post:
            ok = post.kind in ALWAYS_IDENTITY or (post.kind in IDENTITY_ON_NONNEG and nonneg)
            if not ok:
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
        for child in reversed(_leaves(node.children)):
            if child.kind in CHANNEL_WISE or child.kind == "global_avgpool":
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
        if self.plan.teacher_size[in_space.id] != 0 or in_space.is_input:
            problems.append(Problem(
                f"new block '{node.path}': the last layer '{terminal.path}' reads the stream"
                " directly; R2DeeperR needs at least two layers in the body (the paper's"
                " zero initialisation pairs a hidden layer between them)",
                terminal.mark,
            ))  # fmt: skip
        for op in trailing:
            if op.kind not in ZERO_AT_ZERO and op.kind != "batchnorm":
                problems.append(Problem(
                    f"new block '{node.path}': '{op.path}' ({op.kind}) does not map 0 to 0, so"
                    " the block cannot start at zero",
                    op.mark,
                ))  # fmt: skip
            if op.kind == "batchnorm":
                self.deepen.zero_bn.add(op.path)
        self.deepen.zero_rows.add(weight)
        bias = weight.replace(".weight", ".bias")
        self.deepen.zero_bias.add(bias)
        return problems

    def _check_projection(self, shortcut: Node) -> list[Problem]:
        kinds = [c.kind for c in shortcut.children]
        first = shortcut.children[0] if shortcut.children else None
        ok = kinds in (["conv"], ["conv", "batchnorm"], ["linear"], ["linear", "batchnorm"])
        if ok and first is not None and first.kind == "conv":
            ok = (
                first.args["kernel"] == 1
                and first.args["stride"] == 1
                and first.args["padding"] == 0
            )
        if ok:
            return []
        return [Problem(
            f"new projection shortcut '{shortcut.path}' must be a 1x1 conv (stride 1) or a linear,"
            " optionally followed by batchnorm, to start as the identity",
            shortcut.mark,
        )]  # fmt: skip

    # -- tensors --------------------------------------------------------------------------
    def tensor(
        self,
        key: str,
        teacher: torch.Tensor | None,
        reference: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The student's `key` in `dtype`.

        Random values are drawn in float64 and cast; everything else is copying, negating
        and zeroing, which is exact in any dtype (rounding is symmetric, so cast(-z) is
        -cast(z)). The teacher's entries are copied bit for bit.
        """
        shape = self.plan.student.state_shapes()[key]
        local = key.rsplit(".", 1)[-1]
        if local == "num_batches_tracked":
            return teacher.clone() if teacher is not None else torch.zeros(shape, dtype=dtype)
        roles = list(self.plan.graph.roles(key))
        node_path = key.rsplit(".", 1)[0]
        projection = self._projection_of(key)
        if any(r.kind == "channel" for r, _ in roles):
            value = CHANNEL_DEFAULTS.get(local, 0.0)
            if projection is not None and local == "weight":
                value = math.sqrt(1.0 + projection.args["eps"])
            x = torch.full(shape, value, dtype=torch.float64).to(dtype)
        else:
            existing = teacher if teacher is not None else reference
            std = tensor_std(existing, shape, self.options.init, self.options.init_scale)
            x = torch.empty(shape, dtype=dtype)
            uniform_into(x, std, generator(self.options.seed, key))
            if projection is not None and local == "weight":
                _identity_block(x, self._old(key, 0, roles))
        if teacher is not None:
            x[tuple(slice(0, n) for n in teacher.shape)] = teacher
        zero_bn = node_path in self.deepen.zero_bn and local in ("bias", "running_mean")
        if key in self.deepen.zero_bias or zero_bn:
            x.zero_()
        for role, space in roles:
            if role.kind in ("producer", "channel"):
                self._pair_rows(x, role, space)
        for role, space in roles:
            if role.kind == "consumer":
                self._cancel_columns(x, role, space, key, teacher is not None, roles)
        return x

    def _projection_of(self, key: str) -> Node | None:
        for shortcut in self.plan.projections:
            if key.startswith(shortcut + "."):
                path = key.rsplit(".", 1)[0]
                return self.plan.student.node(path)
        return None

    def _old(self, key: str, dim: int, roles: list[tuple[Role, ChannelSpace]]) -> int:
        for role, space in roles:
            if role.dim == dim:
                return self.plan.teacher_size[space.id] * role.mult
        return self.plan.student.state_shapes()[key][dim]

    def _pair_rows(self, x: torch.Tensor, role: Role, space: ChannelSpace) -> None:
        a = self.plan.teacher_size[space.id]
        pairs = (space.size - a) // 2
        if pairs:
            v, d = _channel_view(x, role.dim, role.mult)
            v.narrow(d, a + pairs, pairs).copy_(v.narrow(d, a, pairs))

    def _cancel_columns(
        self, x: torch.Tensor, role: Role, space: ChannelSpace, key: str, old: bool,
        roles: list[tuple[Role, ChannelSpace]],
    ) -> None:  # fmt: skip
        a = self.plan.teacher_size[space.id]
        pairs, odd = (space.size - a) // 2, (space.size - a) % 2
        if key in self.deepen.zero_rows:
            rows = x
        elif old or self._projection_of(key) is not None:
            rows = x.narrow(0, 0, self._old(key, 0, roles)) if role.dim != 0 else x
        else:
            return
        v, d = _channel_view(rows, role.dim, role.mult)
        if pairs:
            v.narrow(d, a + pairs, pairs).copy_(-v.narrow(d, a, pairs))
        if odd:
            v.narrow(d, a + 2 * pairs, 1).zero_()


def _channel_view(x: torch.Tensor, dim: int, mult: int) -> tuple[torch.Tensor, int]:
    """`x` with dimension `dim` split into (channels, mult), sharing memory."""
    if mult == 1:
        return x, dim
    shape = list(x.shape)
    shape[dim : dim + 1] = [shape[dim] // mult, mult]
    return x.view(shape), dim


def _identity_block(x: torch.Tensor, n: int) -> None:
    """Make the top-left n×n block of a weight the identity (1 at the kernel's centre)."""
    x.narrow(0, 0, n).narrow(1, 0, n).zero_()
    idx = torch.arange(n)
    centre = [torch.full_like(idx, k // 2) for k in x.shape[2:]]
    x[(idx, idx, *centre)] = 1.0


def _leaves(nodes: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        out.extend(_leaves(n.children) if n.kind in ("sequential", "repeat") else [n])
    return out
