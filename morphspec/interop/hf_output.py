"""`convert --to-hf`: the grown student streamed straight into a Hugging Face folder.

The student's entries (computed on demand from the teacher, `growth/apply.py`) are regrouped
by the family's declared `KeyMap` into Hugging Face tensors: each HF entry's producer calls
the producers of the morphspec tensors it is made of and applies the rule's ops (q, k, v
concatenated and transposed into GPT-2's `c_attn`, a rename for Llama). The writer pulls
those producers one tensor ahead, so the student exists once, in the HF-named files, and
is never written under morphspec names first. The folder (config.json, one file or shards
with the index, the teacher folder's tokenizer and generation files) is staged by the
caller (`checkpoint/output.py`), verified from the staging folder through the same
`open_checkpoint` view every command uses, and committed whole, marked as morph's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from morphspec.arch import Arch
from morphspec.checkpoint.sharding import plan_shards, write_sharded
from morphspec.checkpoint.writer import LateMetadata, TensorEntry, write_safetensors
from morphspec.errors import Mark, MorphError
from morphspec.interop.exporter import (
    copy_companions,
    dtype_name,
    family_of,
    merged_config,
)  # fmt: skip
from morphspec.interop.family import Family
from morphspec.interop.keymap import Group

__all__ = ["HFTarget", "hf_entries", "hf_target", "write_hf_folder"]


@dataclass(frozen=True)
class HFTarget:
    """What `--to-hf` knows before a tensor moves: the family and the config to write."""

    family: Family
    config: dict[str, object]
    source: Path | None  # the teacher's HF folder, whose companions are copied


def hf_target(student: Arch, checkpoint: Path, scratch: Path) -> HFTarget:
    """The student's family and merged config.json, or a refusal naming the spec's place."""
    family = family_of(student)
    source = checkpoint if checkpoint.is_dir() and (checkpoint / "config.json").is_file() else None
    return HFTarget(family, merged_config(student, family, source, scratch), source)


def hf_entries(family: Family, entries: Sequence[TensorEntry]) -> list[TensorEntry]:
    """The student's entries regrouped under the family's names, still computed on demand."""
    by_key = {e.key: e for e in entries}
    groups, unnamed = family.keymap.groups(sorted(by_key))
    if unnamed:  # hf_config's round trip makes this unreachable for a valid target
        raise MorphError(f"{family.naming} names no tensor for {', '.join(unnamed[:5])}")

    def produce(g: Group) -> Callable[[], torch.Tensor]:
        return lambda: g.to_hf([by_key[k].produce() for k in g.morph])

    return [
        TensorEntry(
            g.hf,
            g.hf_shape([by_key[k].shape for k in g.morph]),
            by_key[g.morph[0]].dtype,
            produce(g),
            sum(by_key[k].nbytes + by_key[k].scratch for k in g.morph),  # the parts, then joined
        )
        for g in groups
    ]


def write_hf_folder(
    staging: Path,
    target: HFTarget,
    entries: Sequence[TensorEntry],
    metadata: Mapping[str, str],
    limit: int,
    progress: Callable[[int], None] | None = None,
    late: LateMetadata | None = None,
) -> list[str]:
    """Write config.json, the weights (one file, or shards of at most `limit` bytes with
    the index) and the companions into `staging`; returns the file names written."""
    hf = hf_entries(target.family, entries)
    config = {**target.config, "dtype": dtype_name({e.dtype for e in hf})}
    if len(plan_shards(hf, metadata, limit)) == 1:
        write_safetensors(staging / "model.safetensors", hf, metadata, progress=progress, late=late)
        files = ["model.safetensors"]
    else:
        shards = write_sharded(staging, hf, metadata, limit, progress=progress, late=late)
        files = ["model.safetensors.index.json", *(p.name for p in shards)]
    try:
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    except OSError as e:
        raise MorphError(f"cannot write config.json ({e})", Mark(str(staging))) from None
    return sorted(["config.json", *files, *copy_companions(target.source, staging)])
