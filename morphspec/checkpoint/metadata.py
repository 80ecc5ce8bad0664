"""The header `__metadata__` that `morph` writes (SPEC.md "Checkpoints").

safetensors metadata is a flat str -> str map, so everything structured (the spec, the
plan) goes in as JSON text, and every value is checked to be a string here rather than
failing later inside the writer.
"""

from __future__ import annotations

from importlib import metadata as _importlib_metadata

__all__ = ["CONVERSION_KEYS", "FORMAT_KEYS", "PREFIX", "make_metadata", "morphspec_version"]

PREFIX = "morphspec."

#: Keys every checkpoint written by morphspec carries.
FORMAT_KEYS: tuple[str, ...] = ("format", "morphspec.version", "morphspec.spec")

#: Keys a conversion (teacher -> student) adds on top of FORMAT_KEYS (and every growth
#: option under its flat name: `GrowOptions.metadata`).
CONVERSION_KEYS: tuple[str, ...] = (
    "morphspec.teacher_sha256",
    "morphspec.family",
    "morphspec.rescale",
    "morphspec.seed",
    "morphspec.plan",
)

_FALLBACK_VERSION = "0.1.0"


def morphspec_version() -> str:
    """The installed distribution's version; a plain source checkout falls back to 0.1.0."""
    try:
        return _importlib_metadata.version("morphspec")
    except _importlib_metadata.PackageNotFoundError:
        return _FALLBACK_VERSION


def make_metadata(spec_json: str, **extra: str) -> dict[str, str]:
    """Header metadata for a written checkpoint; `extra` keys get the `morphspec.` prefix.

    Raises ValueError for a non-string value, because safetensors can only store strings
    and a silent `str()` would hide e.g. a dict that should have been JSON-encoded.
    """
    if not isinstance(spec_json, str):
        raise ValueError(f"metadata 'spec' must be a JSON string, got {type(spec_json).__name__}")
    out = {"format": "pt", "morphspec.version": morphspec_version(), "morphspec.spec": spec_json}
    for key, value in extra.items():
        if not isinstance(value, str):
            raise ValueError(
                f"metadata '{key}' must be a string, got {type(value).__name__}; "
                "encode numbers with str() and structures with json.dumps()"
            )
        out[PREFIX + key] = value
    return out
