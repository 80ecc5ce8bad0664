"""The spec format: pydantic models, YAML loading with marks, expressions, `extends`, `--set`."""

from morphspec.spec.load import load_spec, parse_set
from morphspec.spec.models import LAYER_KINDS, Spec

__all__ = ["LAYER_KINDS", "Spec", "load_spec", "parse_set"]
