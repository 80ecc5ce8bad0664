"""`morph probe --suggest`: the student that deepens each section to its recommended depth.

Growth appends copies to a `repeat`, and a student spec can only override the teacher's
`vars` (`extends`), so a section can be deepened in the written spec only where the
`times` of the repeat that extends it is a bare var that sets nothing else. Such a var is
set to the most copies any of its sections needs (never fewer than the teacher has). A
literal count, an expression, or a var used elsewhere is reported instead: which `times`
(with its YAML place) to change, from what to what. Torch-free.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphspec.arch import Arch, Node
from morphspec.errors import Mark
from morphspec.probe import ProbeReport
from morphspec.spec import models as m
from morphspec.spec.expr import Number
from morphspec.spec.yamlpos import Loc

__all__ = ["Change", "Suggestion", "student_text", "suggest"]

_NAME = re.compile(r"[A-Za-z_]\w*")
_NOT_EXPRESSIONS = frozenset({"name", "op", "block", "description", "act", "memory", "when"})


@dataclass(frozen=True)
class Change:
    """One repeat to lengthen: by setting `var` in the student, or by hand when it is None."""

    section: str
    repeat: str
    old_times: int
    new_times: int
    times: str
    var: str | None
    mark: Mark

    def note(self) -> str:
        add = self.new_times - self.old_times
        if self.var is not None:
            return f"section {self.section}: {self.var}: {self.new_times} ({self.repeat} +{add})"
        return (
            f"section {self.section}: change `times: {self.times}` of repeat {self.repeat} at"
            f" {self.mark} from {self.old_times} to {self.new_times} (+{add}) by hand; a student"
            " spec can only set vars"
        )

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "repeat": self.repeat, "old_times": self.old_times,
                "new_times": self.new_times, "times": self.times, "var": self.var,
                "where": str(self.mark)}  # fmt: skip


@dataclass(frozen=True)
class Suggestion:
    """The vars the student sets (the teacher's `--set` ones included) and every change."""

    vars: dict[str, Number]
    changes: list[Change]
    unplaced: list[str]

    @property
    def notes(self) -> list[str]:
        return [c.note() for c in self.changes] + self.unplaced

    def to_json(self) -> dict[str, Any]:
        return {"vars": self.vars, "changes": [c.to_json() for c in self.changes],
                "unplaced": self.unplaced}  # fmt: skip


def suggest(report: ProbeReport, teacher_set: Mapping[str, Number] | None = None) -> Suggestion:
    """What to change so that every section has at least its `recommended_blocks`."""
    arch = report.arch
    sources = dict(_repeat_sources(arch))
    changes: list[Change] = []
    unplaced: list[str] = []
    for sec, stat in zip(report.layout, report.sections, strict=True):
        extra = stat.recommended_blocks - stat.blocks
        if extra <= 0:
            continue
        if sec.repeat is None:
            unplaced.append(
                f"section {sec.name}: add {extra} blocks by hand; no repeat's next copies extend it"
            )
            continue
        node = arch.node(sec.repeat)
        layer, scope, loc = sources[sec.repeat]
        old = node.args["times"]
        new = old + math.ceil(extra / sec.per_copy)
        times = str(layer.times)
        bare = isinstance(layer.times, str) and _NAME.fullmatch(times.strip())
        var = times.strip() if bare and times.strip() in arch.spec.vars else None
        var = var if var is not None and var not in scope else None
        changes.append(Change(sec.name, sec.repeat, old, new, times, var,
                              arch.spec.mark((*loc, "times"))))  # fmt: skip
    deepenable = [s.repeat for s in report.layout if s.repeat is not None]
    changes = _settle_vars(arch, sources, deepenable, changes)
    values: dict[str, Number] = dict(teacher_set or {})
    for c in changes:
        if c.var is not None:
            values[c.var] = c.new_times
    return Suggestion(values, changes, unplaced)


def _settle_vars(
    arch: Arch,
    sources: dict[str, tuple[m.Repeat, frozenset[str], Loc]],
    deepenable: list[str],
    changes: list[Change],
) -> list[Change]:
    """A var is set only when every use of it is the `times` of a repeat that extends a
    section; it takes the largest count asked of it (and never less than its value)."""
    from dataclasses import replace

    uses = _name_uses(arch.spec)
    out: list[Change] = []
    for c in changes:
        if c.var is None:
            out.append(c)
            continue
        targets = {sources[r][2] for r in deepenable if str(sources[r][0].times).strip() == c.var}
        if uses.get(c.var, 0) != len(targets):
            out.append(replace(c, var=None, times=f"{c.times} (a var that also sets other values)"))
            continue
        top = max(x.new_times for x in changes if x.var == c.var)
        out.append(replace(c, new_times=max(top, int(arch.spec.vars[c.var]))))
    return out


def _name_uses(spec: m.Spec) -> dict[str, int]:
    """How often each name appears in the spec's expressions (templates counted once)."""
    counts: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in _NOT_EXPRESSIONS:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            for name in _NAME.findall(value):
                counts[name] = counts.get(name, 0) + 1

    walk(spec.model_dump(include={"blocks", "body"}))
    return counts


def _repeat_sources(arch: Arch) -> Iterator[tuple[str, tuple[m.Repeat, frozenset[str], Loc]]]:
    """Each repeat node's path with the spec model that made it, the template args in scope
    (they shadow vars) and its YAML location, found by walking spec and arch together."""
    spec = arch.spec

    def walk(layer: Any, node: Node, scope: frozenset[str], loc: Loc) -> Iterator[Any]:
        if isinstance(layer, m.BlockCall):
            template = spec.blocks[layer.op]
            yield from walk(template.layer, node, frozenset(template.args),
                            ("blocks", layer.op, "layer"))  # fmt: skip
        elif isinstance(layer, m.Sequential):
            yield from each(layer.body, node.children, scope, (*loc, "body"))
        elif isinstance(layer, m.Residual):
            yield from each(layer.body, node.children, scope, (*loc, "body"))
            sc = layer.shortcut
            if node.shortcut is not None and sc is not None and sc.body is not None:
                yield from each(sc.body, node.shortcut.children, scope, (*loc, "shortcut", "body"))
            if isinstance(layer.post, list):
                yield from each(layer.post, node.post, scope, (*loc, "post"))
            elif layer.post is not None and node.post:
                yield from walk(layer.post, node.post[0], scope, (*loc, "post"))
        elif isinstance(layer, m.Repeat):
            yield node.path, (layer, scope, loc)
            for copy in node.children:
                if layer.body is not None:
                    yield from each(layer.body, copy.children, scope, (*loc, "body"))
                else:
                    assert layer.block is not None
                    template = spec.blocks[layer.block]
                    yield from walk(template.layer, copy, frozenset(template.args),
                                    ("blocks", layer.block, "layer"))  # fmt: skip

    def each(layers: list[Any], nodes: tuple[Node, ...], scope: frozenset[str], loc: Loc
             ) -> Iterator[Any]:  # fmt: skip
        for i, (layer, node) in enumerate(zip(layers, nodes, strict=False)):
            yield from walk(layer, node, scope, (*loc, i))

    yield from each(spec.body, arch.root.children, frozenset(), ("body",))


def student_text(
    suggestion: Suggestion, report: ProbeReport, teacher_spec: Path, student: Path
) -> str:
    """The student spec: `extends` the teacher (path relative to the student) and sets vars."""
    rel = os.path.relpath(teacher_spec.resolve(), student.resolve().parent).replace(os.sep, "/")
    lines = [
        f"# Written by `morph probe --suggest` (epsilon {report.epsilon:g}, {report.samples}"
        " samples): the teacher deepened",
        "# to the recommended blocks per section. Grow the trained checkpoint into it with",
        f"#   morph convert {teacher_spec} {student} TEACHER.safetensors -o STUDENT.safetensors",
        *(f"# {n}" for n in suggestion.notes),
        "morphspec: 1",
        f"name: {json.dumps(report.arch.name + '-deeper')}",
        f"extends: {json.dumps(rel)}",
    ]
    if suggestion.vars:
        pairs = ", ".join(f"{k}: {json.dumps(v)}" for k, v in suggestion.vars.items())
        lines.append(f"vars: {{{pairs}}}")
    return "\n".join(lines) + "\n"
