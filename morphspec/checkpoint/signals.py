"""SIGTERM and SIGHUP unwind like Ctrl-C while an output is written, so `finally` blocks
remove staging files (a killed run used to leave tens of MB of hidden files behind)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Terminated", "terminate_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while writing: unwinds like Ctrl-C, so `finally` blocks clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the duration of the block, SIGTERM and SIGHUP raise `Terminated`; the previous
    handlers are restored afterwards. Outside the main thread signals cannot be caught, and
    the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {s: signal.signal(getattr(signal, s), _raise_terminated) for s in wanted}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
