"""`export_hf`: a spec's checkpoint -> a Hugging Face folder that `from_pretrained` loads.

Writes config.json (the family's fields from the resolved spec, over the source folder's
config when one is given, so token ids and the like survive), the weights under the
family's names (one file, or shards of at most `shard_bytes` with the index), and copies the
source folder's tokenizer and generation files unchanged. The folder is staged and committed
by `checkpoint/output.py` (it appears whole or not at all, and replaces only an empty folder
or one morph wrote). Only JSON and safetensors are written; no transformers needed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morphspec.arch import Arch, resolve
from morphspec.checkpoint import INDEX_NAME, TensorEntry, check_keys, make_metadata
from morphspec.checkpoint.output import check_folder_target, folder_inputs, output_folder
from morphspec.checkpoint.writer import write_safetensors
from morphspec.errors import Mark, MorphError, Problem
from morphspec.interop.family import Family
from morphspec.interop.folder import open_checkpoint
from morphspec.interop.hfconfig import read_config_json
from morphspec.interop.importer import resolve_text, spec_text
from morphspec.interop.keymap import Group
from morphspec.interop.registry import BY_NAMING, FAMILIES
from morphspec.spec import load_spec
from morphspec.spec.load import SetArg

if TYPE_CHECKING:
    import torch

__all__ = [
    "COPIED",
    "DEFAULT_SHARD_BYTES",
    "ExportResult",
    "copy_companions",
    "dtype_name",
    "export_hf",
    "family_of",
    "hf_config",
    "merged_config",
    "shard",
]

DEFAULT_SHARD_BYTES = 5 * 1024**3  # transformers' own default max_shard_size
COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)
_DTYPE_NAMES = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
    "torch.float64": "float64",
}


@dataclass(frozen=True)
class ExportResult:
    output: Path
    family: str
    files: list[str]
    tensors: int
    bytes: int


def family_of(arch: Arch) -> Family:
    family = BY_NAMING.get(arch.spec.naming)
    if family is None:
        names = ", ".join(f.naming for f in FAMILIES)
        raise MorphError(
            f"spec '{arch.name}' has naming {arch.spec.naming}; export needs a Hugging Face"
            f" family ({names}): write the teacher's spec with `morph import-hf`, or add"
            " `naming:` to a spec of that family's shape",
            arch.spec.mark(("naming",)),
        )
    return family


def hf_config(arch: Arch, family: Family, scratch: Path) -> dict[str, Any]:
    """The family's config.json fields for `arch`, checked by round trip through a spec."""
    config = family.config(arch)
    params = family.read(config, Mark("<exported config>"))
    again = resolve_text(spec_text(family, params, arch.name, "export"), scratch)
    problems: list[Problem] = []
    mine, theirs = dict(arch.state_shapes()), dict(again.state_shapes())
    for key in sorted(mine.keys() ^ theirs.keys()):
        side = "has" if key in mine else "lacks"
        problems.append(Problem(f"the spec {side} '{key}', which {family.naming} does not name"))
    leaves = {n.path: n for n in again.nodes() if not n.is_container}
    for node in arch.nodes():
        other = leaves.get(node.path)
        if (
            not node.is_container
            and other is not None
            and (other.kind != node.kind or other.args != node.args)
        ):
            problems.append(
                Problem(
                    f"layer '{node.path}' ({node.kind} {node.args}) differs"
                    f" from {family.naming}'s ({other.kind} {other.args})",
                    node.mark,
                )
            )
    if problems:
        head = Problem(
            f"spec '{arch.name}' is not a {family.naming} model, so it has no Hugging Face config:",
            arch.spec.mark(()),
        )
        raise MorphError([head, *problems[:20]])
    return config


def merged_config(arch: Arch, family: Family, src: Path | None, scratch: Path) -> dict[str, Any]:
    """The family's fields for `arch` over the source folder's config.json (token ids and
    the like survive; the folder's model_type stays where it reads to the same spec)."""
    base: dict[str, Any] = {}
    if src is not None:
        base = read_config_json(src / "config.json")
    config = hf_config(arch, family, scratch)
    kind = base.get("model_type")
    if kind in family.model_types and _reads_alike(family, config, kind):
        config = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    return {**base, **config}


