"""`morph import-hf` and `morph export-hf`: Hugging Face folders in and out."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from morphspec.cli.options import ForceOpt, JsonOpt, SetOpt, SpecArg
from morphspec.cli.output import Output

__all__ = ["EXPORT_EXAMPLES", "IMPORT_EXAMPLES", "export_hf", "import_hf"]

IMPORT_EXAMPLES = """\
  morph import-hf ./gpt2 -o gpt2.yaml
  morph summary gpt2.yaml --set layers=24"""
EXPORT_EXAMPLES = """\
  morph export-hf student.yaml student.safetensors -o ./student-hf --source ./gpt2
  morph export-hf gpt2.yaml ./gpt2 -o ./gpt2-copy --max-shard-size 200MB"""

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_size(text: str) -> int:
    """'5GB', '200MB', '512KiB' or a plain byte count (transformers' max_shard_size units)."""
    s = text.strip().upper()
    number = s.rstrip("KMGIB")
    unit = s[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not (math.isfinite(value) and value * _UNITS[unit] >= 1):
        raise typer.BadParameter(f"'{text}' is not a size such as 5GB, 200MB or 4096")
    return int(value * _UNITS[unit])


FolderArg = Annotated[
    Path, typer.Argument(metavar="DIR", help="A Hugging Face model folder.", show_default=False)
]
SpecOut = Annotated[
    Path,
    typer.Option("--output", "-o", metavar="SPEC.yaml", help="Spec to write.", show_default=False),
]
CkptArg = Annotated[
    Path,
    typer.Argument(
        metavar="CKPT",
        help="The spec's checkpoint: a file, an index or a folder.",
        show_default=False,
    ),
]
DirOut = Annotated[
    Path,
    typer.Option("--output", "-o", metavar="DIR", help="Folder to write.", show_default=False),
]
SourceOpt = Annotated[
    Path | None,
    typer.Option(
        "--source",
        metavar="DIR",
        help="The teacher's HF folder: its config.json fields that the spec does not set,"
        " its tokenizer and generation files are kept.",
        show_default=False,
    ),
]
ShardOpt = Annotated[
    str,
    typer.Option(
        "--max-shard-size",
        "--shard-size",
        metavar="SIZE",
        help="Largest shard, e.g. 5GB or 200MB, as `convert` takes it (--shard-size: the"
        " old spelling, deprecated).",
    ),
]


def import_hf(
    folder: FolderArg, output: SpecOut, force: ForceOpt = False, as_json: JsonOpt = False
) -> None:
    """Write a spec for a Hugging Face folder (GPT-2, Llama, Mistral) that reads its
    safetensors as they are, sharded or not: no copy of the weights.

    The spec has vars for every size, so a student is `extends` plus `vars`, or --set.
    Options the spec cannot express (rope scaling, sliding windows, other activations)
    are refused, naming the config.json field."""
    from morphspec.interop import import_hf as run

    out = Output(as_json)
    result = run(folder, output, force=force)
    data = {
        "spec": str(result.spec),
        "family": result.family,
        "vars": result.vars,
        "tensors": result.tensors,
    }
    sizes = ", ".join(f"{k}={v}" for k, v in result.vars.items())
    out.result(data, f"wrote {result.spec} ({result.family}; {sizes}; {result.tensors} tensors)")


def export_hf(
    spec: SpecArg,
    checkpoint: CkptArg,
    output: DirOut,
    source: SourceOpt = None,
    shard_size: ShardOpt = "5GB",
    set_: SetOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a Hugging Face folder (config.json, weights under the family's names, sharded
    above --max-shard-size) that transformers' from_pretrained loads strictly.

    The spec must declare an HF `naming` (as `morph import-hf` writes it). The folder is
    written beside the output and renamed into place when complete; an existing one is
    replaced (with --force) only when it is empty or one morph wrote."""
    from morphspec.interop import export_hf as run

    out = Output(as_json)
    result = run(
        spec,
        checkpoint,
        output,
        source=source,
        set=set_,
        shard_bytes=parse_size(shard_size),
        force=force,
    )
    data = {
        "output": str(result.output),
        "family": result.family,
        "files": result.files,
        "tensors": result.tensors,
        "bytes": result.bytes,
    }
    out.result(
        data,
        f"wrote {result.output} ({result.family}; {len(result.files)} files,"
        f" {result.bytes:,} bytes)",
    )
