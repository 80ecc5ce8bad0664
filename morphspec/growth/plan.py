"""`diff(teacher, student) -> Plan`: what growing the teacher into the student means.

Nodes match by path. A Plan lists typed operations (widen a channel space, append
`repeat` copies, add a projection shortcut) and is plain data: printable, JSON, testable
without tensors. Anything else (a removed or renamed layer, a narrower width, a changed
kind, stride or kernel, a different input or output) is refused with both YAML places.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from morphspec.arch import resolve
from morphspec.arch.nodes import Arch, Node
from morphspec.errors import PlanRefused, Problem
from morphspec.growth.align import align
from morphspec.growth.experts import expert_growths
from morphspec.growth.graph import SpaceGraph, space_graph
from morphspec.growth.groups import head_growths
from morphspec.growth.kinds import rule_of
from morphspec.growth.ops import (
    AddExperts,
    AddProjection,
    AddSteps,
    GrowKernel,
    InsertBlocks,
    InsertLayers,
    InterleaveBlocks,
    Op,
    PlanRow,
    WidenSpace,
)
from morphspec.growth.steps import steps_op
from morphspec.growth.unknown import unfilled_layouts, unknown_kinds, unruled_dims
from morphspec.spec import load_spec
from morphspec.spec.load import SetArg

__all__ = [
    "AddExperts", "AddProjection", "AddSteps", "GrowKernel", "InsertBlocks", "InsertLayers",
    "InterleaveBlocks", "Plan",
    "WidenSpace", "diff", "plan_for",
]  # fmt: skip

IGNORED = {"momentum", "memory"}  # training-time only: never change what the network computes


@dataclass(frozen=True)
class Plan:
    """The operations that turn `teacher` into `student`, plus what the families need.
    Final once made: `plan_for(..., interleave=True)` returns the interleaved plan."""

    teacher: Arch
    student: Arch
    ops: list[Op]
    graph: SpaceGraph
    teacher_size: dict[int, int]
    new_blocks: dict[str, int] = field(default_factory=dict)
    projections: dict[str, str] = field(default_factory=dict)
    kernels: dict[str, GrowKernel] = field(default_factory=dict)
    insert_runs: list[tuple[str, ...]] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    """Block paths of the appended layout -> their places (`growth/interleave.py`)."""
    copy_from: dict[str, int] = field(default_factory=dict)
    """New blocks (appended layout) -> the teacher copy that will precede each once
    interleaved, which `--new-blocks copy` copies (LLaMA-Pro); absent: the last copy."""

    @property
    def widens(self) -> list[WidenSpace]:
        return [op for op in self.ops if isinstance(op, WidenSpace)]

    @property
    def steps(self) -> list[AddSteps]:
        return [op for op in self.ops if isinstance(op, AddSteps)]

    @property
    def inserts(self) -> list[InsertBlocks]:
        return [op for op in self.ops if isinstance(op, InsertBlocks)]

    def new_block_of(self, key: str) -> str | None:
        """The appended repeat copy that holds `key`, if any."""
        for block in self.new_blocks:
            if key.startswith(block + "."):
                return block
        return None

    @property
    def inserted(self) -> list[str]:
        """Paths of the layers inserted between the teacher's."""
        return [p for run in self.insert_runs for p in run]

    def reference_key(self, key: str) -> str | None:
        """For a tensor of an appended block: the same tensor in the teacher's last copy."""
        block = self.new_block_of(key)
        if block is None:
            return None
        repeat, _, _ = block.rpartition(".")
        last = self.new_blocks[block]
        ref = f"{repeat}.{last}{key[len(block) :]}"
        return ref if ref in self.teacher.state_shapes() else None

    def copy_key(self, key: str) -> str | None:
        """For a tensor of an appended block: the teacher tensor `--new-blocks copy` starts
        it from, the block that precedes it (the teacher's last unless interleaved)."""
        block = self.new_block_of(key)
        if block is None or block not in self.copy_from:
            return self.reference_key(key)
        repeat, _, _ = block.rpartition(".")
        ref = f"{repeat}.{self.copy_from[block]}{key[len(block) :]}"
        return ref if ref in self.teacher.state_shapes() else self.reference_key(key)

    def student_key(self, key: str) -> str:
        """Where tensor `key` of the appended layout ends up (itself unless interleaved)."""
        return _moved(key, self.renames)

    def source_key(self, key: str) -> str:
        """The appended-layout key of the student's `key` (the inverse of student_key)."""
        return _moved(key, {v: k for k, v in self.renames.items()})

    def describe(self, family: str = "r2r") -> list[PlanRow]:
        """Typed rows, one per operation, as `family` carries it out (growth/describe.py)."""
        from morphspec.growth.describe import describe  # it imports this module's ops

        return describe(self, family)

    def to_json(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.name,
            "student": self.student.name,
            "params_before": self.teacher.trainable_count(),
            "params_after": self.student.trainable_count(),
            "ops": [_op_json(op) for op in self.ops],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def _moved(key: str, renames: dict[str, str]) -> str:
    for src, dst in renames.items():
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    return key


def _op_json(op: Op) -> dict[str, Any]:
    out = asdict(op)
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = [list(x) if isinstance(x, tuple) else x for x in v]
    return out


def _where(t: Node, s: Node) -> str:
    return f"teacher {t.mark}, student {s.mark}"


def diff(teacher: Arch, student: Arch) -> Plan:
    """Match `student` against `teacher`; raise PlanRefused listing every problem."""
    problems: list[Problem] = []
    ops: list[Op] = []
    new_blocks: dict[str, int] = {}
    projections: dict[str, str] = {}
    insert_runs: list[tuple[str, ...]] = []

    if teacher.input != student.input:
        problems.append(Problem(
            f"the input changes from {teacher.input} ({teacher.input.dtype}, teacher"
            f" {teacher.spec.mark(('input',))}) to {student.input} ({student.input.dtype});"
            " growth keeps the input",
            student.spec.mark(("input",)),
        ))  # fmt: skip
    if teacher.output != student.output:
        s_last, t_last = _last_layer(student), _last_layer(teacher)
        problems.append(Problem(
            f"the output changes from {teacher.output} to {student.output} (last layer"
            f" '{s_last.path}', teacher {t_last.mark}); growth keeps what the network outputs",
            s_last.mark,
        ))  # fmt: skip
    alignment = align(teacher.root, student.root)
    added = [n for run in alignment.inserted for n in run]
    for t in alignment.removed:
        same = next((n for n in added if n.path == t.path), None)
        if same is not None:
            problems.append(Problem(
                f"'{t.path}' is a {t.kind} in the teacher and a {same.kind} in the student"
                f" ({_where(t, same)}); growth cannot change a layer's kind",
                same.mark,
            ))  # fmt: skip
            continue
        parent = t.path.rpartition(".")[0]
        twin = next(
            (n for n in added if n.kind == t.kind and n.path.rpartition(".")[0] == parent), None
        )
        if twin is not None:
            added.remove(twin)  # each inserted layer is offered as the twin of one removal
        renamed = f"; is '{twin.path}' (student {twin.mark}) it, renamed?" if twin else ";"
        problems.append(Problem(
            f"the student has no layer '{t.path}' (teacher {t.mark}){renamed} growth cannot"
            " remove or rename layers",
            twin.mark if twin else student.spec.mark(("body",)),
        ))  # fmt: skip
    for run in alignment.inserted:
        paths = tuple(n.path for n in run)
        ops.append(InsertLayers(paths))
        insert_runs.append(paths)
    for t, s in alignment.pairs:
        path = t.path
        if s.kind != t.kind:
            problems.append(Problem(
                f"'{path}' is a {t.kind} in the teacher and a {s.kind} in the student"
                f" ({_where(t, s)}); growth cannot change a layer's kind",
                s.mark,
            ))  # fmt: skip
            continue
        if s.path != t.path and t.state_shapes():
            problems.append(Problem(
                f"layer '{t.path}' would become '{s.path}' (a layer inserted before it shifts"
                f" its index; {_where(t, s)}); give it a `name` so its keys stay",
                s.mark,
            ))  # fmt: skip
            continue
        grown = _grown_kernel(t, s)
        if grown is not None:
            ops.append(grown)
        skip = {"kernel", "padding"} if grown else set()
        steps = steps_op(t, s)
        if isinstance(steps, Problem):
            problems.append(steps)
        elif steps is not None:
            ops.append(steps)
            skip.add("h")
        problems.extend(_compare_args(t, s, skip=skip))
        if t.container == "copies" and s.args["times"] > t.args["times"]:
            blocks = tuple(c.path for c in s.children[t.args["times"] :])
            ops.append(InsertBlocks(path, t.args["times"], s.args["times"], blocks))
            for b in blocks:
                new_blocks[b] = t.args["times"] - 1
        if t.container == "residual":
            if t.shortcut is None and s.shortcut is not None:
                ops.append(AddProjection(path, s.shortcut.path))
                projections[s.shortcut.path] = path
            elif t.shortcut is not None and s.shortcut is None:
                problems.append(Problem(
                    f"residual '{path}' has a projection shortcut in the teacher but the"
                    f" identity in the student ({_where(t, s)}); growth cannot remove it",
                    s.mark,
                ))  # fmt: skip
    problems.extend(unknown_kinds(student))
    if problems:
        raise PlanRefused(problems)

    graph = space_graph(student)
    t_graph = space_graph(teacher)
    teacher_size = _match_spaces(teacher, student, graph, t_graph)
    widens: list[Op] = []
    for space in graph.spaces:
        old = teacher_size[space.id]
        if old and space.size > old:
            extra = space.size - old
            edges = tuple(e for e in space.edges if e in t_graph.edge_space)
            widens.append(WidenSpace(space.label, old, space.size, extra // 2, extra % 2, edges))
    ops = widens + ops
    kernels = {op.layer: op for op in ops if isinstance(op, GrowKernel)}
    problems = unruled_dims(teacher, student, graph, teacher_size, set(kernels))
    problems += unfilled_layouts(student, graph, teacher_size)
    problems += head_growths(teacher, student)[1]
    experts, refused = expert_growths(teacher, student)
    problems += refused
    if problems:
        raise PlanRefused(problems)
    for path, g in experts.items():
        k1, k2 = teacher.node(path).args["top_k"], student.node(path).args["top_k"]
        ops.append(AddExperts(path, g.old, g.new, k1, k2))
    return Plan(
        teacher, student, ops, graph, teacher_size, new_blocks, projections, kernels, insert_runs
    )


def plan_for(
    teacher_spec: str | Path,
    student_spec: str | Path,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
    *,
    interleave: bool = False,
) -> tuple[Arch, Arch, Plan]:
    """Load and resolve both specs and diff them, new repeat copies placed between the old
    ones when `interleave` (no torch: `morph diff` uses it)."""
    from morphspec.growth.interleave import interleave as interleaved  # it imports this module

    teacher = resolve(load_spec(teacher_spec, teacher_set))
    student = resolve(load_spec(student_spec, student_set))
    plan = diff(teacher, student)
    return teacher, student, interleaved(plan) if interleave else plan


def _grown_kernel(t: Node, s: Node) -> GrowKernel | None:
    """A kernel-size morph: a larger odd kernel whose extra padding keeps the output size."""
    rule = rule_of(t.kind)
    if rule is None or not rule.kernel_morph or s.args["kernel"] <= t.args["kernel"]:
        return None
    tk, sk, dil = t.args["kernel"], s.args["kernel"], t.args["dilation"]
    if tk % 2 == 0 or sk % 2 == 0 or s.args["dilation"] != dil:
        return None
    if s.args["padding"] - t.args["padding"] != dil * (sk - tk) // 2:
        return None
    return GrowKernel(t.path, tk, sk)


def _last_layer(arch: Arch) -> Node:
    """The last layer that owns parameters (the one that sets the output's width)."""
    with_params = [n for n in arch.nodes() if n.params]
    return with_params[-1] if with_params else arch.root


def _norm_widens(t: Node, s: Node) -> bool:
    rule = rule_of(t.kind)
    return rule is not None and rule.mixes_channels and s.inp.channels > t.inp.channels


def _compare_args(t: Node, s: Node, skip: set[str]) -> list[Problem]:
    problems = []
    for name, tv in t.args.items():
        sv = s.args.get(name)
        if sv == tv or name in IGNORED or name in skip:
            continue
        rule = rule_of(t.kind)
        if name == "eps" and _norm_widens(t, s):
            continue  # a norm's eps may follow its width: growth/lifts.py checks it
        growable = rule.grows if rule is not None else frozenset()
        if name in growable and isinstance(tv, int) and isinstance(sv, int):
            if sv < tv:
                problems.append(Problem(
                    f"'{t.path}': {name} shrinks from {tv} to {sv} ({_where(t, s)});"
                    " growth only widens and deepens",
                    s.mark,
                ))  # fmt: skip
            continue
        why = ""
        if rule is None:
            why = f"; growth has no rule for {t.kind} (morphspec/growth/kinds.py)"
        elif name in ("kernel", "padding"):
            why = (
                "; a kernel may grow to a larger odd size when the padding grows by half the"
                " difference (NetMorph's kernel morph, --family netmorph)"
            )
        problems.append(Problem(
            f"'{t.path}': {name} changes from {tv} to {sv} ({_where(t, s)}){why};"
            " only widths and repeat counts may change",
            s.mark,
        ))  # fmt: skip
    return problems


def _match_spaces(
    teacher: Arch, student: Arch, graph: SpaceGraph, t_graph: SpaceGraph
) -> dict[int, int]:
    """The teacher's size of every student space (0 for spaces of new blocks)."""
    sizes: dict[int, int] = {}
    problems: list[Problem] = []
    for space in graph.spaces:
        t_ids = {t_graph.edge_space[e] for e in space.edges if e in t_graph.edge_space}
        if len(t_ids) > 1:
            problems.append(Problem(
                f"the student joins channel spaces that the teacher keeps apart (at"
                f" {space.label}); a residual sum was added between layers of unequal width",
                student.spec.mark(("body",)),
            ))  # fmt: skip
            continue
        sizes[space.id] = t_graph.spaces[t_ids.pop()].size if t_ids else 0
    t_shapes = teacher.state_shapes()
    for space in graph.spaces:
        if space.id in sizes and sizes[space.id] == 0:
            # A space written only by new layers can still be read by old ones (an identity
            # layer appended before the head): its teacher size is what they read.
            seen = {t_shapes[r.key][r.dim] // r.mult for r in space.roles if r.key in t_shapes}
            if len(seen) == 1:
                sizes[space.id] = seen.pop()
    for space in graph.spaces:
        a = sizes.get(space.id, 0)
        for role in space.roles:
            tshape = t_shapes.get(role.key)
            parts = role.layout.parts if role.layout.segment is not None else 1
            if tshape is not None and tshape[role.dim] * parts != a * role.mult:
                problems.append(Problem(
                    f"'{role.key}' reads or writes channel space '{space.label}' with"
                    f" {tshape[role.dim]} entries in the teacher, but the space had"
                    f" {a} channels there; the student's structure does not extend the teacher's",
                    student.spec.mark(("body",)),
                ))  # fmt: skip
    if problems:
        raise PlanRefused(problems)
    return sizes
