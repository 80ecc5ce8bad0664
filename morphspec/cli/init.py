"""`morph init`: a randomly initialised checkpoint, so every command can be tried at once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from morphspec.arch import resolve
from morphspec.checkpoint.output import check_target, output_file
from morphspec.cli.options import ForceOpt, JsonOpt, SeedOpt, SetOpt, SpecArg
from morphspec.cli.output import Output
from morphspec.errors import Mark
from morphspec.spec import load_spec
from morphspec.spec.limits import check_params

__all__ = ["EXAMPLES", "init"]

EXAMPLES = """\
  morph init examples/specs/resnet_cifar10.yaml -o teacher.safetensors
  morph init examples/specs/gpt_mini.yaml -o gpt.safetensors --seed 1 --force"""

OutOpt = Annotated[
    Path,
    typer.Option(
        "--output", "-o", metavar="OUT.safetensors", help="Checkpoint to write.", show_default=False
    ),
]


def init(
    spec: SpecArg,
    output: OutOpt,
    seed: SeedOpt = 0,
    set_: SetOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a checkpoint of the spec's model with torch's default random initialisation.

    The header carries the resolved spec (after --set), so `morphspec.load` and the other
    commands can read it back.
    """
    out = Output(as_json)
    arch = resolve(load_spec(spec, set_))
    inputs = [(f, f"the spec file {f}") for f in arch.spec.files]
    check_target(output, force=force, inputs=inputs)
    numel = sum(math.prod(s) for s in arch.state_shapes().values())
    check_params(numel, Mark(str(spec)), f"initialising '{arch.name}'")
    import torch  # first, so a light install fails before it talks

    from morphspec.api import build, save

    out.talk(f"building {arch.name} ({arch.trainable_count():,} parameters)")

    torch.manual_seed(seed)
    model = build(arch)
    with output_file(output, force=force, inputs=inputs) as staged:
        save(model, staged, arch, seed=str(seed))
    path = Path(output)
    data = {
        "path": str(path),
        "spec": str(spec),
        "name": arch.name,
        "seed": seed,
        "tensors": len(arch.state_shapes()),
        "params": arch.trainable_count(),
        "bytes": path.stat().st_size,
    }
    out.result(data, f"wrote {path} ({data['tensors']} tensors, {data['bytes']:,} bytes)")
