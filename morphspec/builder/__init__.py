"""From a resolved Arch to a torch module, through a closed registry of layer kinds."""

from morphspec.builder.registry import BUILDERS, build_arch, build_node
from morphspec.builder.reversible import weight_smoothness

__all__ = ["BUILDERS", "build_arch", "build_node", "weight_smoothness"]
