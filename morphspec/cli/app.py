"""The `morph` command line: a typer app with each command registered here, by hand.

Commands live one per module and stay thin: parse options, call the library, hand the
result to `cli.output.Output`. `cli.guard` maps every exception to a message and an exit
code. Torch is imported only inside commands that build models, so `morph --help` and
`morph validate` start fast.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer

from morphspec.cli import (
    convert,
    diff,
    families,
    hf,
    init,
    probe,
    schema,
    summary,
    validate,
    verify,
)
from morphspec.cli.guard import ClickException, guarded
from morphspec.cli.output import problem_json, to_json
from morphspec.cli.startup import leave
from morphspec.errors import Problem

__all__ = ["app", "main"]

HELP = """\
Declare networks in YAML and grow trained checkpoints into wider or deeper students
that compute the same function.

[bold]Exit codes[/bold]: 0 ok, 1 invalid input (each problem printed as
FILE:LINE:COL: message), 2 usage error, 3 output not function-preserving, 128+N killed by
signal N (130 Ctrl-C); nothing is written or left behind on any failure.

Set MORPH_DEBUG=1 to see the traceback of an internal error."""

EPILOG = """\
[bold]Examples[/bold]
  morph validate examples/specs/*.yaml
  morph summary examples/specs/resnet_cifar10.yaml --set r=0.25
  morph init examples/specs/resnet_cifar10.yaml -o teacher.safetensors"""

SPECS = "Specs"
CHECKPOINTS = "Checkpoints"


def flow(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the line breaks inside them joined."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


app = typer.Typer(
    name="morph",
    help=flow(HELP),
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def add(name: str, command: Callable[..., Any], examples: str, panel: str) -> None:
    """Register one command: guarded errors, flowing help, an Examples epilog, a panel."""
    epilog = "[bold]Examples[/bold]\n" + examples
    app.command(name, help=flow(command.__doc__), epilog=epilog, rich_help_panel=panel)(
        guarded(command)
    )


add("validate", validate.validate, validate.EXAMPLES, SPECS)
add("summary", summary.summary, summary.EXAMPLES, SPECS)
add("schema", schema.schema, schema.EXAMPLES, SPECS)
add("init", init.init, init.EXAMPLES, CHECKPOINTS)
add("diff", diff.diff, diff.EXAMPLES, CHECKPOINTS)
add("convert", convert.convert, convert.EXAMPLES, CHECKPOINTS)
add("verify", verify.verify, verify.EXAMPLES, CHECKPOINTS)
add("families", families.families, families.EXAMPLES, CHECKPOINTS)
add("probe", probe.probe, probe.EXAMPLES, CHECKPOINTS)
add("import-hf", hf.import_hf, hf.IMPORT_EXAMPLES, CHECKPOINTS)
add("export-hf", hf.export_hf, hf.EXPORT_EXAMPLES, CHECKPOINTS)


def _version(value: bool) -> None:
    if value:
        from morphspec import __version__

        typer.echo(f"morphspec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Options of `morph` itself."""


def main() -> None:
    """Entry point of the `morph` and `morphspec` console scripts."""
    # torch warns at import when numpy is absent; morphspec never needs numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        _run(sys.argv[1:])
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")  # what sys.exit does with a message
        code = 1
    leave(code or 0)


def _run(args: list[str]) -> None:
    if "--json" not in args:
        app()
        return
    # With --json even a usage error (exit 2) is one JSON document on stdout, so click's
    # standalone mode, which prints usage text, is replaced by this handler.
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="morph", standalone_mode=False)
    except ClickException as err:
        doc = {"ok": False, "problems": [problem_json(Problem(err.format_message()))]}
        sys.stdout.write(to_json(doc) + "\n")
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
