"""Pydantic models of the spec format (SPEC.md), in its fully spelled `op` form.

Bare words (`relu`) and single-key layers (`conv: {...}`) are normalised to `{op: ...}`
by `spec.normalize` before validation, so one discriminated union describes every layer
and the JSON Schema says exactly what the loader accepts. The union is derived from the
kind registry (`morphspec.kinds`): each kind's record names its model, and registering a
kind rebuilds the models that hold layers. Unknown `op` values fall through
to `BlockCall`; the loader then checks them against `blocks:` and suggests the closest kind.
No torch here: `morph validate` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from morphspec.errors import Mark
from morphspec.kinds import registry

__all__ = [  # noqa: F822 (LAYER_KINDS is a live module attribute, see __getattr__)
    "ACTIVATIONS",
    "LAYER_KINDS",
    "BlockCall",
    "BlockDef",
    "InputSpec",
    "Layer",
    "LayerArgs",
    "Naming",
    "Num",
    "Spec",
]

# Strict: YAML `true` must not pass as the number 1 (pydantic's lax mode would take it).
Num = Annotated[
    StrictInt | StrictFloat | StrictStr,
    Field(description="a number, or an expression over vars and args such as 'floor(64*r)'"),
]
Activation = Literal["relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "identity"]
"""What an `mlp`'s or a reversible unit's `act` may name (builder/layers.py builds them)."""
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
# Checkpoint namings: the declared key converters of morphspec.interop (kept in sync by a test).
Naming = Literal["morphspec", "hf-gpt2", "hf-llama", "hf-qwen2", "hf-gemma", "hf-phi3"]


class LayerArgs(BaseModel):
    """The base of every layer kind's spec model: `op` (a Literal of its kind names, in
    the subclass) and an optional `name`; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, description="the layer's name, so its state_dict prefix")
    op: str


_Layer = LayerArgs
_HOLDING = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Linear(LayerArgs):
    op: Literal["linear"]
    out: Num
    bias: bool = True
    tie: str | None = Field(
        None,
        description="path of an embedding whose weight this layer shares (a tied head);"
        " it then owns no key, so no bias",
    )


class Conv(LayerArgs):
    op: Literal["conv"]
    out: Num
    kernel: Num
    stride: Num = 1
    padding: Num = 0
    dilation: Num = 1
    bias: bool = True


class BatchNorm(LayerArgs):
    op: Literal["batchnorm"]
    eps: Num = 1e-5
    momentum: Num = 0.1


class LayerNorm(LayerArgs):
    op: Literal["layernorm"]
    eps: Num = 1e-5
    bias: bool = True


class RMSNorm(LayerArgs):
    op: Literal["rmsnorm"]
    eps: Num = 1e-5
    offset: Num = Field(
        0, description="the gain is offset + weight (Gemma: 1, its weights start at 0)"
    )


class Act(LayerArgs):
    op: Literal["relu", "silu", "tanh", "sigmoid", "identity"]


class Gelu(LayerArgs):
    op: Literal["gelu"]
    approximate: Literal["none", "tanh"] = Field(
        "none", description="'tanh' is GPT-2's gelu_new; 'none' the exact erf form"
    )


class LeakyRelu(LayerArgs):
    op: Literal["leaky_relu"]
    slope: Num = 0.01


class Pool(LayerArgs):
    op: Literal["maxpool", "avgpool"]
    kernel: Num
    stride: Num | None = None
    padding: Num = 0


class Reshape(LayerArgs):
    op: Literal["global_avgpool", "flatten"]


class Dropout(LayerArgs):
    op: Literal["dropout"]
    p: Num = 0.5


class ChannelPad(LayerArgs):
    op: Literal["channel_pad"]
    out: Num = Field(description="output channels, at least the input's; zeros fill the new ones")


class Embedding(LayerArgs):
    op: Literal["embedding"]
    vocab: Num
    dim: Num
    scale: Num = Field(
        1,
        description="the output is multiplied by it, rounded to float32 and then to the"
        " weight's dtype as Gemma does (Gemma: 'dim ** 0.5')",
    )


class PositionEmbedding(LayerArgs):
    op: Literal["position_embedding"]
    max_len: Num


class Attention(LayerArgs):
    op: Literal["attention"]
    heads: Num
    head_dim: Num
    kv_heads: Num | None = Field(None, description="defaults to heads")
    causal: bool = True
    bias: bool = True
    qkv_bias: bool | None = Field(
        None,
        description="biases of q_proj, k_proj and v_proj apart from o_proj's (Qwen2: true with"
        " bias false); defaults to bias",
    )
    rope: bool = False
    rope_theta: Num = Field(10000, description="the rotary base (Llama's rope_theta)")


class Mlp(LayerArgs):
    op: Literal["mlp"]
    hidden: Num
    act: Activation | dict[Activation, dict[str, Num]] = Field(
        "gelu", description="an activation, bare or single-key: {gelu: {approximate: tanh}}"
    )
    gated: bool = False
    bias: bool = True
    experts: Num = Field(
        1,
        description="experts of a mixture (Mixtral: a router `gate` and `experts.<j>`, each"
        " this MLP); 1 is the dense MLP",
    )
    top_k: Num = Field(
        1, description="experts each token goes to; their router weights renormalised to sum 1"
    )

    @field_validator("act")
    @classmethod
    def _one_act(cls, act: Any) -> Any:
        if isinstance(act, dict):
            if len(act) != 1:
                raise ValueError("'act' takes one activation: a word or {kind: {options}}")
            ((kind, options),) = act.items()
            model_for(kind).model_validate({"op": kind, **options})
        return act


class Sequential(LayerArgs):
    model_config = _HOLDING
    op: Literal["sequential"]
    body: list[Layer]


