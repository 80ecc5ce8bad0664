"""The one place that turns exceptions into messages and exit codes.

0 ok; 1 invalid input (`MorphError`, unreadable files, and our own bugs); 2 usage, left
to typer; 3 output not function-preserving (`NotPreservingError.exit_code`). A user never
sees a traceback for a mistake, and sees one for our bug only with `MORPH_DEBUG=1`.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from morphspec.checkpoint.output import Terminated
from morphspec.cli.output import Output
from morphspec.errors import EXIT_INVALID, Mark, MorphError, Problem
from morphspec.kinds.plugins import load_plugins

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import ClickException  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]

__all__ = ["DEBUG_ENV", "ClickException", "guarded", "install_hint"]

P = ParamSpec("P")
R = TypeVar("R")

DEBUG_ENV = "MORPH_DEBUG"
EXIT_INTERRUPTED = 130
EXTRA_MODULES = ("torch", "safetensors")  # the `torch` extra of pyproject.toml


def install_hint(module: str | None) -> str:
    """What to run when a command needs the torch extra that a light install lacks."""
    return (
        f"this command needs {module or 'torch'}, which the light install leaves out;"
        " install the extra: pip install 'morphspec[torch]'"
    )


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Run `command`, mapping its exceptions to problems and exit codes.

    The command's `as_json` parameter (see `cli.options.JsonOpt`) picks the format.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        out = Output(bool(kwargs.get("as_json", False)))
        try:
            load_plugins()  # the project's own layer kinds, before any spec is read
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except MorphError as err:
            out.fail(err.problems, err.exit_code)
        except Terminated as err:
            out.fail([Problem(f"terminated ({err}); nothing written")], 128 + err.signum)
        except KeyboardInterrupt:
            out.fail([Problem("interrupted")], EXIT_INTERRUPTED)
        except ImportError as err:
            if err.name not in EXTRA_MODULES:
                _internal(out, err)
            out.fail([Problem(install_hint(err.name))], EXIT_INVALID)
        except MemoryError:
            message = "out of memory; the model or checkpoint is too large for this machine"
            out.fail([Problem(message)], EXIT_INVALID)
        except OSError as err:
            where = Mark(str(err.filename)) if err.filename else None
            out.fail([Problem(err.strerror or str(err), where)], EXIT_INVALID)
        except Exception as err:
            _internal(out, err)

    return run


def _internal(out: Output, err: Exception) -> NoReturn:
    """Our bug: one line, and the traceback only with MORPH_DEBUG=1."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exc()
    message = f"internal error: {type(err).__name__}: {err}".splitlines()[0]
    hint = f"(a bug in morphspec; set {DEBUG_ENV}=1 to see the traceback)"
    out.fail([Problem(f"{message} {hint}")], EXIT_INVALID)
