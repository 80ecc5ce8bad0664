"""How much a spec may expand to, so a small hostile file cannot exhaust memory or time.

A 600-byte YAML alias bomb, a `repeat` inside a `repeat` or a width of 1e8 are each a few
bytes of text; the limits below are far beyond any real network and each can be raised
with an environment variable named in the message.
"""

from __future__ import annotations

import os

from morphspec.errors import Mark, SpecError

__all__ = [
    "MAX_LAYERS",
    "MAX_PARAMS",
    "MAX_SPEC_BYTES",
    "MAX_YAML_VALUES",
    "available_memory",
    "check_params",
    "limit",
    "over",
]

MAX_SPEC_BYTES = ("MORPH_MAX_SPEC_BYTES", 10_000_000)  # a spec file, read whole
MAX_YAML_VALUES = ("MORPH_MAX_YAML_VALUES", 200_000)  # YAML values after aliases expand
MAX_LAYERS = ("MORPH_MAX_LAYERS", 100_000)  # resolved layers after repeats expand
MAX_PARAMS = ("MORPH_MAX_PARAMS", 2_000_000_000)  # numbers allocated by init / verify


def limit(which: tuple[str, int]) -> int:
    """The limit, from its environment variable when that is set: ASCII digits only (`²`
    and `٣` are digits to Python, not to a limit), a positive whole number."""
    env, default = which
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise SpecError(
            f"{env}={raw!r} is not a positive whole number (digits 0-9); fix or unset it"
        )
    return int(raw)


def over(which: tuple[str, int], what: str) -> str:
    """The message for a spec beyond a limit: what, the limit, how to raise it."""
    env, _ = which
    return f"{what} exceeds the limit of {limit(which):,}; raise it with {env}=N if it is meant"


def check_params(count: int, where: Mark, doing: str, itemsize: int = 4) -> None:
    """Refuse to allocate a model of more than MAX_PARAMS numbers (params and buffers), or
    of more bytes than the machine has available, before torch tries and dies."""
    if count > limit(MAX_PARAMS):
        raise SpecError(over(MAX_PARAMS, f"{doing} would allocate {count:,} numbers, which"), where)
    free = available_memory()
    if free is not None and count * itemsize > free:
        raise SpecError(
            f"{doing} needs {count * itemsize / 2**30:.1f} GiB for its {count:,} numbers but"
            f" only {free / 2**30:.1f} GiB of memory is available; use a smaller spec",
            where,
        )


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes; None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
