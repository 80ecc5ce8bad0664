"""A reversible unit's steps in a plan: appended (same h) or refined (h / r, steps × r).

Data only (no torch): `diff` records an `AddSteps` per unit whose `steps` grow, and refuses a
change of `h` that does not keep the time span steps·h; growth/segments.py says what each
family does with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.kinds import rule_of

__all__ = ["AddSteps", "steps_op"]


@dataclass(frozen=True)
class AddSteps:
    """A reversible unit's `steps` grow from `old` to `new`. With `new_h == old_h` steps are
    appended; with `new_h·new == old_h·old` the same time span is refined (ode-refine)."""

    unit: str
    old: int
    new: int
    old_h: float
    new_h: float
    op: str = "add_steps"

    @property
    def refines(self) -> bool:
        return self.new_h != self.old_h


def steps_op(t: Node, s: Node) -> AddSteps | Problem | None:
    """A stepped unit's `steps` and `h`: appended steps keep `h`; refined ones keep the time
    span steps·h (an integer factor more steps)."""
    rule = rule_of(t.kind)
    if rule is None or not rule.stepped:
        return None
    (old, new), (old_h, new_h) = ((t.args[a], s.args[a]) for a in ("steps", "h"))
    if old_h == new_h:
        return AddSteps(t.path, old, new, old_h, new_h) if new > old else None
    if new > old and new % old == 0 and math.isclose(new * new_h, old * old_h, rel_tol=1e-12):
        return AddSteps(t.path, old, new, old_h, new_h)
    return Problem(
        f"'{t.path}': h changes from {old_h:g} to {new_h:g} with steps {old} -> {new}"
        f" (teacher {t.mark}, student {s.mark}); h may change only to refine the same time"
        f" span: steps times an integer r and h divided by r (steps {2 * old}, h {old_h / 2:g})",
        s.mark,
    )
