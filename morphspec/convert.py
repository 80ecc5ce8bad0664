"""The main job: grow a teacher checkpoint into a student checkpoint, then prove it.

Everything that can be checked from specs and headers is checked before the first tensor
moves: both specs, the plan and the family's conditions, the teacher's keys and shapes,
the output path. The student is written to a hidden file beside the output, verified from
there, and renamed into place only when it passed; nothing of the user's is removed or
overwritten on failure, and the teacher is never written. With `max_shard_size` the output
is a folder of HF-style shards, staged, verified and committed the same way. With `to_hf`
it is a Hugging Face folder (interop/hf_output.py): the student streamed into HF-named
files with config.json and the teacher folder's tokenizer files, staged, verified from the
staging folder and committed the same way.

The teacher's sha256 (which the header records) is computed on a thread while the tensors
are written, and written into the header last (checkpoint/writer.py).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from morphspec.arch import Arch
from morphspec.arguments import check_options
from morphspec.checkpoint import (
    CheckpointReader,
    check_finite,
    make_metadata,
    prehash,
    write_safetensors,
)
from morphspec.checkpoint.output import (
    check_folder_target,
    check_target,
    commit,
    commit_folder,
    folder_inputs,
    staging_file,
    staging_folder,
)  # fmt: skip
from morphspec.checkpoint.sharding import (
    parse_size,
    plan_shards,
    shard_name,
    write_index,
    write_sharded,
)  # fmt: skip
from morphspec.checkpoint.writer import TensorEntry
from morphspec.errors import Mark, MorphError, NotPreservingError
from morphspec.growing import prepare
from morphspec.growth.apply import student_entries
from morphspec.growth.families import Family
from morphspec.growth.options import GrowOptions
from morphspec.growth.plan import Plan, plan_for
from morphspec.interop.exporter import DEFAULT_SHARD_BYTES
from morphspec.interop.folder import open_checkpoint
from morphspec.interop.hf_output import HFTarget, hf_target, write_hf_folder
from morphspec.spec.load import SetArg
from morphspec.verify import Verification, conversion_samples, verify_checkpoints

__all__ = ["ConvertResult", "convert", "default_output", "plan_for"]


@dataclass
class ConvertResult:
    plan: Plan
    output: Path
    written: bool
    verification: Verification | None
    teacher_sha256: str | None
    family: Family
    leader: bool = True
    """False on the ranks of a torchrun job other than 0, which write their share only."""

    @property
    def warnings(self) -> list[str]:
        """Why the output may not be function-preserving (empty for exact conversions)."""
        return self.family.warnings()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "family": self.family.name,
            "function_preserving": self.family.conditions.function_preserving,
            "rescale": [asdict(s) for s in self.family.rescaler.scales],
            "warnings": self.warnings,
            "plan": self.plan.to_json(),
            "rows": [row.to_json() for row in self.plan.describe(self.family.name)],
            "output": str(self.output),
            "written": self.written,
            "verification": self.verification.to_json() if self.verification else None,
            "teacher_sha256": self.teacher_sha256,
        }


def default_output(student_spec: str | Path, student: Arch) -> Path:
    """`<student name>.safetensors` beside the student spec."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", student.name).strip("-.") or "student"
    return Path(student_spec).parent / f"{stem}.safetensors"


def _check_output(
    out: Path, reader: CheckpointReader, force: bool, sharded: bool, teacher: Path, *archs: Arch
) -> None:
    """The output must be a regular file (a folder of shards, or an HF folder, when sharded)
    or nothing, and none of the files (or the teacher's folder) this run reads."""
    inputs: list[tuple[str | Path, str]] = [(p, "the teacher checkpoint") for p in reader.paths]
    if teacher.is_dir():
        inputs += folder_inputs(teacher, "the teacher folder")
    inputs += [(f, f"the spec file {f}") for arch in archs for f in arch.spec.files]
    if sharded:
        check_folder_target(out, force=force, inputs=inputs)
    else:
        check_target(out, force=force, inputs=inputs)


_PLACEHOLDER = "0" * 64  # a sha256 hex digest's length: the header keeps its size


