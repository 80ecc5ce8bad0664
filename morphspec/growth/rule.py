"""The shape of a growth rule: `KindRule` and the roles, layouts and ties it is made of.

Each layer kind's record (`morphspec.kinds.Kind`) carries one `KindRule` as its `growth`;
growth/kinds.py holds the built-in kinds' rules. See growth/kinds.py for what the fields
mean to the graph, the planner, the conditions, the rescaler and the families.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["APPEND", "KindRule", "Layout", "ParamRole", "RoleKind", "Tie", "check_rule"]

RoleKind = Literal["producer", "consumer", "channel"]
Flow = Literal["keep", "new", "flatten", "container"]
Identity = Literal["none", "matrix", "batchnorm"]


@dataclass(frozen=True)
class Layout:
    """How one tensor dimension's entries are laid out, so where new channels go.

    - `append`: one block of channels; new ones go at the end (every rule today);
    - `segments`: `parts` equal segments (a reversible unit's Y and Z halves), each growing
      at its own end, so new channels land in the middle of the tensor; a role that touches
      one segment only names it (`segment`, 0-based);
    - `groups`: `groups` × `per_group` entries (heads × head_dim, named by the args that
      size them); `grow="groups"` appends whole groups, `grow="inside"` appends entries
      inside every group.

    The `mult` features per channel after a flatten are a property of the edge, not the
    kind: the graph records them on each role (channel c owns features c*mult ...).
    """

    kind: Literal["append", "segments", "groups"] = "append"
    parts: int = 1
    segment: int | None = None
    groups: str | None = None
    per_group: str | None = None
    grow: Literal["groups", "inside"] = "groups"

    def describe(self) -> str:
        if self.kind == "segments":
            which = f", segment {self.segment}" if self.segment is not None else ""
            return f"{self.parts} segments, each growing at its own end{which}"
        if self.kind == "groups":
            where = "new groups appended" if self.grow == "groups" else "new entries inside each"
            return f"{self.groups} x {self.per_group} ({where})"
        return "appended"


APPEND = Layout()


@dataclass(frozen=True)
class ParamRole:
    """Dimension `dim` of parameter `param` lies in space `space` as `role`."""

    param: str
    dim: int
    role: RoleKind
    space: str
    layout: Layout = APPEND


@dataclass(frozen=True)
class Tie:
    """Two roles on one tensor dimension: `param`'s `dim` is read as both (`transposed`
    when the tensor is also used as its transpose, like a reversible unit's K and Kᵀ)."""

    param: str
    dim: int
    roles: tuple[RoleKind, RoleKind]
    transposed: bool = False


def _no_identity_problem(args: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class KindRule:
    """Growth knowledge for one layer kind; see the module docstring."""

    kind: str
    flow: Flow
    roles: tuple[ParamRole, ...] = ()
    inner: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Inner spaces, each sized by the product of these args (`hidden`; `heads`, `head_dim`)."""
    grows: frozenset[str] = frozenset()
    """Integer args that may grow (each widens a space or appends copies)."""
    ties: tuple[Tie, ...] = ()
    kernel_morph: bool = False
    """An odd `kernel` may grow when `padding` grows by half the difference (NetMorph)."""
    keeps_channels_independent: bool = False
    mixes_channels: bool = False
    zero_fixed: bool = False
    idempotent: bool = False
    is_identity: bool = False
    """The identity in eval mode (dropout, identity)."""
    identity_on_nonneg: bool = False
    """The identity on a non-negative input (relu, leaky_relu)."""
    homogeneous: bool = False
    """σ(s·x) = s·σ(x) for s > 0: a scale passes through it (the rescaler needs this)."""
    absorbs_scale: bool = False
    """Normalises by running statistics, so it can absorb an input scale exactly."""
    zero_at_zero: tuple[str, ...] = ()
    """Parameters that, set to 0, make the op map 0 to 0 (batchnorm: bias, running_mean)."""
    stepped: bool = False
    """Its parameters repeat per step as `<step>.<param>` (reversible units): each role
    applies to every step's copy (`roles_of`), and `steps` may grow (growth/segments.py)."""
    nested: str = ""
    """Its parameters may also sit under `<nested>.<j>.` (an mlp's experts): each takes the
    roles of its local name, in every copy (growth/experts.py adds and copies the copies)."""
    pads: bool = False
    """Writes its input's channels, then zero channels (channel_pad): its output space is
    derived from its input's, which growth/segments.py follows."""
    freezes_input: str = ""
    """Why the space entering this kind cannot widen (empty: it can). No kind sets it
    today: channel_pad, which did, now grows with its input (growth/segments.py)."""
    zero_gain: tuple[str, ...] = ()
    """Parameters that, set to 0, make the op output 0 whatever its input, in eval and in
    train mode (batchnorm's gain and shift): a new residual block that ends in this kind
    starts at zero there, with generic layers before it (see Family.check_residual_block)."""
    nonneg_out: bool = False
    keeps_nonneg: bool = False
    fill_lift: Literal["mean", "zero"] | None = None
    """A channel-mixing norm's lift when its eps is rescaled (growth/lifts.py): `mean` fills
    new channels with the mean (layernorm), `zero` with zeros (rmsnorm); None: no fill lift,
    only duplication."""
    grouped: bool = False
    """Its `groups` layouts (heads x head_dim) are filled by growth/groups.py."""
    appended_steps: Callable[[int, int], str | None] | None = None
    """Why an exact family cannot append steps old -> new to this stepped kind (None:
    it can), e.g. a leapfrog step is never the identity, a midpoint step pair is."""
    neutral: Mapping[str, float] = field(default_factory=dict)
    """Values of new channel-wise entries that keep each channel's output unchanged."""
    offset_arg: str = ""
    """An arg added to the channel-wise `weight` (Gemma's rmsnorm gain is 1 + w): neutral
    weights are shifted down by it, and gains cannot be rescaled by a factor."""
    identity: Identity = "none"
    """How a new layer of this kind starts as the identity (Net2DeeperNet, projections)."""
    identity_problem: Callable[[Mapping[str, Any]], str | None] = _no_identity_problem
    """Why these args keep the layer from being the identity (None when it can be)."""

    def roles_of(self, params: Mapping[str, Any]) -> list[ParamRole]:
        """The roles of the parameters a node of this kind actually has (every step's, for
        a stepped kind)."""
        if self.nested:
            out = [r for r in self.roles if r.param in params]
            for name in params:
                head, j, local = ([*name.split(".", 2), "", ""])[:3]
                if head == self.nested and j.isdigit():
                    out += [replace(r, param=name) for r in self.roles if r.param == local]
            return out
        if not self.stepped:
            return [r for r in self.roles if r.param in params]
        out = []
        for name in params:
            step, _, local = name.partition(".")
            out += [
                replace(r, param=name) for r in self.roles if step.isdigit() and r.param == local
            ]
        return out

    def out_matrix(self) -> str | None:
        """The parameter whose rows write `out` from columns that read another space with
        an appended or grouped layout (a linear's weight, an mlp's down_proj, attention's
        o_proj): the last layer R2DeeperR zeroes."""
        writes = {r.param for r in self.roles if r.role == "producer" and r.space == "out"}
        for r in self.roles:
            if r.param in writes and r.role == "consumer" and r.layout.kind != "segments":
                return r.param
        return None

    def tie_of(self, param: str, dim: int) -> Tie | None:
        if self.stepped:
            step, _, local = param.partition(".")
            param = local if step.isdigit() else param
        return next((t for t in self.ties if (t.param, t.dim) == (param, dim)), None)


def check_rule(rule: KindRule) -> KindRule:
    """Two roles on one tensor dimension must be declared as a tie."""
    seen: dict[tuple[str, int], int] = {}
    for r in rule.roles:
        seen[(r.param, r.dim)] = seen.get((r.param, r.dim), 0) + 1
    for (param, dim), n in seen.items():
        if n > 1 and rule.tie_of(param, dim) is None:
            raise ValueError(f"{rule.kind}: {param} dim {dim} has {n} roles and no Tie")
    return rule
