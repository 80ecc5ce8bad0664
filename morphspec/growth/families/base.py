"""What every growth family shares: the per-tensor pipeline and the common conditions.

One student tensor is made at a time (so conversion streams):

1. fresh values: channel-wise parameters at their neutral values (batchnorm weight 1,
   bias 0, running stats 0/1), weights and biases random at the `--init` scale;
2. the teacher's tensor copied into its leading slice (centred for a grown kernel), bit for
   bit; tensors that must start as the identity and have no teacher (a new projection
   shortcut, Net2DeeperNet's new layers) get an identity stand-in instead;
3. the family's rule for each channel space the tensor touches: first the columns that read
   a widened space (for the rows that must keep their values), then the rows that write it.

Random values are drawn in the storage dtype (they are free; derived values such as
rescale factors stay float64). Everything else is copying, negating, zeroing or dividing,
so no tensor needs a float64 copy of itself. A tensor that starts at zero draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch

from morphspec.arch.nodes import Node
from morphspec.checkpoint.pool import pooled_empty
from morphspec.errors import PlanRefused, Problem
from morphspec.growth import segments
from morphspec.growth.catalog import CATALOG, Conditions, FamilyInfo
from morphspec.growth.experts import finish_router, register_experts
from morphspec.growth.families.facts import Facts, channel_view, rule_or_fail
from morphspec.growth.families.lowprec import LOW_PRECISION, fill_low_precision, scratch_bytes
from morphspec.growth.families.newlayers import NewLayers
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.groups import register_groups, repeat_kv
from morphspec.growth.init import (
    add_normal,
    generator,
    std_of,
    tensor_std,
    uniform_into,
)  # fmt: skip
from morphspec.growth.lifts import check_lifts, lift_consume, lift_produce
from morphspec.growth.options import GrowOptions, RescaleMode
from morphspec.growth.plan import Plan
from morphspec.growth.rescale import Rescaler, rescale

__all__ = ["Facts", "Family", "GrowOptions", "RescaleMode", "TensorGetter", "channel_view"]

TensorGetter = Callable[[str], torch.Tensor]

_rule = rule_or_fail


class Family(NewLayers):
    """Base of the growth families; subclasses set `name` and override the rule hooks."""

    name: ClassVar[str]
    exact: ClassVar[bool] = True
    identity_deepen: ClassVar[bool] = False
    pairs_new_spaces: ClassVar[bool] = False
    ties: ClassVar[Literal["zero", "random", "refuse"]] = "zero"
    """New entries of a tied dimension (K and Kᵀ): zero, random (inexact), or refused."""
    rules_copy: ClassVar[bool] = False
    """`consume` and `produce` only copy, negate or zero entries (no arithmetic), so a
    float16 tensor can be filled in float16 with the same bytes (families/lowprec.py)."""
    lift_split: ClassVar[bool] = False
    """Under the duplication lift, consumers read W/k + R_j, W/k − ΣR_j (R2R), not W/k."""

    def __init__(
        self, plan: Plan, options: GrowOptions | None = None,
        get: TensorGetter | None = None,
    ):  # fmt: skip
        """`get` reads a teacher tensor by key (rescaling needs the teacher's statistics)."""
        self.plan = plan
        self.options = options or GrowOptions()
        self.info: FamilyInfo = CATALOG[self.name]
        self.conditions: Conditions = self.info.conditions
        self.shapes = plan.student.state_shapes()
        self.spreads: dict[str, float] = {}
        """std_of of teacher tensors as stored, by key, once filled: an appended block's
        tensor asks for its reference's spread again (apply.py), a full pass over it."""
        facts = self.new_facts()
        problems = self.check(facts)
        self.facts = facts
        mode = self.options.rescale
        if mode != "none" and not self.conditions.preserves_parameters:
            problems.append(Problem(
                f"--rescale applies to families that keep the teacher's parameters (r2r,"
                f" netmorph); {self.name} already divides consumer columns by replica counts"
            ))  # fmt: skip
            mode = "none"
        self.rescaler: Rescaler = rescale(plan, facts.sizes, mode, get, self.options.allow_inexact)
        problems += self.rescaler.problems
        if problems:
            raise PlanRefused(problems)

    @property
    def sizes(self) -> dict[int, int]:
        return self.facts.sizes

    @property
    def identity_layers(self) -> dict[str, Node]:
        return self.facts.identity_layers

    def new_facts(self) -> Facts:
        """Empty facts for `check` to fill (families with more facts override this)."""
        return Facts(dict(self.plan.teacher_size))

    # -- conditions ---------------------------------------------------------------------
    def check(self, facts: Facts) -> list[Problem]:
        """Every problem this family has with the plan, found before any tensor moves; what
        filling will need is recorded in `facts` (and nowhere else)."""
        plan = self.plan
        grouped, problems = register_groups(plan.teacher, plan.student, plan.graph)
        facts.sizes.update(grouped.sizes)
        facts.units, facts.repeats, facts.inside = grouped.units, grouped.repeats, grouped.inside
        expert_sources: dict[str, str] = {}  # new experts' tensors -> the ones they copy
        problems += register_experts(plan.teacher, plan.student, expert_sources, facts.routers)
        lifted, found = check_lifts(plan.teacher, plan.student, plan.graph, facts.sizes, self.exact)
        facts.lifts, facts.scaled = lifted.lifts, lifted.scaled
        problems += found
        for space in plan.graph.spaces:
            if facts.widened(space) and space.frozen_by:
                node = plan.student.node(space.frozen_by[0])
                why = _rule(node).freezes_input or (
                    "flattens a [T, C] sequence, which interleaves channels (feature t*C + c),"
                    " so new channels would land between old features"
                )
                problems.append(Problem(
                    f"channel space '{space.label}' cannot widen: '{node.path}' ({node.kind})"
                    f" {why}",
                    node.mark,
                ))  # fmt: skip
        for layer, op in plan.kernels.items():
            if not self.conditions.kernel_morph:
                node = plan.student.node(layer)
                problems.append(Problem(
                    f"'{layer}': the kernel grows from {op.old} to {op.new}, which {self.name}"
                    " does not do; use --family netmorph (its kernel-size morph is exact)",
                    node.mark,
                ))  # fmt: skip
        for shortcut in plan.projections:
            problems.extend(self._check_projection(plan.student.node(shortcut), facts))
        for block in plan.new_blocks:
            node = plan.student.node(block)
            problems.extend(self._check_new(f"new block '{block}'", [node], facts))
        for run in plan.insert_runs:
            nodes = [plan.student.node(p) for p in run]
            label = f"new layer{'s' if len(run) > 1 else ''} {', '.join(run)}"
            problems.extend(self._check_new(label, nodes, facts))
        if self.options.new_blocks == "copy" and (
            self.pairs_new_spaces or facts.identity_layers or not self.exact
        ):
            problems.append(Problem(
                f"--new-blocks copy: {self.name} makes a new block start as the identity by"
                " pairing its heads and hidden units (r2r) or by identity layers, which would"
                " overwrite the copied weights; use --family net2net or netmorph on residual"
                " blocks (their o_proj/down_proj start at zero, LLaMA-Pro's rule)",
                plan.student.spec.mark(("body",)),
            ))  # fmt: skip
        placed, found = segments.check(self, facts)
        placed.sources.update(expert_sources)
        facts.segments = placed
        facts.zero_keys |= placed.zero_keys
        return problems + found

    def warnings(self) -> list[str]:
        """Why this family's output may not be function-preserving (empty when exact)."""
        notes = list(self.rescaler.inexact)
        if not self.exact:
            notes.append(f"{self.name} is not function-preserving by design")
        notes.extend(self.eval_only())
        return notes

    def eval_only(self) -> list[str]:
        """Why the student is exact in eval mode only: a batchnorm started as the identity
        (Net2DeeperNet's layers, a new projection's norm) is the identity on its running
        statistics, but in train mode it normalises by each batch's, which no parameters
        can undo for every batch; so is a rescale absorbed in a batchnorm's statistics.
        Empty when the student is exact in train mode too."""
        notes = []
        paths = [p for p, n in self.identity_layers.items() if _rule(n).identity == "batchnorm"]
        if paths:
            notes.append(
                f"batchnorm {', '.join(paths)} start(s) as the identity: exact in eval mode"
                " only; in train mode a batchnorm normalises by the batch's statistics"
            )
        scaled = [p for p, bn in self.rescaler.batchnorms.items() if bn.s_in != 1.0]
        if scaled:
            notes.append(
                f"--rescale: batchnorm {', '.join(scaled)} absorb(s) an input scale through"
                " running statistics and eps: exact in eval mode only; in train mode the batch"
                " statistics give an error of order eps / variance"
            )
        return notes

    @property
    def modes(self) -> tuple[Literal["eval", "train"], ...]:
        """The modes in which the student must reproduce the teacher."""
        return ("eval",) if self.eval_only() else ("eval", "train")

    def widened(self, space: ChannelSpace) -> bool:
        return self.facts.widened(space)

    def applies_to(self, space: ChannelSpace) -> bool:
        """Whether the family's widening rule fills `space`'s new channels. A space that is
        all new (the hidden layer of a new block) has nothing to copy or protect: it stays
        fresh, unless the family pairs it (R2R, whose zero output reads it in pairs)."""
        return self.widened(space) and (self.sizes[space.id] > 0 or self.pairs_new_spaces)

    # -- tensors --------------------------------------------------------------------------
    def tensor(
        self, key: str, teacher: torch.Tensor | None, reference_std: float | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:  # fmt: skip
        """The student's `key` in `dtype`; `reference_std` is the spread of the same tensor
        in the teacher's last repeat copy, for a tensor of an appended copy. A bfloat16 or
        float16 tensor is computed in float64 and rounded once at the end, so a rule that
        is not exact after rounding (W/2 ± R, √(d'/d)) loses one rounding, no more, and
        without a float64 copy of the tensor where it can (families/lowprec.py)."""
        if dtype in LOW_PRECISION:
            return fill_low_precision(self, key, teacher, reference_std, dtype)
        return self._tensor(key, teacher, reference_std, dtype)

    def scratch(self, key: str, dtype: torch.dtype) -> int:
        """Bytes of working memory `tensor(key, ..., dtype)` takes beside its result."""
        return scratch_bytes(self, key, dtype)

    def _tensor(
        self, key: str, teacher: torch.Tensor | None, reference_std: float | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:  # fmt: skip
        shape = self.shapes[key]
        local = key.rsplit(".", 1)[-1]
        node_path = key.rsplit(".", 1)[0]
        if local == "num_batches_tracked":
            return teacher.clone() if teacher is not None else torch.zeros(shape, dtype=dtype)
        roles = list(self.plan.graph.roles(key))
        if teacher is None and node_path in self.identity_layers:
            teacher = self._identity(self.identity_layers[node_path], local, dtype)
        if teacher is not None:
            teacher = self.rescaler.teacher(key, teacher)
        is_channel = any(r.kind == "channel" for r, _ in roles)
        if is_channel:
            node = self.plan.student.node(node_path)
            neutral = _rule(node).neutral.get(local, 0.0)
            if local == "weight" and _rule(node).offset_arg:
                neutral -= node.args.get(_rule(node).offset_arg, 0)
            x = torch.full(shape, neutral, dtype=torch.float64).to(dtype)
        else:
            existing = reference_std
            if teacher is not None:
                existing = std_of(teacher)
                if not self.rescaler.touches(key) and node_path not in self.identity_layers:
                    self.spreads[key] = existing
            std = tensor_std(existing, shape, self.options.init, self.options.init_scale)
            x = pooled_empty(shape, dtype)  # the writer's reused buffer, if it lends one
            gen, noise = generator(self.options.seed, key), generator(self.options.seed, key, "n")
            fresh = [] if key in self.facts.zero_keys else self._new_entries(x, key, teacher)
            for part in fresh:
                uniform_into(part, std, gen)
                if self.options.noise:
                    add_normal(part, self.options.noise * std, noise)
        if teacher is not None:
            region = self.region(key, tuple(teacher.shape))
            if local == "weight" and node_path in self.plan.kernels and self.exact:
                x[tuple(slice(0, n) for n in teacher.shape[:2])] = 0  # the border is zero
            if key in self.facts.inside:
                self.facts.inside[key].place(x, teacher)
            else:
                x[region] = teacher
        self.fix(key, node_path, local, x)
        old_rows = int(teacher.shape[0]) if teacher is not None and teacher.dim() else 0
        lifts, repeats = self.facts.lifts, self.facts.repeats
        for role, space in roles:
            if role.kind == "consumer" and space.id in lifts:
                rows = self.protected_rows(x, key, old_rows)
                if rows is not None:
                    v, d = channel_view(rows, role.dim, role.mult)
                    lift_consume(v, d, lifts[space.id], self.lift_split)
                continue
            space, mult = self.facts.units.get(space.id, (space, role.mult))
            if role.kind == "consumer" and self.applies_to(space):
                rows = self.protected_rows(x, key, old_rows)
                if rows is not None:
                    v, d = channel_view(rows, role.dim, mult)
                    segments.rule(self, True, v, d, space, key, role)
        fill = self.facts.inside.get(key)
        if fill is not None and self.applies_to(fill.space):
            v, d = fill.view(x)
            if fill.op == "consume":
                self.consume(v, d, fill.space, key)
            else:
                self.produce(v, d, fill.space, key, Role(key, fill.dim, "producer", node_path))
        for role, space in roles:
            if space.id in repeats and role.dim == 0 and old_rows:
                repeat_kv(x, old_rows, *repeats[space.id])
        for role, space in roles:
            if role.kind != "consumer" and space.id in lifts:
                v, d = channel_view(x, role.dim, role.mult)
                lift_produce(v, d, lifts[space.id], role.kind == "producer")
                continue
            space, mult = self.facts.units.get(space.id, (space, role.mult))
            if role.kind != "consumer" and self.applies_to(space) and space.id not in repeats:
                v, d = channel_view(x, role.dim, mult)
                segments.rule(self, False, v, d, space, key, role)
        if key in self.facts.scaled:
            x.div_(self.facts.scaled[key])
        segments.finish(self, key, x, roles)
        if key in self.facts.routers:
            finish_router(x, self.facts.routers[key])
        return x

    def source_key(self, key: str) -> str:
        """The teacher tensor that student `key` starts from (ode-refine: the refined step)."""
        return self.facts.segments.sources.get(key, key)

    def _new_entries(
        self, x: torch.Tensor, key: str, teacher: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """Views of `x` outside the teacher's leading slice (the whole of `x` when there is
        no teacher, or its kernel grows): only those need random values."""
        if teacher is None or key.rsplit(".", 1)[0] in self.plan.kernels:
            return [x]
        if key in self.facts.inside:  # new entries inside every head: draw them all
            return [x]
        parts = []
        for d in range(x.dim()):
            if x.shape[d] > teacher.shape[d]:
                v = x
                for k in range(d):
                    v = v.narrow(k, 0, teacher.shape[k])
                parts.append(v.narrow(d, teacher.shape[d], x.shape[d] - teacher.shape[d]))
        return parts

    def region(self, key: str, tshape: tuple[int, ...]) -> tuple[slice, ...]:
        """Where the teacher's tensor goes: the leading slice, centred in a grown kernel."""
        grown = self.plan.kernels.get(key.rsplit(".", 1)[0])
        if grown is None or not key.endswith(".weight") or len(tshape) != 4:
            return tuple(slice(0, n) for n in tshape)
        off = (grown.new - grown.old) // 2
        return (slice(0, tshape[0]), slice(0, tshape[1]),
                slice(off, off + tshape[2]), slice(off, off + tshape[3]))  # fmt: skip

    def protected_rows(self, x: torch.Tensor, key: str, old_rows: int) -> torch.Tensor | None:
        """The rows whose outputs must not change: the teacher's (real or stand-in) rows;
        every row of a new block's last layer that must output zero."""
        if key in self.facts.zero_rows or key in self.facts.inside:
            return x  # head_dim: the teacher's rows are spread over the heads
        return x.narrow(0, 0, old_rows) if old_rows else None

    def _identity(self, node: Node, local: str, dtype: torch.dtype) -> torch.Tensor:
        """The teacher-sized identity stand-in for `node`'s parameter `local`."""
        roles = list(self.plan.graph.roles(node.key(local)))
        a = self.sizes[roles[0][1].id] if roles else 0
        if _rule(node).identity == "batchnorm":
            # weight √(1+eps) and running_var 1: (x - 0)/√(1+eps)·√(1+eps) + 0 = x exactly.
            value = {"weight": math.sqrt(1.0 + node.args["eps"]), "running_var": 1.0}
            return torch.full((a,), value.get(local, 0.0), dtype=torch.float64).to(dtype)
        if local == "bias":
            return torch.zeros(a, dtype=dtype)
        spatial = len(node.params["weight"]) == 4
        k = node.args["kernel"] if spatial else 1
        w = torch.zeros((a, a, k, k) if spatial else (a, a), dtype=dtype)
        idx = torch.arange(a)
        if spatial:
            w[idx, idx, k // 2, k // 2] = 1
        else:
            w[idx, idx] = 1
        return w

    # -- the family's rule ---------------------------------------------------------------
    def fix(self, key: str, node_path: str, local: str, x: torch.Tensor) -> None:
        """Values fixed before the widening rules: the zeros of new residual blocks."""
        if key in self.facts.zero_keys:
            x.zero_()

    def consume(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str) -> None:
        """Set the columns of a widened space's new channels, for rows that keep values."""

    def produce(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str, role: Role) -> None:
        """Set the rows (or channel-wise entries) of a widened space's new channels."""