class Shortcut(BaseModel):
    model_config = _HOLDING
    name: str = "shortcut"
    when: Literal["mismatch", "always"] = "mismatch"
    body: list[Layer] | None = Field(
        None, description="default: 1x1 conv without bias (stride to match) then batchnorm"
    )


class Residual(LayerArgs):
    model_config = _HOLDING
    op: Literal["residual"]
    body: list[Layer]
    shortcut: Shortcut | None = None
    post: Layer | list[Layer] | None = None


class Repeat(LayerArgs):
    model_config = _HOLDING
    op: Literal["repeat"]
    times: Num
    body: list[Layer] | None = None
    block: str | None = None
    args: dict[str, Num | bool] = Field(default_factory=dict)
    first: dict[str, Num | bool] = Field(
        default_factory=dict, description="argument overrides for copy 0"
    )

    @model_validator(mode="after")
    def _body_or_block(self) -> Repeat:
        if (self.body is None) == (self.block is None):
            raise ValueError("a repeat takes exactly one of 'body' or 'block'")
        if self.body is not None and (self.args or self.first):
            raise ValueError("'args' and 'first' apply to a 'block' repeat only")
        return self


class Reversible(LayerArgs):
    op: Literal["hamiltonian", "midpoint", "leapfrog"]
    steps: Num
    hidden: Num
    kernel: Num = 3
    h: Num = 1.0
    act: Activation = "relu"
    memory: Literal["recompute", "store"] = "recompute"


class BlockCall(BaseModel):
    """A use of a template from `blocks:`; its other keys are the template's args."""

    model_config = ConfigDict(extra="allow", frozen=True)
    op: str
    name: str | None = None


def model_for(kind: str) -> type[BaseModel]:
    """The spec model of kind `kind` (its record's), BlockCall for any other name."""
    record = registry.get(kind)
    return record.model if record is not None else BlockCall


def _tag(value: Any) -> str:
    op = value.get("op") if isinstance(value, dict) else getattr(value, "op", None)
    record = registry.get(op) if isinstance(op, str) else None
    return record.model.__name__ if record is not None else "BlockCall"


class _RegisteredLayers:
    """Pydantic metadata: the union of every registered kind's model and BlockCall, tagged
    by class name, rebuilt from the kind registry whenever a kind is added (`_rebuild`)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        models: list[type[BaseModel]] = [
            *dict.fromkeys(k.model for k in registry.all_kinds()),
            BlockCall,
        ]
        choices = tuple(Annotated[model, Tag(model.__name__)] for model in models)
        return handler.generate_schema(Annotated[Union[choices], Discriminator(_tag)])  # noqa: UP007


Layer = Annotated[LayerArgs | BlockCall, _RegisteredLayers()]
"""A layer of a spec: any registered kind's model, or a use of a template."""


class BlockDef(BaseModel):
    """A template: `args` (value `required` for no default) and the layer it stands for."""

    model_config = _HOLDING
    args: dict[str, Num | bool] = Field(default_factory=dict)
    description: str = ""
    layer: Layer


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: list[Num] = Field(
        description="one sample, batch dimension left out; sizes may be expressions over vars"
    )
    dtype: Literal["float32", "int64"] = "float32"


class Spec(BaseModel):
    model_config = _HOLDING
    morphspec: Literal[1] = Field(description="format version")
    name: str
    description: str = ""
    extends: str | None = Field(None, description="a spec file this one overrides")
    vars: dict[str, int | float] = Field(default_factory=dict)
    input: InputSpec
    blocks: dict[str, BlockDef] = Field(default_factory=dict)
    body: list[Layer]
    naming: Naming = Field(
        "morphspec",
        description="how a checkpoint folder names the tensors: 'morphspec' (the state_dict"
        " keys) or a Hugging Face family, read and written through its key converter",
    )
    _source: Any = PrivateAttr(None)  # spec.yamlpos.Located, set by load_spec
    _path: str = PrivateAttr("<spec>")
    _files: list[str] = PrivateAttr(default_factory=list)
    _overridden: frozenset[str] = PrivateAttr(frozenset())

    @property
    def path(self) -> str:
        """The file this spec was read from (its label in error messages)."""
        return self._path

    @property
    def overridden(self) -> frozenset[str]:
        """The vars whose values came from --set rather than from a file."""
        return self._overridden

    @property
    def files(self) -> list[str]:
        """Every file read to make this spec: the spec, then its `extends` bases."""
        return list(self._files)

    def mark(self, loc: tuple[str | int, ...], key: bool = False) -> Mark:
        """The YAML place of the value (or key) at `loc`, for error messages."""
        if self._source is None:
            return Mark(self._path)
        mark: Mark = self._source.mark(loc, key)
        return mark

    def resolved_json(self) -> str:
        """The spec after `extends` and `--set`, as stored in checkpoint headers."""
        return self.model_dump_json(exclude={"extends"}, exclude_defaults=False)


_HOLDERS: tuple[type[BaseModel], ...] = (Sequential, Residual, Repeat, Shortcut, BlockDef, Spec)
"""The models that hold layers, so whose validators change when a kind is registered."""


def _rebuild() -> None:
    """Rebuild the layer holders' validators from the registry, all at once: a holder's
    cached schema embeds the others', so each is dropped before any is rebuilt."""
    for model in _HOLDERS:
        if "__pydantic_core_schema__" in model.__dict__:
            delattr(model, "__pydantic_core_schema__")
    for model in _HOLDERS:
        model.model_rebuild(force=True)


def __getattr__(name: str) -> Any:
    if name == "LAYER_KINDS":  # live: plugins may add kinds after import
        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


registry.subscribe(_rebuild)  # the built-ins need none: holders build on first use