@contextmanager
def _hashing(reader: CheckpointReader) -> Iterator[Future[str]]:
    """The teacher's sha256 as `reader.sha256` computes it (its files in order), on a thread:
    hashlib and reads release the GIL. An error or interrupt stops it at the next MiB, so
    Ctrl-C does not wait for a large teacher to be hashed."""
    started = prehash.take(reader.paths)  # the CLI started it before importing torch
    if started is not None:
        yield started
        return
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="morph-sha256") as pool:
        try:
            yield pool.submit(prehash.sha256_of, reader.paths, stop)
        finally:
            stop.set()


def convert(
    teacher_spec: str | Path,
    student_spec: str | Path,
    checkpoint: str | Path,
    output: str | Path | None = None,
    *,
    options: GrowOptions | None = None,
    force: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    teacher_set: SetArg = None,
    student_set: SetArg = None,
    progress: Callable[[int, int], None] | None = None,
    max_shard_size: int | str | None = None,
    to_hf: str | Path | None = None,
    to_dcp: str | Path | None = None,
    optimizer_state: str | Path | None = None,
    optimizer_out: str | Path | None = None,
    **option_values: Any,
) -> ConvertResult:
    """Grow `checkpoint` (of `teacher_spec`) into the student; see the module docstring.

    The growth options (`family`, `seed`, `rtol`, ... see `GrowOptions`) come as `options`
    or as keywords of the same names, which override it. `max_shard_size` (bytes, or text
    such as `2GB`) writes a folder of shards at `output` instead of one file. `to_hf` (a
    folder, instead of `output`) writes a Hugging Face folder of the student, whose spec
    must have an HF `naming`; `max_shard_size` then defaults to transformers' 5GB. `to_dcp`
    (a folder, instead of `output`) writes a torch.distributed.checkpoint directory with
    the grown optimizer state when the teacher has one: a DCP teacher's own, or
    `optimizer_state`; `optimizer_out` writes the grown state on its own
    (`distributed/convert_io.py`)."""
    opts = (options or GrowOptions()).with_values(**option_values)
    check_options(opts)
    ranks = _split(
        teacher_spec, student_spec, checkpoint, output, opts, force, dry_run, verify,
        teacher_set, student_set, max_shard_size, to_hf, to_dcp, optimizer_state, optimizer_out,
    )  # fmt: skip
    together = ranks.together if ranks is not None else _alone
    teacher, student, plan = plan_for(
        teacher_spec, student_spec, teacher_set, student_set, interleave=opts.interleave
    )
    limit = parse_size(max_shard_size) if max_shard_size is not None else None
    out = Path(output) if output is not None else default_output(student_spec, student)
    if limit is not None and output is None:
        out = out.with_suffix("")
    target: HFTarget | None = None
    if to_dcp is not None:
        if output is not None or to_hf is not None or limit is not None:
            raise MorphError(
                "--to-dcp names the output folder; drop -o, --to-hf and --max-shard-size",
                Mark(str(to_dcp)),
            )
        out = Path(to_dcp)
    if to_hf is not None:
        if output is not None:
            raise MorphError(
                "--to-hf names the output folder; drop -o (or drop --to-hf for a morphspec"
                " checkpoint)",
                Mark(str(output)),
            )
        out, limit = Path(to_hf), limit or DEFAULT_SHARD_BYTES
        if not out.parent.is_dir():
            raise MorphError(
                f"the output folder {out.parent} does not exist; create it first", Mark(str(out))
            )
        target = hf_target(student, Path(checkpoint), out.parent)
    if ranks is not None and (to_hf is not None or optimizer_out is not None or (
            to_dcp is None and limit is None)):  # fmt: skip
        raise MorphError(
            "under torchrun morph writes --to-dcp DIR or a sharded folder (-o DIR"
            " --max-shard-size SIZE); run --to-hf, --optimizer-out or a single file without"
            " torchrun"
        )
    with open_checkpoint(checkpoint, teacher) as reader:
        with together("checking the inputs"):
            grower = prepare(plan, reader, opts, str(teacher_spec))
            if to_dcp is None:
                _check_output(
                    out, reader, force, limit is not None, Path(checkpoint), teacher, student
                )
            dist = _distributed(reader, out, force, to_dcp, optimizer_state, optimizer_out, teacher)
        if dry_run:
            return ConvertResult(plan, out, False, None, None, grower)
        check_finite(reader)
        metadata = make_metadata(
            student.spec.resolved_json(),
            teacher_sha256=_PLACEHOLDER,
            **opts.metadata(),
            plan=plan.dumps(),
        )
        entries = student_entries(plan, grower, reader)
        total = sum(e.nbytes for e in entries)
        report = (lambda done: progress(done, total)) if progress else None
        staged = staging_file(out) if limit is None else staging_folder(out)
        if to_dcp is not None:
            staged = dist.staged_model(out)
        if ranks is not None:
            staged = ranks.staging(out)
        with _hashing(reader) as sha_future, staged as staging, dist.optimizer_out(grower):

            def late() -> Mapping[str, str]:
                return {**metadata, "morphspec.teacher_sha256": sha_future.result()}

            with together("writing the student"):
                if to_dcp is not None:
                    dist.write_model(staging, grower, entries, report, ranks)
                elif target is not None:
                    assert limit is not None
                    write_hf_folder(staging, target, entries, metadata, limit, report, late)
                elif limit is None:
                    write_safetensors(staging, entries, metadata, progress=report, late=late)
                elif ranks is not None:
                    write_share(staging, entries, metadata, limit, ranks, report, late)
                else:
                    write_sharded(staging, entries, metadata, limit, progress=report, late=late)
            sha = sha_future.result()
            with together("verifying and committing"):
                result = None
                if ranks is None or ranks.leader:
                    result = _verified(verify, teacher, checkpoint, student, staging, opts, grower,
                                       student_spec, total)  # fmt: skip
                if ranks is not None:
                    if ranks.leader:
                        commit_folder(staging, out)
                elif to_dcp is not None:
                    dist.commit()
                elif limit is None:
                    commit(staging, out)
                else:
                    commit_folder(staging, out)
                dist.commit_optimizer()
    return ConvertResult(plan, out, True, result, sha, grower, ranks is None or ranks.leader)


