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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from morphspec.growth.rule import APPEND, KindRule, Layout, ParamRole, Tie, check_rule
from morphspec.kinds import registry

__all__ = [
    "APPEND",
    "BUILTIN_RULES",
    "KINDS",
    "KindRule",
    "Layout",
    "ParamRole",
    "Tie",
    "kinds_where",
    "rule_of",
]


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


def _leapfrog_steps(old: int, new: int) -> str:
    return (
        "a leapfrog step with zero force maps (U[j-1], U[j]) to (U[j], 2U[j] - U[j-1]), an"
        " extrapolation, so appended steps cannot start as the identity and no exact"
        " deepening exists; use --family ode-refine (halve h, double the steps), which"
        " reports the deviation"
    )


def _midpoint_steps(old: int, new: int) -> str | None:
    if (new - old) % 2 == 0:
        return None
    return (
        "a midpoint step with zero force swaps (U[j-1], U[j]) to (U[j], U[j-1]), so only an"
        " even number of appended steps gives the output back; append"
        f" {new - old - 1} or {new - old + 1} steps"
    )


def _activation(kind: str, **flags: Any) -> KindRule:
    """A channel-wise op without parameters: it keeps its input's space."""
    return KindRule(kind, "keep", keeps_channels_independent=True, **flags)


BUILTIN_RULES: tuple[KindRule, ...] = tuple(
    check_rule(r)
    for r in (
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
            "layernorm",
            "keep",
            _channel("weight", "bias"),
            mixes_channels=True,
            neutral=_NORM_NEUTRAL,
            fill_lift="mean",
        ),
        KindRule(
            "rmsnorm",
            "keep",
            _channel("weight"),
            mixes_channels=True,
            neutral=_NORM_NEUTRAL,
            fill_lift="zero",
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
            "embedding",
            "new",
            (ParamRole("weight", 1, "producer", "out"),),
            grows=frozenset({"dim"}),
        ),
        # Added to the stream: its columns write the stream's channels like a producer's rows,
        # so new columns are drawn, and paired (R2R) or copied (Net2Net) with the space.
        # On new channels it maps 0 to 0 where producers' new rows are zero (NetMorph's `in`).
        KindRule(
            "position_embedding",
            "keep",
            (ParamRole("weight", 1, "producer", "in"),),
            zero_fixed=True,
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
                *(
                    ParamRole(f"q_proj.{t}", 0, "producer", "heads", _HEADS)
                    for t in ("weight", "bias")
                ),
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
            grouped=True,
        ),
        _reversible("hamiltonian"),
        replace(_reversible("midpoint"), appended_steps=_midpoint_steps),
        replace(_reversible("leapfrog"), appended_steps=_leapfrog_steps),
        KindRule("sequential", "container"),
        KindRule("residual", "container"),
        KindRule("repeat", "container", grows=frozenset({"times"})),
    )
)
"""The built-in kinds' rules; `morphspec.kinds.builtin` puts each in its kind's record."""


class _Rules(Mapping[str, KindRule]):
    """Every registered kind's growth rule, read live from the kind registry."""

    def __getitem__(self, kind: str) -> KindRule:
        rule = rule_of(kind)
        if rule is None:
            raise KeyError(kind)
        return rule

    def __iter__(self) -> Iterator[str]:
        return (k.name for k in registry.all_kinds() if k.growth is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


KINDS: Mapping[str, KindRule] = _Rules()
"""Every kind growth knows; a kind with parameters and no entry is refused."""


def rule_of(kind: str) -> KindRule | None:
    """The entry for `kind`, None for a kind growth does not know."""
    record = registry.get(kind)
    return record.growth if record is not None else None


def kinds_where(pred: Callable[[KindRule], bool]) -> frozenset[str]:
    """The kinds whose entry satisfies `pred` (for messages and tables)."""
    return frozenset(k for k, r in KINDS.items() if pred(r))
