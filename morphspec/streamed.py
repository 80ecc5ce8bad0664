"""A model whose weights live in the checkpoint until the layer that owns them runs.

Verification used to build teacher and student whole, so checking a 2.2 GB student needed
both models in memory. Here the model is built on the `meta` device (shapes, no storage);
a pre-forward hook on each module that owns parameters or buffers reads them from the
checkpoint (with `pread` into pooled buffers, `checkpoint/loader.py`, converted to the
model's dtype where they differ) just before it runs, and a forward hook puts the meta
placeholders back, and the buffers into the pool, right after. Heap use is then about the
largest layer plus activations, whatever the model's size.

The values are those `load_state_dict` would copy in (the same dtype conversion), so the
outputs are bit-identical to the fully loaded model's; a test checks that. It runs models,
so it lives beside verify.py, not in the checkpoint I/O package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from morphspec.arch import Arch
from morphspec.checkpoint.loader import TensorLoader, pool_for
from morphspec.checkpoint.pool import BufferPool
from morphspec.checkpoint.reader import CheckpointReader

__all__ = ["streamed_model"]


@contextlib.contextmanager
def streamed_model(
    arch: Arch, reader: CheckpointReader, dtype: torch.dtype | None = None,
    pool: BufferPool | None = None,
) -> Iterator[nn.Module]:  # fmt: skip
    """The model of `arch` in eval mode, each layer's tensors read from `reader` only while
    that layer runs, in `dtype` (float32 when None), into buffers of `pool` (which two
    models run one after the other can share; `checkpoint/loader.py`). Keys and shapes
    must have been checked (`check_keys`) beforehand."""
    from morphspec.builder import build_arch

    with torch.device("meta"), _NoInit():
        model = build_arch(arch)
        if dtype is not None:
            model.to(dtype)
    model.eval()
    # A tied head reads its embedding's weight after the embedding ran: keep those resident.
    tied = set(arch.shared_weights().values())
    loader = TensorLoader(reader, pool or pool_for(reader))
    handles = []
    atomic: list[str] = []  # modules that read their children's tensors without calling them
    for prefix, module in model.named_modules():
        if any(prefix.startswith(p + ".") for p in atomic):
            continue
        whole = getattr(module, "stream_whole", False)
        if whole:
            atomic.append(prefix)
        own = [n for n, _ in module.named_parameters(recurse=whole)]
        own += [n for n, b in module.named_buffers(recurse=whole) if b is not None]
        if not own:
            continue
        layer = _Layer(module, prefix, own, loader)
        handles.append(module.register_forward_pre_hook(layer.load))
        if prefix not in tied:
            handles.append(module.register_forward_hook(layer.release))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        loader.close()


class _NoInit(TorchFunctionMode):
    """Skips `torch.nn.init`'s initialisers while a model is built on `meta`: there are no
    values to set, and `normal_` on a meta tensor imports torch's compiler (2 to 5 s, more
    than checking a small model takes)."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


class _Layer:
    """The tensors of one module: read in before its forward, dropped after it."""

    def __init__(
        self, module: nn.Module, prefix: str, names: list[str], loader: TensorLoader
    ) -> None:
        self.module = module
        self.keys = {n: f"{prefix}.{n}" if prefix else n for n in names}
        self.loader = loader
        self.meta = {n: self._get(n) for n in names}
        self.loaded: list[torch.Tensor] = []

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        """The submodule that holds `name` (a dotted name for a `stream_whole` module)."""
        path, _, local = name.rpartition(".")
        return (self.module.get_submodule(path) if path else self.module), local

    def _get(self, name: str) -> torch.Tensor:
        owner, local = self._owner(name)
        found = owner._parameters.get(local)
        return found if found is not None else owner._buffers[local]  # type: ignore[return-value]

    def _set(self, name: str, value: torch.Tensor) -> None:
        owner, local = self._owner(name)
        if local in owner._parameters:
            owner._parameters[local] = nn.Parameter(value, requires_grad=False)
        else:
            owner._buffers[local] = value

    def load(self, module: nn.Module, args: Any) -> None:
        for name, key in self.keys.items():
            tensor = self.loader.load(key, self.meta[name].dtype)
            self.loaded.append(tensor)
            self._set(name, tensor)

    def release(self, module: nn.Module, args: Any, output: Any) -> None:
        for name, placeholder in self.meta.items():
            self._set(name, placeholder)
        for tensor in self.loaded:
            self.loader.give_back(tensor, output)
        self.loaded.clear()