def _verified(
    verify: bool,
    teacher: Arch,
    checkpoint: str | Path,
    student: Arch,
    staging: Path,
    opts: GrowOptions,
    grower: Family,
    student_spec: str | Path,
    total: int,
) -> Verification | None:
    """The staged student (`total` bytes) checked against the teacher (its finiteness
    already checked); NotPreservingError when an exact family misses rtol."""
    if not verify:
        return None
    rtol = opts.rtol
    n = opts.samples or conversion_samples(teacher, student, total, len(grower.modes))
    result = verify_checkpoints(
        teacher, checkpoint, student, staging, n, opts.seed, rtol, grower.modes,
        teacher_finite=True,
    )  # fmt: skip
    if not result.passed and grower.exact and not grower.rescaler.inexact:
        raise NotPreservingError(
            f"the student does not reproduce the teacher: rel_err {result.rel_err:.3g}"
            f" > rtol {rtol:g} (max_abs_err {result.max_abs_err:.3g}); no output written",
            Mark(str(student_spec)),
        )
    return result


def _alone(phase: str) -> AbstractContextManager[None]:
    return nullcontext()


def _split(*arguments: Any) -> Any:
    """The ranks under torchrun (`distributed/ranks.py`), having checked that every rank
    was given the same `arguments`; None in a single process."""
    from morphspec.distributed.ranks import current_ranks, under_torchrun

    if not under_torchrun():
        return None
    ranks = current_ranks()
    if ranks is not None:
        ranks.agree(repr(arguments))
    return ranks


def write_share(
    folder: Path,
    entries: Sequence[TensorEntry],
    metadata: Mapping[str, str],
    limit: int,
    ranks: Any,
    progress: Callable[[int], None] | None,
    late: Callable[[], Mapping[str, str]],
) -> None:
    """This rank's shards of a sharded output (rank 0 writes the index too)."""
    runs = plan_shards(entries, metadata, limit)
    names = [shard_name(i + 1, len(runs)) for i in range(len(runs))]
    sizes = [sum(e.nbytes for e in run) for run in runs]
    for i in ranks.share(list(range(len(runs))), sizes):
        write_safetensors(folder / names[i], runs[i], metadata, progress=progress, late=late)
    if ranks.leader:
        write_index(folder, names, runs)


def _distributed(
    reader: CheckpointReader,
    out: Path,
    force: bool,
    to_dcp: str | Path | None,
    optimizer_state: str | Path | None,
    optimizer_out: str | Path | None,
    teacher: Arch,
) -> Any:
    """The DCP output and optimizer state (`distributed/convert_io.py`), checked now."""
    from morphspec.distributed.convert_io import DistributedOutput

    return DistributedOutput.check(
        reader, out, force, to_dcp, optimizer_state, optimizer_out, teacher
    )
