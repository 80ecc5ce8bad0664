"""What growth knows about each layer kind, in one place (no torch).

An entry says, for one kind of SPEC.md:

- how the kind moves channel spaces (`flow`): `keep` (its output lies in its input's space:
  activations, norms, pooling), `new` (it writes a new space: linear, conv, mlp, ...),
  `flatten` (the graph handles the reshape), `container` (sequential, repeat, residual);
- its parameter **roles**: which dimension of which tensor produces (writes), consumes
  (reads) or is channel-wise in which space (`in`, `out`, or an inner space sized by args),
  with the dimension's **layout**: where new entries go (appended at the end; per segment,
  each segment growing at its own end; per group, heads x head_dim);
- **ties**: two roles on one tensor dimension (a weight read as K and as Kᵀ), which a
  family must fill once, consistently, or refuse;
- which arguments may grow (`grows`), how it treats channels (independent, mixing like a
  norm, σ(0)=0, idempotent, positively homogeneous, non-negative output), the neutral
  values of its channel-wise parameters and its identity stand-in.

The graph, the planner, the conditions, the rescaler and the families read only from here.
A kind with parameters and no entry is refused at plan time (`unknown_kind_problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "APPEND",
    "KINDS",
    "KindRule",
    "Layout",
    "ParamRole",
    "Tie",
    "kinds_where",
    "rule_of",
]

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


def _check(rule: KindRule) -> KindRule:
    """Two roles on one tensor dimension must be declared as a tie."""
    seen: dict[tuple[str, int], int] = {}
    for r in rule.roles:
        seen[(r.param, r.dim)] = seen.get((r.param, r.dim), 0) + 1
    for (param, dim), n in seen.items():
        if n > 1 and rule.tie_of(param, dim) is None:
            raise ValueError(f"{rule.kind}: {param} dim {dim} has {n} roles and no Tie")
    return rule


def _conv_identity_problem(a: Mapping[str, Any]) -> str | None:
    if a["kernel"] % 2 == 0 or a["stride"] != 1:
        return "needs an odd kernel and stride 1 to be the identity"
    if a["padding"] != a["dilation"] * (a["kernel"] - 1) // 2:
        return "needs 'same' padding to be the identity"
    return None


def _matrix(param: str = "weight", bias: str = "bias") -> tuple[ParamRole, ...]:
    return (
        ParamRole(param, 1, "consumer", "in"),
        ParamRole(param, 0, "producer", "out"),
        ParamRole(bias, 0, "producer", "out"),
    )


_BN_NEUTRAL = MappingProxyType(
    {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
)
_NORM_NEUTRAL = MappingProxyType({"weight": 1.0, "bias": 0.0})
_HEADS = Layout("groups", groups="heads", per_group="head_dim")
_KV = Layout("groups", groups="kv_heads", per_group="head_dim")


def _channel(*params: str) -> tuple[ParamRole, ...]:
    return tuple(ParamRole(p, 0, "channel", "in") for p in params)


def _tied_kernel(k: str, b: str, reads: Layout, writes: Layout) -> tuple[ParamRole, ...]:
    """K [hidden, channels, k, k] of f = Kᵀσ(K x + b): dim 0 writes `hidden` (K x) and reads
    it back (Kᵀ), dim 1 reads the `reads` channels (K x) and writes the `writes` ones (Kᵀ)."""
    return (
        ParamRole(k, 0, "producer", "hidden"),
        ParamRole(k, 0, "consumer", "hidden"),
        ParamRole(k, 1, "consumer", "in", reads),
        ParamRole(k, 1, "producer", "in", writes),
        ParamRole(b, 0, "producer", "hidden"),
    )


def _reversible(kind: str) -> KindRule:
    """A reversible unit (builder/reversible.py): its output lies in its input's space; its
    K's two dimensions are each tied (K and Kᵀ). hamiltonian's K1 reads Z (segment 1) and
    writes Y (segment 0), K2 the reverse; midpoint's and leapfrog's K read and write all."""
    if kind == "hamiltonian":
        y, z = Layout("segments", parts=2, segment=0), Layout("segments", parts=2, segment=1)
        roles = _tied_kernel("k1.weight", "b1", z, y) + _tied_kernel("k2.weight", "b2", y, z)
        kernels: tuple[str, ...] = ("k1.weight", "k2.weight")
    else:
        roles, kernels = _tied_kernel("k.weight", "b", APPEND, APPEND), ("k.weight",)
    ties = tuple(
        t
        for k in kernels
        for t in (
            Tie(k, 0, ("producer", "consumer"), transposed=True),
            Tie(k, 1, ("consumer", "producer"), transposed=True),
        )
    )
    # On new channels the unit is the identity once its tied entries there are zero, so it
    # keeps zeros zero (zero_fixed), but it mixes old channels: not channel-independent.
    return KindRule(
        kind, "keep", roles, inner={"hidden": ("hidden",)}, grows=frozenset({"steps", "hidden"}),
        ties=ties, stepped=True, zero_fixed=True,
    )  # fmt: skip


def _activation(kind: str, **flags: Any) -> KindRule:
    """A channel-wise op without parameters: it keeps its input's space."""
    return KindRule(kind, "keep", keeps_channels_independent=True, **flags)


