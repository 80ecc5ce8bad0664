"""`resolve(spec) -> Arch`: expand templates and repeats, evaluate expressions, name every
node by the SPEC.md rules and infer shapes, refusing what cannot run with the YAML place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from morphspec.arch import leaves
from morphspec.arch.nodes import Arch, Node, TensorShape
from morphspec.arch.shortcut import default_shortcut
from morphspec.arch.ties import check_tie
from morphspec.arch.values import Values
from morphspec.errors import Mark, SpecError, closest
from morphspec.kinds import registry
from morphspec.spec import models as m
from morphspec.spec.expr import Number
from morphspec.spec.limits import MAX_LAYERS, limit, over
from morphspec.spec.yamlpos import Loc

__all__ = ["resolve"]

MAX_TEMPLATE_DEPTH = 32


def resolve(spec: m.Spec) -> Arch:
    """Resolve a loaded spec; raises SpecError naming the file, line and column."""
    ctx = _Resolver(spec)
    shape = _input_shape(spec, ctx)
    children = ctx.layers(spec.body, ("body",), dict(spec.vars), shape, "")
    out = children[-1].out if children else shape
    root = Node("sequential", "", "", {}, shape, out, spec.mark(()), tuple(children))
    arch = Arch(spec, root)
    for node, where in ctx.ties:
        check_tie(arch, node, where)
    return arch


def _input_shape(spec: m.Spec, ctx: _Resolver) -> TensorShape:
    where = spec.mark(("input", "shape"))
    raw = spec.input.shape
    if not raw:
        raise SpecError("input shape [] must list positive sizes", where)
    loc: Loc = ("input", "shape")
    dims = tuple(ctx.count(d, (*loc, i), spec.vars, f"input size {i}") for i, d in enumerate(raw))
    if spec.input.dtype == "int64":
        if len(dims) != 1:
            raise SpecError("int64 input is a sequence of token ids: shape [T]", where)
        return TensorShape(dims, "tokens", "int64")
    layouts = {1: "vector", 2: "sequence", 3: "image"}
    if len(dims) not in layouts:
        raise SpecError(
            f"input shape {list(dims)}: use [C] (features), [T, C] (a sequence)"
            " or [C, H, W] (an image)",
            where,
        )
    return TensorShape(dims, layouts[len(dims)])  # type: ignore[arg-type]


class _Resolver(Values):
    def __init__(self, spec: m.Spec):
        super().__init__(spec)
        self.stack: list[str] = []
        self.made = 0  # layers resolved so far, held to MAX_LAYERS
        self.ties: list[tuple[Node, Mark]] = []

    # -- lists and layers --------------------------------------------------------------
    def layers(
        self, body: list[Any], loc: Loc, env: dict[str, Number], shape: TensorShape, prefix: str
    ) -> list[Node]:
        nodes: list[Node] = []
        seen: dict[str, Loc] = {}
        for i, layer in enumerate(body):
            here = (*loc, i)
            name = layer.name if layer.name is not None else str(i)
            if name in seen:
                raise SpecError(
                    f"two layers named '{name}' in one list; names must be unique"
                    f" (the first is at {self.mark(seen[name])})",
                    self.mark(here),
                )
            if "." in name or not name:
                raise SpecError(
                    f"layer name '{name}' must be non-empty without dots", self.mark(here)
                )
            seen[name] = here
            node = self.layer(layer, here, env, shape, name, prefix)
            nodes.append(node)
            shape = node.out
        return nodes

    def layer(
        self,
        layer: Any,
        loc: Loc,
        env: dict[str, Number],
        shape: TensorShape,
        name: str,
        prefix: str,
    ) -> Node:
        path = f"{prefix}.{name}" if prefix else name
        self.made += 1
        if self.made > limit(MAX_LAYERS):
            raise SpecError(over(MAX_LAYERS, "the number of layers"), self.mark(loc))
        if isinstance(layer, m.BlockCall):
            return self.call(layer, loc, env, shape, name, path)
        if isinstance(layer, m.Sequential):
            children = self.layers(layer.body, (*loc, "body"), env, shape, path)
            out = children[-1].out if children else shape
            return Node("sequential", name, path, {}, shape, out, self.mark(loc), tuple(children))
        if isinstance(layer, m.Residual):
            return self.residual(layer, loc, env, shape, name, path)
        if isinstance(layer, m.Repeat):
            return self.repeat(layer, loc, env, shape, name, path)
        record = registry.get(layer.op)
        args = self.leaf_args(layer, loc, env, record.real_args if record else frozenset())
        if isinstance(args.get("steps"), int):  # a reversible unit's steps are layers too,
            self.made += args["steps"]  # counted before any of them is expanded
            if self.made > limit(MAX_LAYERS):
                raise SpecError(
                    over(MAX_LAYERS, f"'steps: {args['steps']}' makes the number of layers, which"),
                    self.mark((*loc, "steps")),
                )
        shares = record.shares if record is not None else ""
        if shares and args.get(shares) is not None:
            if args.get("bias") and "bias" in layer.model_fields_set:
                raise SpecError(
                    f"{layer.op} '{path}' is tied to '{args[shares]}' and so owns no key: it"
                    " has no bias; remove 'bias: true'",
                    self.mark((*loc, "bias")),
                )
            if "bias" in args:
                args["bias"] = False
        try:
            node = leaves.make(layer.op, name, path, args, shape, self.mark(loc))
        except leaves.ShapeError as exc:
            field = exc.field
            if field:
                raise self.fail(
                    f"{layer.op} '{path}': {exc}", getattr(layer, field, None), (*loc, field), env
                ) from None
            raise SpecError(f"{layer.op} '{path}': {exc}", self.mark(loc, key=True)) from None
        if shares and args.get(shares) is not None:
            self.ties.append((node, self.mark((*loc, shares))))
        return node

    def leaf_args(
        self, layer: BaseModel, loc: Loc, env: Mapping[str, Number], reals: frozenset[str]
    ) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for field, value in layer:
            if field in ("op", "name"):
                continue
            here = (*loc, field)
            if field == "act" and isinstance(layer, m.Mlp):
                args["act"], args["act_options"] = _act(value, here, self, env)
            elif value is None or isinstance(value, bool) or field in _WORDS:
                args[field] = value
            elif field in leaves.REAL_ARGS or field in reals:
                args[field] = self.real(value, here, env)
            elif field in leaves.COUNT_ARGS:
                args[field] = self.count(value, here, env, f"'{field}'")
            else:
                args[field] = self.natural(value, here, env, f"'{field}'")
        return args

    def residual(
        self,
        layer: m.Residual,
        loc: Loc,
        env: dict[str, Number],
        shape: TensorShape,
        name: str,
        path: str,
    ) -> Node:
        body = self.layers(layer.body, (*loc, "body"), env, shape, path)
        if not body:
            raise SpecError("a residual needs a non-empty body", self.mark(loc))
        self.unique_residual_names(layer, loc, body)
        out = body[-1].out
        sc = layer.shortcut
        shortcut: Node | None = None
        needs = out != shape
        if sc is not None and (sc.when == "always" or needs):
            sloc: Loc = (*loc, "shortcut")
            spath = f"{path}.{sc.name}"
            if sc.body is not None:
                kids = self.layers(sc.body, (*sloc, "body"), env, shape, spath)
            else:
                kids = default_shortcut(shape, out, self.mark(sloc), spath)
            s_out = kids[-1].out if kids else shape
            if s_out != out:
                raise SpecError(
                    f"residual '{path}': the shortcut gives {s_out} but the body gives {out}",
                    self.mark(sloc),
                )
            shortcut = Node(
                "sequential", sc.name, spath, {}, shape, s_out, self.mark(sloc), tuple(kids)
            )
        elif needs:
            raise SpecError(
                f"residual '{path}' sums tensors of unequal shapes: the body gives {out},"
                f" the input is {shape}; add 'shortcut: {{name: downsample}}' (a projection)"
                " or make the body keep the shape",
                self.mark(loc, key=True),
            )
        post_layers = (
            layer.post if isinstance(layer.post, list) else [layer.post] if layer.post else []
        )
        post: list[Node] = []
        single = not isinstance(layer.post, list)
        p_shape = out
        for i, p in enumerate(post_layers):
            ploc: Loc = (*loc, "post") if single else (*loc, "post", i)
            pname = p.name or ("post" if single else f"post{i}")
            node = self.layer(p, ploc, env, p_shape, pname, path)
            post.append(node)
            p_shape = node.out
        return Node(
            "residual", name, path, {}, shape, p_shape, self.mark(loc, key=True),
            tuple(body), shortcut, tuple(post),
        )  # fmt: skip

    def unique_residual_names(self, layer: m.Residual, loc: Loc, body: list[Node]) -> None:
        """Body, shortcut and post layers share the residual's key prefix: names must differ."""
        seen: dict[str, Loc] = {n.name: (*loc, "body", i) for i, n in enumerate(body)}
        named: list[tuple[str, Loc]] = []
        if layer.shortcut is not None:
            named.append((layer.shortcut.name, (*loc, "shortcut")))
        if isinstance(layer.post, list):
            named += [(p.name or f"post{i}", (*loc, "post", i)) for i, p in enumerate(layer.post)]
        elif layer.post is not None:
            named.append((layer.post.name or "post", (*loc, "post")))
        for name, here in named:
            if "." in name or not name:
                raise SpecError(
                    f"layer name '{name}' must be non-empty without dots", self.mark(here)
                )
            if name in seen:
                raise SpecError(
                    f"two layers named '{name}' in one residual (body, shortcut and post share"
                    f" its keys); the first is at {self.mark(seen[name])}",
                    self.mark(here),
                )
            seen[name] = here

    def repeat(
        self,
        layer: m.Repeat,
        loc: Loc,
        env: dict[str, Number],
        shape: TensorShape,
        name: str,
        path: str,
    ) -> Node:
        times = self.count(layer.times, (*loc, "times"), env, "'times'")
        if self.made + times > limit(MAX_LAYERS):
            raise self.fail(
                over(MAX_LAYERS, f"'times: {times}' makes the number of layers, which"),
                layer.times, (*loc, "times"), env,
            )  # fmt: skip
        copies: list[Node] = []
        before = self.made
        for i in range(times):
            cname, cpath = str(i), f"{path}.{i}"
            if layer.body is not None:
                kids = self.layers(layer.body, (*loc, "body"), env, shape, cpath)
                out = kids[-1].out if kids else shape
                node = Node("sequential", cname, cpath, {}, shape, out, self.mark(loc), tuple(kids))
            else:
                assert layer.block is not None
                given = dict(layer.args)
                locs: dict[str, Loc] = {k: (*loc, "args", k) for k in given}
                if i == 0:
                    given.update(layer.first)
                    locs.update({k: (*loc, "first", k) for k in layer.first})
                node = self.instantiate(
                    layer.block, (*loc, "block"), given, locs, env, shape, cname, cpath
                )
            copies.append(node)
            shape = node.out
            if i == 0 and before + times * (self.made - before) > limit(MAX_LAYERS):
                raise self.fail(
                    over(MAX_LAYERS, f"'times: {times}' makes the number of layers, which"),
                    layer.times, (*loc, "times"), env,
                )  # fmt: skip
        return Node(
            "repeat",
            name,
            path,
            {"times": times},
            copies[0].inp,
            shape,
            self.mark(loc, key=True),
            tuple(copies),
        )

    def call(
        self,
        layer: m.BlockCall,
        loc: Loc,
        env: dict[str, Number],
        shape: TensorShape,
        name: str,
        path: str,
    ) -> Node:
        given = {k: v for k, v in (layer.model_extra or {}).items()}
        locs: dict[str, Loc] = {k: (*loc, k) for k in given}
        return self.instantiate(layer.op, (*loc, "op"), given, locs, env, shape, name, path)

    def instantiate(
        self,
        block: str,
        loc: Loc,
        given: Mapping[str, Any],
        locs: Mapping[str, Loc],
        env: dict[str, Number],
        shape: TensorShape,
        name: str,
        path: str,
    ) -> Node:
        template = self.spec.blocks.get(block)
        if template is None:
            known = [*m.LAYER_KINDS, *self.spec.blocks]
            raise SpecError(
                f"unknown layer kind or block '{block}'{closest(block, known)}", self.mark(loc)
            )
        if block in self.stack or len(self.stack) > MAX_TEMPLATE_DEPTH:
            raise SpecError(
                f"block '{block}' uses itself: {' -> '.join([*self.stack, block])}", self.mark(loc)
            )
        inner: dict[str, Number] = dict(self.spec.vars)
        for key, default in template.args.items():
            if key not in given and default == "required":
                raise SpecError(f"block '{block}' needs the argument '{key}'", self.mark(loc))
        for key, value in given.items():
            if key not in template.args:
                raise SpecError(
                    f"block '{block}' has no argument '{key}'{closest(key, template.args)}"
                    f" (its args: {', '.join(template.args) or 'none'})",
                    self.mark(locs[key], key=True),
                )
            inner[key] = value if isinstance(value, bool) else self.number(value, locs[key], env)
        tloc: Loc = ("blocks", block)
        for key, default in template.args.items():
            if key not in given:
                inner[key] = (
                    default
                    if isinstance(default, bool)
                    else self.number(default, (*tloc, "args", key), inner)
                )
        self.stack.append(block)
        try:
            node = self.layer(
                template.layer, (*tloc, "layer"), inner, shape, name, path.rpartition(".")[0]
            )
        finally:
            self.stack.pop()
        return _with_block(node, block)


_WORDS = ("act", "memory", "tie", "approximate")


def _act(
    value: Any, loc: Loc, ctx: _Resolver, env: Mapping[str, Number]
) -> tuple[str, dict[str, Any]]:
    """An mlp's activation, bare (`gelu`) or single-key (`{gelu: {approximate: tanh}}`)."""
    if isinstance(value, str):
        return value, {}
    ((kind, options),) = value.items()
    out: dict[str, Any] = {}
    for key, v in options.items():
        out[key] = v if key == "approximate" else ctx.real(v, (*loc, kind, key), env)
    return kind, out


def _with_block(node: Node, block: str) -> Node:
    from dataclasses import replace

    return replace(node, block=block)
