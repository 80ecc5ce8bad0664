"""The cost of starting and leaving a command that imports torch.

Importing torch creates a few hundred thousand Python objects, and the cyclic garbage
collector walks the growing heap again and again while it does (0.2 s of the 1.6 s import
on the 2-vCPU development VM). At exit, tearing the interpreter down (modules, then
torch's libraries) took 0.4 to 0.8 s more. Neither does anything for the user: morph has
committed and fsynced what it writes before its command returns.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import sys
from types import ModuleType

__all__ = ["leave", "quiet_import"]


def quiet_import(name: str) -> ModuleType:
    """Import `name` with the cyclic collector paused, then move everything imported so
    far out of its reach (`gc.freeze`): module objects live until exit anyway."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def leave(code: int) -> None:
    """Exit with `code`. Once torch is loaded, the exit handlers run and the standard streams
    are flushed, then the process ends without the interpreter's teardown (os._exit);
    under torch.distributed, and before torch is loaded, it is an ordinary exit."""
    torch = sys.modules.get("torch")
    distributed = getattr(torch, "distributed", None) if torch is not None else None
    if torch is None or (
        distributed is not None and distributed.is_available() and distributed.is_initialized()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    os._exit(code)