_RULES = [
    KindRule("linear", "new", _matrix(), grows=frozenset({"out"}), identity="matrix"),
    KindRule(
        "conv",
        "new",
        _matrix(),
        grows=frozenset({"out"}),
        identity="matrix",
        identity_problem=_conv_identity_problem,
        kernel_morph=True,
    ),
    KindRule(
        "batchnorm",
        "keep",
        _channel("weight", "bias", "running_mean", "running_var"),
        keeps_channels_independent=True,
        zero_fixed=True,
        absorbs_scale=True,
        zero_at_zero=("bias", "running_mean"),
        zero_gain=("weight", "bias"),
        neutral=_BN_NEUTRAL,
        identity="batchnorm",
    ),
    # batchnorm maps 0 to 0 on channels whose running_mean and bias are 0 (new channels).
    KindRule(
        "layernorm", "keep", _channel("weight", "bias"), mixes_channels=True, neutral=_NORM_NEUTRAL
    ),
    KindRule(
        "rmsnorm",
        "keep",
        _channel("weight"),
        mixes_channels=True,
        neutral=_NORM_NEUTRAL,
        offset_arg="offset",
    ),
    _activation(
        "relu",
        zero_fixed=True,
        idempotent=True,
        identity_on_nonneg=True,
        homogeneous=True,
        nonneg_out=True,
    ),
    _activation("leaky_relu", zero_fixed=True, identity_on_nonneg=True, homogeneous=True),
    _activation("gelu", zero_fixed=True),
    _activation("silu", zero_fixed=True),
    _activation("tanh", zero_fixed=True),
    _activation("sigmoid", nonneg_out=True),
    _activation(
        "identity",
        zero_fixed=True,
        idempotent=True,
        is_identity=True,
        homogeneous=True,
        keeps_nonneg=True,
    ),
    _activation(
        "dropout",
        zero_fixed=True,
        idempotent=True,
        is_identity=True,
        homogeneous=True,
        keeps_nonneg=True,
    ),
    _activation("maxpool", zero_fixed=True, homogeneous=True, keeps_nonneg=True),
    _activation("avgpool", zero_fixed=True, homogeneous=True, keeps_nonneg=True),
    _activation("global_avgpool", zero_fixed=True, homogeneous=True, keeps_nonneg=True),
    KindRule("flatten", "flatten", keeps_nonneg=True),
    # Parameter-free: its output is [input | zeros]; growth/segments.py places the input's
    # channels and the zero channels of a widened output (both grow, each at its own end).
    KindRule("channel_pad", "new", grows=frozenset({"out"}), pads=True),
    KindRule(
        "embedding", "new", (ParamRole("weight", 1, "producer", "out"),), grows=frozenset({"dim"})
    ),
    # Added to the stream: its columns write the stream's channels like a producer's rows,
    # so new columns are drawn, and paired (R2R) or copied (Net2Net) with the space.
    # On new channels it maps 0 to 0 where producers' new rows are zero (NetMorph's `in`).
    KindRule(
        "position_embedding", "keep", (ParamRole("weight", 1, "producer", "in"),), zero_fixed=True
    ),
    KindRule(
        "mlp",
        "new",
        (
            *(ParamRole(f"{p}.weight", 1, "consumer", "in") for p in ("up_proj", "gate_proj")),
            *(
                ParamRole(f"{p}.{t}", 0, "producer", "hidden")
                for p in ("up_proj", "gate_proj")
                for t in ("weight", "bias")
            ),
            ParamRole("down_proj.weight", 1, "consumer", "hidden"),
            ParamRole("down_proj.weight", 0, "producer", "out"),
            ParamRole("down_proj.bias", 0, "producer", "out"),
            ParamRole("gate.weight", 1, "consumer", "in"),  # the router of a mixture
        ),
        inner={"hidden": ("hidden",)},
        grows=frozenset({"hidden", "experts", "top_k"}),
        nested="experts",
    ),
    # heads and kv_heads grow by whole kv groups (or kv heads repeat), head_dim inside every
    # head: growth/groups.py.
    KindRule(
        "attention",
        "new",
        (
            *(
                ParamRole(f"{p}.weight", 1, "consumer", "in")
                for p in ("q_proj", "k_proj", "v_proj")
            ),
            *(ParamRole(f"q_proj.{t}", 0, "producer", "heads", _HEADS) for t in ("weight", "bias")),
            *(
                ParamRole(f"{p}.{t}", 0, "producer", "kv", _KV)
                for p in ("k_proj", "v_proj")
                for t in ("weight", "bias")
            ),
            ParamRole("o_proj.weight", 1, "consumer", "heads", _HEADS),
            ParamRole("o_proj.weight", 0, "producer", "out"),
            ParamRole("o_proj.bias", 0, "producer", "out"),
        ),
        inner={"heads": ("heads", "head_dim"), "kv": ("kv_heads", "head_dim")},
        grows=frozenset({"heads", "kv_heads", "head_dim"}),
    ),
    _reversible("hamiltonian"),
    _reversible("midpoint"),
    _reversible("leapfrog"),
    KindRule("sequential", "container"),
    KindRule("residual", "container"),
    KindRule("repeat", "container", grows=frozenset({"times"})),
]

KINDS: Mapping[str, KindRule] = MappingProxyType({r.kind: _check(r) for r in _RULES})
"""Every kind growth knows; a kind with parameters and no entry is refused."""


def rule_of(kind: str) -> KindRule | None:
    """The entry for `kind`, None for a kind growth does not know."""
    return KINDS.get(kind)


def kinds_where(pred: Callable[[KindRule], bool]) -> frozenset[str]:
    """The kinds whose entry satisfies `pred` (for messages and tables)."""
    return frozenset(k for k, r in KINDS.items() if pred(r))
