"""`morph diff`: what growing the teacher into the student would do, without tensors."""

from __future__ import annotations

from morphspec.cli.growth_options import (
    StudentArg,
    StudentSetOpt,
    TeacherArg,
    TeacherSetOpt,
    merge_sets,
    option_annotation,
    plan_json,
    plan_table,
)  # fmt: skip
from morphspec.cli.options import JsonOpt, SetOpt
from morphspec.cli.output import Output

__all__ = ["EXAMPLES", "diff"]

EXAMPLES = """\
  morph diff examples/specs/resnet_cifar10.yaml examples/specs/resnet_cifar18.yaml
  morph diff examples/specs/mlp.yaml examples/specs/mlp.yaml --student-set width=48 --json"""


def diff(
    teacher: TeacherArg,
    student: StudentArg,
    set_: SetOpt = None,
    teacher_set: TeacherSetOpt = None,
    student_set: StudentSetOpt = None,
    interleave: option_annotation("interleave") = False,  # type: ignore[valid-type]
    as_json: JsonOpt = False,
) -> None:
    """Print the growth plan: which channel spaces widen, which blocks are appended, and the
    parameter counts before and after. Refusals are listed with both YAML places."""
    from morphspec.growth.plan import plan_for

    out = Output(as_json)
    _, _, plan = plan_for(
        teacher,
        student,
        merge_sets(set_, teacher_set),
        merge_sets(set_, student_set),
        interleave=interleave,
    )
    out.result(plan_json(plan), plan_table(plan))
