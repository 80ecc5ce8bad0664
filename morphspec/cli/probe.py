"""`morph probe`: how far each residual block moves the data, and the depth each section needs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from morphspec.arch import Arch, resolve
from morphspec.checkpoint.output import check_target, folder_inputs, output_file
from morphspec.cli.options import ForceOpt, JsonOpt, SeedOpt, SetOpt, SpecArg
from morphspec.cli.output import Output
from morphspec.errors import Mark, MorphError
from morphspec.probe import DEFAULT_EPSILON, ProbeReport
from morphspec.probe_plot import need_matplotlib, plot_report
from morphspec.spec import load_spec, parse_set

__all__ = ["EXAMPLES", "plot_report", "probe"]

EXAMPLES = """\
  morph probe examples/specs/preact_resnet.yaml teacher.safetensors
  morph probe digits.yaml digits.safetensors --inputs inputs.safetensors --plot probe.png
  morph probe teacher.yaml teacher.safetensors --epsilon 0.2 --suggest student.yaml --json"""

CkptArg = Annotated[Path, typer.Argument(metavar="CKPT", help="The trained checkpoint.")]
InputsOpt = Annotated[
    Path | None,
    typer.Option("--inputs", metavar="FILE", help="A safetensors file with tensor 'inputs' "
                 "[N, *input shape] (default: seeded random inputs).", show_default=False),
]  # fmt: skip
SamplesOpt = Annotated[
    int | None,
    typer.Option("--samples", min=1, help="Samples to average over [default: 256, or all of"
                 " --inputs].", show_default=False),
]  # fmt: skip
EpsilonOpt = Annotated[
    float, typer.Option("--epsilon", help="Target mean scaled perturbation per section.")
]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Samples per forward pass.")]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", metavar="OUT.png", help="Draw the perturbations and distances"
                 " (needs matplotlib: pip install 'morphspec[plot]').", show_default=False),
]  # fmt: skip
SuggestOpt = Annotated[
    Path | None,
    typer.Option("--suggest", metavar="STUDENT.yaml", help="Write a student spec that extends the"
                 " teacher with the recommended depths, for convert.", show_default=False),
]  # fmt: skip


def probe(
    spec: SpecArg,
    checkpoint: CkptArg,
    inputs: InputsOpt = None,
    samples: SamplesOpt = None,
    seed: SeedOpt = 0,
    epsilon: EpsilonOpt = DEFAULT_EPSILON,
    batch: BatchOpt = 64,
    plot: PlotOpt = None,
    suggest: SuggestOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the model in eval mode and measure, per residual block, abs = mean ‖x_out − x_in‖
    and scaled = mean ‖x_out − x_in‖ / ‖x_in‖; per section (consecutive blocks of one shape),
    the distances and recommended_blocks = max(blocks, ceil(scaled_distance / epsilon)).

    --suggest writes the student spec that deepens each section to that depth (or says which
    `times` to change by hand), ready for `morph convert`. See docs/probe.md.
    """
    from morphspec.probe import probe as run_probe

    out = Output(as_json)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise MorphError(f"--epsilon must be a positive number, got {epsilon:g}")
    arch = resolve(load_spec(spec, set_))
    inputs_of = _inputs(arch, checkpoint, inputs)
    if suggest is not None and plot is not None and _same_path(suggest, plot):
        raise MorphError("--suggest and --plot name the same file; give two", Mark(str(plot)))
    for target in (suggest, plot):
        if target is not None:
            check_target(target, force=force, inputs=inputs_of)
    if plot is not None:
        need_matplotlib()
    report = run_probe(arch, checkpoint, inputs=inputs, samples=samples, seed=seed,
                       epsilon=epsilon, batch=batch)  # fmt: skip
    data: dict[str, Any] = report.to_json()
    if suggest is not None:
        data["suggest"] = _write_suggestion(report, spec, suggest, parse_set(set_), out, inputs_of)
    if plot is not None:
        with output_file(plot, force=force, inputs=inputs_of) as staged:
            plot_report(report, staged)
        data["plot"] = str(plot)
    out.result(data, _render(report))


def _inputs(arch: Arch, checkpoint: Path, inputs: Path | None) -> list[tuple[Path, str]]:
    """Everything probe reads (spec files, extends bases, checkpoint, --inputs): never outputs."""
    found = [(Path(f), f"the spec file {f}") for f in arch.spec.files]
    found += folder_inputs(checkpoint, "the checkpoint")
    return found + ([(inputs, "the --inputs file")] if inputs is not None else [])


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _write_suggestion(
    report: ProbeReport,
    teacher: Path,
    target: Path,
    teacher_set: dict[str, Any],
    out: Output,
    inputs: list[tuple[Path, str]],
) -> dict[str, Any]:
    """Write the student, and rename it into place only after it loads and `diff` plans it."""
    from morphspec.growth.plan import diff
    from morphspec.suggest import student_text, suggest

    suggestion = suggest(report, teacher_set)
    with output_file(target, force=True, inputs=inputs) as tmp:  # --force checked up front
        tmp.write_text(student_text(suggestion, report, teacher, target), encoding="utf-8")
        student = resolve(load_spec(tmp))
        diff(report.arch, student)
        _check_depths(report, student)
    for note in suggestion.notes:
        out.talk(note)
    out.talk(f"wrote {target}")
    return {"path": str(target), **suggestion.to_json()}


def _check_depths(report: ProbeReport, student: Arch) -> None:
    """The student's repeats are at least as long as each var change promised."""
    for sec in report.layout:
        if sec.repeat is not None:
            old = report.arch.node(sec.repeat).args["times"]
            if student.node(sec.repeat).args["times"] < old:
                raise MorphError(f"internal: the suggestion shortens {sec.repeat}")


def _render(report: ProbeReport) -> Group:
    blocks = Table(box=None, pad_edge=False, title="blocks", title_justify="left")
    for col in ("block", "section", "abs", "scaled"):
        blocks.add_column(col, justify="right" if col in ("abs", "scaled") else "left")
    for b in report.blocks:
        blocks.add_row(b.path, b.section, f"{b.abs:.4g}", f"{b.scaled:.4g}")
    sections = Table(box=None, pad_edge=False, title="sections", title_justify="left")
    heads = ("section", "blocks", "distance", "scaled dist.", "mean scaled", "recommended",
             f"< ε={report.epsilon:g}")  # fmt: skip
    for col in heads:
        sections.add_column(col, justify="left" if col == "section" else "right")
    for s in report.sections:
        sections.add_row(
            s.name, str(s.blocks), f"{s.distance:.4g}", f"{s.scaled_distance:.4g}",
            f"{s.mean_scaled:.4g}", str(s.recommended_blocks),
            "yes" if s.perturbation_from_identity else "no",
        )  # fmt: skip
    foot = Text(
        f"{report.samples} samples; recommended = max(blocks, ceil(scaled distance / ε))",
        style="dim",
    )
    return Group(blocks, Text(""), sections, Text(""), foot)
