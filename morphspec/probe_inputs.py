"""The samples `probe` measures on: seeded random inputs, or a tensor or safetensors file
checked against the spec (shape, dtype, token ids within the vocabulary, finite values)."""

from __future__ import annotations

from pathlib import Path

import torch

from morphspec.arch import Arch
from morphspec.errors import Mark, MorphError

__all__ = ["DEFAULT_SAMPLES", "INPUTS_KEY", "load_inputs", "probe_inputs"]

DEFAULT_SAMPLES = 256
INPUTS_KEY = "inputs"


def probe_inputs(
    arch: Arch, inputs: torch.Tensor | str | Path | None, samples: int | None, seed: int
) -> torch.Tensor:
    if inputs is None:
        from morphspec.verify import sample_inputs

        return sample_inputs(arch, samples or DEFAULT_SAMPLES, seed)
    where = Mark(str(inputs)) if not isinstance(inputs, torch.Tensor) else None
    data = inputs if isinstance(inputs, torch.Tensor) else load_inputs(inputs)
    want = (*arch.input.dims,)
    if data.dim() != len(want) + 1 or tuple(data.shape[1:]) != want or data.shape[0] < 1:
        raise MorphError(
            f"inputs have shape {list(data.shape)}, but spec '{arch.name}' takes"
            f" [N, {', '.join(map(str, want))}] (N samples of its input shape {list(want)})",
            where,
        )
    tokens = arch.input.dtype == "int64"
    if tokens != (not data.is_floating_point()):
        need = "integer token ids" if tokens else "floating-point values"
        raise MorphError(f"inputs are {data.dtype}, but spec '{arch.name}' takes {need}", where)
    if not tokens and not bool(torch.isfinite(data).all()):
        raise MorphError("inputs hold NaN or infinite values; probe measures finite ones", where)
    if tokens:
        vocab = arch.vocab() or 0
        if vocab and (int(data.min()) < 0 or int(data.max()) >= vocab):
            raise MorphError(f"token ids must lie in [0, {vocab}) for spec '{arch.name}'", where)
    return data[:samples] if samples else data


def load_inputs(path: str | Path) -> torch.Tensor:
    """Tensor `inputs` of a safetensors file, with a clear error when it is not there."""
    from morphspec.checkpoint import CheckpointReader

    with CheckpointReader(path) as reader:
        if INPUTS_KEY not in reader:
            found = ", ".join(sorted(reader)[:5]) or "none"
            raise MorphError(
                f"no tensor '{INPUTS_KEY}' in the file (tensors: {found}); save the samples"
                f" as {{'{INPUTS_KEY}': tensor}}",
                Mark(str(path)),
            )
        return reader.get(INPUTS_KEY)
