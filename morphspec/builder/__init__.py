"""From a resolved Arch to a torch module, through each kind's record (morphspec.kinds)."""

from morphspec.builder.registry import build_arch, build_node
from morphspec.builder.reversible import weight_smoothness

__all__ = ["build_arch", "build_node", "weight_smoothness"]
