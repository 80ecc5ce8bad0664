"""The shortcut a residual gets when its body changes the shape and it names no shortcut
body: torchvision's downsample (a strided 1x1 conv without bias, then batchnorm) for
images, a linear without bias for flat tensors."""

from __future__ import annotations

from morphspec.arch import leaves
from morphspec.arch.nodes import Node, TensorShape
from morphspec.errors import Mark, SpecError

__all__ = ["default_shortcut"]


def default_shortcut(inp: TensorShape, out: TensorShape, mark: Mark, path: str) -> list[Node]:
    """A 1x1 conv without bias (stride to match) then batchnorm; linear for flat tensors."""
    if inp.layout == "image" and out.layout == "image":
        strides = [
            st for st in range(1, inp.dims[1] + 1)
            if ((inp.dims[1] - 1) // st + 1, (inp.dims[2] - 1) // st + 1) == out.dims[1:]
        ]  # fmt: skip
        if not strides:
            raise SpecError(
                f"residual '{path}': no strided 1x1 conv maps {inp} to {out};"
                " give the shortcut a body",
                mark,
            )
        stride = strides[0]
        conv = leaves.make(
            "conv", "0", f"{path}.0",
            {"out": out.channels, "kernel": 1, "stride": stride, "padding": 0,
             "dilation": 1, "bias": False},
            inp, mark,
        )  # fmt: skip
        bn = leaves.make(
            "batchnorm", "1", f"{path}.1", {"eps": 1e-5, "momentum": 0.1}, conv.out, mark
        )
        if conv.out != out:
            raise SpecError(
                f"residual '{path}': the default shortcut gives {conv.out}, not {out}", mark
            )
        return [conv, bn]
    if (
        inp.layout == out.layout
        and inp.layout in ("vector", "sequence")
        and inp.dims[:-1] == out.dims[:-1]
    ):
        lin = leaves.make(
            "linear", "0", f"{path}.0", {"out": out.channels, "bias": False}, inp, mark
        )
        return [lin]
    raise SpecError(
        f"residual '{path}': no default shortcut maps {inp} to {out}; give it a body", mark
    )
