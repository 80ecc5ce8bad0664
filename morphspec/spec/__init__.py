"""The spec format: pydantic models, YAML loading with marks, expressions, `extends`, `--set`."""

from typing import Any

from morphspec.spec.load import load_spec, parse_set
from morphspec.spec.models import Spec

__all__ = ["LAYER_KINDS", "Spec", "load_spec", "parse_set"]


def __getattr__(name: str) -> Any:
    if name == "LAYER_KINDS":  # live: plugins may add kinds after import
        from morphspec.kinds import registry

        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