def _reads_alike(family: Family, config: dict[str, Any], kind: str) -> bool:
    """Whether `config` under the folder's model_type is still the same model (a Mistral
    stays a Mistral; a Llama upcycled to a mixture becomes a Mixtral)."""
    here = Mark("<exported config>")
    try:
        return family.read({**config, "model_type": kind}, here) == family.read(config, here)
    except MorphError:
        return False


def copy_companions(src: Path | None, staging: Path) -> list[str]:
    """Copy the source folder's tokenizer and generation files unchanged; their names."""
    copied = []
    for name in COPIED if src is not None else ():
        assert src is not None
        if (src / name).is_file():
            shutil.copy2(src / name, staging / name)
            copied.append(name)
    return copied


def dtype_name(dtypes: set[torch.dtype] | set[str]) -> str | None:
    """config.json's `dtype`: the one dtype of all tensors, or None when mixed."""
    names = {str(d) for d in dtypes}
    return _DTYPE_NAMES.get(names.pop(), "float32") if len(names) == 1 else None


def shard(entries: list[TensorEntry], limit: int) -> list[list[TensorEntry]]:
    """Entries in key order, cut into runs of at most `limit` bytes (a larger tensor alone)."""
    runs: list[list[TensorEntry]] = [[]]
    size = 0
    for e in sorted(entries, key=lambda e: e.key):
        if runs[-1] and size + e.nbytes > limit:
            runs.append([])
            size = 0
        runs[-1].append(e)
        size += e.nbytes
    return runs


def export_hf(
    spec: str | Path,
    checkpoint: str | Path,
    output: str | Path,
    *,
    source: str | Path | None = None,
    set: SetArg = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    force: bool = False,
) -> ExportResult:
    """Write the Hugging Face folder of `checkpoint` (of `spec`); see the module docstring."""
    out, src = Path(output), Path(source) if source is not None else None
    arch = resolve(load_spec(spec, set))
    family = family_of(arch)
    inputs = folder_inputs(checkpoint, "the checkpoint")
    inputs += [(Path(f), f"the spec file {f}") for f in arch.spec.files]
    if src is not None:
        inputs += folder_inputs(src, "the --source folder")
    check_folder_target(out, force=force, inputs=inputs)
    config = merged_config(arch, family, src, out.parent)
    with output_folder(out, force=force, inputs=inputs) as staging:
        with open_checkpoint(checkpoint, arch) as reader:
            check_keys(reader, arch.state_shapes(), str(spec))
            files = _write_weights(reader, arch, family, staging, shard_bytes)
            dtypes = {str(reader.dtype(k)) for k in reader}
        config["dtype"] = dtype_name(dtypes)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        files += copy_companions(src, staging)
    total = sum((out / f).stat().st_size for f in files)
    return ExportResult(
        out, family.naming, sorted(["config.json", *files]), len(arch.state_shapes()), total
    )


def _write_weights(
    reader: Any, arch: Arch, family: Family, staging: Path, shard_bytes: int
) -> list[str]:
    groups, _ = family.keymap.groups(sorted(arch.state_shapes()))
    shapes = arch.state_shapes()

    def produce(g: Group) -> Callable[[], torch.Tensor]:
        return lambda: g.to_hf([reader.get(k) for k in g.morph])

    entries = [
        TensorEntry(
            g.hf, g.hf_shape([shapes[k] for k in g.morph]), reader.dtype(g.morph[0]), produce(g)
        )
        for g in groups
    ]
    meta = make_metadata(arch.spec.resolved_json())
    runs = shard(entries, shard_bytes)
    if len(runs) == 1:
        write_safetensors(staging / "model.safetensors", runs[0], meta)
        return ["model.safetensors"]
    n = len(runs)
    weight_map: dict[str, str] = {}
    files = []
    for i, run in enumerate(runs, start=1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        write_safetensors(staging / name, run, meta)
        weight_map.update({e.key: name for e in run})
        files.append(name)
    index = {"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map}
    (staging / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", "utf-8")
    return [INDEX_NAME, *files]
