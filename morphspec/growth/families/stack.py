"""Stacking (G_stack, Du et al. 2024): deepen a trained stack by repeating it whole.

How `stack` fills and what it refuses live here; its record (conditions, flags) is in
`growth/catalog.py`.

New copy j of a repeat with L teacher copies is a copy of teacher copy j mod L, bit for
bit: L = 2 grown to 4 gives [0, 1, 0, 1], to 3 gives [0, 1, 0] (the rule for a depth that
is not a multiple of L: the stack is repeated and cut where the student's depth ends).
Every other tensor is the teacher's. A copied block adds its output to the stream again,
so the student does NOT compute the teacher's function: `convert` writes it anyway and
reports the measured deviation (rel_err), like randpad. The optimizer state of each copy
is its source block's (growth/optim.py follows `source_key`).

Widths must be equal: stacking has no rule for new channels, so any widening, new kernel
size, inserted layer, projection or new reversible step is refused with the reason, as
are `--new-blocks copy` and `--interleave` (the rule above already places every copy).
"""

from __future__ import annotations

from morphspec.errors import Problem
from morphspec.growth.families.base import Family
from morphspec.growth.families.facts import Facts

__all__ = ["SUMMARY", "Stack"]

SUMMARY = "depth by stacking (G_stack): new copy j = teacher copy j mod L; not exact"


class Stack(Family):
    name = "stack"
    exact = False
    ties = "refuse"

    def check(self, facts: Facts) -> list[Problem]:
        problems = self._refusals()
        if problems:
            return problems
        problems = super().check(facts)
        plan = self.plan
        for op in plan.inserts:
            for j in range(op.old_times, op.new_times):
                src, dst = f"{op.repeat}.{j % op.old_times}", f"{op.repeat}.{j}"
                t_keys = _relative(plan.teacher.node(src).state_shapes(), src)
                s_keys = _relative(plan.student.node(dst).state_shapes(), dst)
                if t_keys != s_keys:
                    problems.append(Problem(
                        f"--family stack: student copy '{dst}' differs in its tensors from"
                        f" teacher copy '{src}', which it would copy; stacking repeats"
                        " blocks unchanged, so the repeat's copies must be alike",
                        plan.student.node(dst).mark,
                    ))  # fmt: skip
                    continue
                for rel in s_keys:
                    facts.segments.sources[dst + rel] = src + rel
        return problems

    def _refusals(self) -> list[Problem]:
        plan, why = self.plan, []
        if plan.widens:
            spaces = ", ".join(f"'{op.space}' {op.old} -> {op.new}" for op in plan.widens)
            why.append(
                f"widens {spaces}; stacking copies whole blocks and has no rule for new"
                " channels: keep the widths equal, or widen first with another family"
                " (r2r, net2net, netmorph) and stack in a second convert"
            )
        if plan.kernels:
            why.append(f"grows the kernels of {', '.join(plan.kernels)}; use --family netmorph")
        if plan.insert_runs:
            why.append(
                f"inserts layers {', '.join(plan.inserted)} outside a repeat; stacking only"
                " adds copies of a `repeat`'s blocks (raise its `times`)"
            )
        if plan.projections:
            why.append(f"adds projection shortcuts ({', '.join(plan.projections)})")
        if plan.steps:
            why.append("adds steps to reversible units; use --family ode-refine")
        if self.options.new_blocks == "copy" or self.options.interleave:
            why.append(
                "--new-blocks copy and --interleave choose the new copies' weights and places;"
                " stack fixes both (copy j of teacher copy j mod L, appended): drop the flag"
            )
        if not plan.inserts and not why:
            why.append("adds no repeat copies, so there is nothing to stack; raise a `times`")
        mark = plan.student.spec.mark(("body",))
        return [Problem(f"--family stack: the student {w}", mark) for w in why]

    def warnings(self) -> list[str]:
        notes = [
            "stack is not function-preserving: each copied block adds its output to the"
            " stream again, so the student does not compute the teacher's function (rel_err"
            " below measures how far it is)"
        ]
        return notes + self.eval_only()


def _relative(shapes: dict[str, tuple[int, ...]], path: str) -> dict[str, tuple[int, ...]]:
    return {k[len(path) :]: s for k, s in shapes.items()}
