"""Resolved architectures: names, integers and shapes, checked before any torch exists."""

from morphspec.arch.nodes import Arch, Node, TensorShape
from morphspec.arch.resolve import resolve

__all__ = ["Arch", "Node", "TensorShape", "resolve"]
