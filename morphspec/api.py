"""The public front door: load, resolve, build, load weights, save.

Torch is imported only by the functions that need it, so `import morphspec` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morphspec.arch import Arch, resolve
from morphspec.errors import CheckpointError
from morphspec.spec import Spec, load_spec
from morphspec.spec.load import SetArg

if TYPE_CHECKING:
    import torch
    from torch import nn

    from morphspec.growing import GrowResult

__all__ = ["build", "grow", "load", "load_spec", "resolve", "save"]


def _arch(spec_or_path: Spec | Arch | str | Path, set: SetArg = None) -> Arch:
    if isinstance(spec_or_path, Arch):
        return spec_or_path
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path, set)
    return resolve(spec)


def build(spec_or_path: Spec | Arch | str | Path, set: SetArg = None) -> nn.Module:
    """The torch model of a spec, randomly initialised by torch's defaults, in eval mode."""
    from morphspec.builder import build_arch

    return build_arch(_arch(spec_or_path, set))


def load(
    spec_path: Spec | Arch | str | Path,
    checkpoint_path: str | Path,
    set: SetArg = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The model of `spec_path` with the weights of `checkpoint_path`, strictly matched.

    The checkpoint is a safetensors file, a sharded set's index, or a folder: a Hugging Face
    folder is read as it is when the spec declares its family's `naming` (`morph import-hf`).
    `dtype` is the model's (torch's default if None): weights are cast to it, so a float64
    check of a float64 checkpoint needs `dtype=torch.float64`.

    Every missing, unexpected or mis-shaped key is listed by name in the error.
    """
    from morphspec.arguments import check_dtype
    from morphspec.builder import build_arch
    from morphspec.checkpoint import check_keys
    from morphspec.interop.folder import open_checkpoint

    check_dtype(dtype)
    arch = _arch(spec_path, set)
    model = build_arch(arch)
    if dtype is not None:
        model.to(dtype)
    with open_checkpoint(checkpoint_path, arch) as reader:
        check_keys(reader, arch.state_shapes(), arch.spec.path)
        state = {k: reader.get(k) for k in reader}
    model.load_state_dict(state, strict=True)
    return model


def save(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    spec: Spec | Arch | str | Path,
    set: SetArg = None,
    **extra: str,
) -> Path:
    """Write a checkpoint with the SPEC.md metadata; keys must match the spec exactly."""
    from torch import nn

    from morphspec.checkpoint import make_metadata, save_state_dict

    arch = _arch(spec, set)
    state: Mapping[str, Any] = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, nn.Module)
        else model_or_state_dict
    )
    expected = arch.state_shapes()
    problems = sorted(expected.keys() ^ state.keys()) + [
        k for k in expected if k in state and tuple(state[k].shape) != expected[k]
    ]
    if problems:
        raise CheckpointError(
            f"the state_dict does not match spec '{arch.name}': {', '.join(problems[:20])}"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save_state_dict(tensors, Path(path), make_metadata(arch.spec.resolved_json(), **extra))


def grow(
    teacher: nn.Module | Mapping[str, torch.Tensor],
    teacher_spec: Spec | Arch | str | Path,
    student_spec: Spec | Arch | str | Path,
    **kwargs: Any,
) -> GrowResult:
    """Grow `teacher` (a module or state_dict) into the student in-process, verified in
    eval and train mode; with `optimizer=`, the result carries the continued optimizer.
    See `morphspec.growing.grow` for every option."""
    from morphspec.growing import grow as grow_in_process

    return grow_in_process(teacher, teacher_spec, student_spec, **kwargs)
