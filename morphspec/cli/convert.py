"""`morph convert`: grow a teacher checkpoint into a student checkpoint, verified."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from morphspec.cli.growth_options import (
    StudentArg,
    StudentSetOpt,
    TeacherArg,
    TeacherSetOpt,
    merge_sets,
    plan_table,
    with_growth_options,
)  # fmt: skip
from morphspec.cli.options import ForceOpt, JsonOpt, SetOpt
from morphspec.cli.output import Output
from morphspec.cli.startup import quiet_import

__all__ = ["EXAMPLES", "convert"]

EXAMPLES = """\
  morph convert examples/specs/resnet_cifar10.yaml examples/specs/resnet_cifar18.yaml \\
      teacher.safetensors
  morph convert mlp.yaml mlp_wide.yaml mlp.safetensors -o wide.safetensors --seed 3 --json
  morph convert t.yaml s.yaml t.safetensors --dry-run
  morph convert t.yaml s.yaml t.safetensors -o student/ --max-shard-size 2GB
  morph convert gpt2.yaml gpt2_big.yaml ./gpt2 --to-hf ./gpt2-big
  morph convert t.yaml s.yaml ./step-1000 --to-dcp ./student-dcp
  torchrun --nproc-per-node 2 -m morphspec convert t.yaml s.yaml ./step-1000 --to-dcp ./s"""

CkptArg = Annotated[
    Path,
    typer.Argument(
        metavar="CKPT",
        help="The teacher checkpoint: safetensors, sharded index, HF folder or DCP folder.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", metavar="OUT",
        help="Student checkpoint to write [default: <student name>.safetensors beside STUDENT].",
        show_default=False,
    ),
]  # fmt: skip
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--max-shard-size", metavar="SIZE",
        help="Write OUT as a folder of Hugging Face-style shards of at most SIZE each (such as"
        " 500MB or 2GB) with model.safetensors.index.json [default: one file].",
        show_default=False,
    ),
]  # fmt: skip
ToHFOpt = Annotated[
    Path | None,
    typer.Option(
        "--to-hf", metavar="OUT_DIR",
        help="Write a Hugging Face folder instead (config.json, HF-named weights sharded above"
        " --max-shard-size [default 5GB], the teacher folder's tokenizer files); STUDENT needs"
        " an HF naming, as `morph import-hf` writes it.",
        show_default=False,
    ),
]  # fmt: skip
ToDCPOpt = Annotated[
    Path | None,
    typer.Option(
        "--to-dcp", metavar="OUT_DIR",
        help="Write a torch.distributed.checkpoint folder instead ({'model', 'optim'} as"
        " get_state_dict gives them), with the grown optimizer state when the teacher has"
        " one (a DCP teacher's own, or --optimizer-state).",
        show_default=False,
    ),
]  # fmt: skip
OptimizerStateOpt = Annotated[
    Path | None,
    typer.Option(
        "--optimizer-state", metavar="FILE",
        help="The teacher's optimizer state (Adam, AdamW, SGD): a DCP folder, or an"
        " optimizer.state_dict() file such as HF Trainer's optimizer.pt (read with"
        " weights_only=True), its parameters in the spec's build order.",
        show_default=False,
    ),
]  # fmt: skip
OptimizerOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--optimizer-out", metavar="PATH",
        help="Write the grown optimizer state here, in --optimizer-state's format (a torch"
        " file, or a DCP folder).",
        show_default=False,
    ),
]  # fmt: skip
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and plan; write nothing.")]
NoVerifyOpt = Annotated[
    bool,
    typer.Option("--no-verify", help="Skip the check that the student reproduces the teacher."),
]


@with_growth_options(after="output")
def convert(
    teacher: TeacherArg,
    student: StudentArg,
    checkpoint: CkptArg,
    output: OutOpt = None,
    max_shard_size: ShardOpt = None,
    to_hf: ToHFOpt = None,
    to_dcp: ToDCPOpt = None,
    optimizer_state: OptimizerStateOpt = None,
    optimizer_out: OptimizerOutOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    no_verify: NoVerifyOpt = False,
    set_: SetOpt = None,
    teacher_set: TeacherSetOpt = None,
    student_set: StudentSetOpt = None,
    as_json: JsonOpt = False,
    **options: Any,
) -> None:
    """Grow CKPT, a checkpoint of TEACHER, into a checkpoint of STUDENT that computes the same
    function. Everything is checked before a tensor moves; the output is written beside its
    destination, verified (unless --no-verify) and only then renamed into place. The teacher
    is never written. Exit 3, with no output written, when the student misses --rtol."""
    if not dry_run and to_dcp is None:
        from morphspec.checkpoint import prehash  # no torch: hashes while torch is imported

        prehash.start(checkpoint)
    run = quiet_import("morphspec.convert").convert

    out = Output(as_json)
    with out.progress() as bar:
        task = bar.add_task("writing student", total=None, visible=sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run(
            teacher, student, checkpoint, output, force=force,
            dry_run=dry_run, verify=not no_verify, max_shard_size=max_shard_size, to_hf=to_hf,
            to_dcp=to_dcp, optimizer_state=optimizer_state, optimizer_out=optimizer_out,
            **options,
            teacher_set=merge_sets(set_, teacher_set), student_set=merge_sets(set_, student_set),
            progress=progress,
        )  # fmt: skip
    if not as_json:
        out.out.print(plan_table(result.plan, result.family.name))
    for warning in result.warnings:
        out.warn(warning)
    v = result.verification
    if result.written and not result.leader:
        text = f"wrote this rank's share of {result.output}; rank 0 verified and committed it"
    elif result.written:
        if v is None:
            checked = "; not verified (--no-verify)"
        else:
            sign = "<=" if v.passed else ">"
            inputs = f"{v.samples} sample{'s' if v.samples != 1 else ''}"
            checked = f"; rel_err {v.rel_err:.3g} {sign} rtol {v.rtol:g} ({inputs})"
        text = f"wrote {result.output}{checked}"
    else:
        text = f"dry run: would write {result.output}"
    out.result(result.to_json(), text)
