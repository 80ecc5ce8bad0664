"""`import_hf`: a Hugging Face folder's config.json -> a spec that reads the folder as it is.

Only JSON is read here (no torch, no transformers): the family is chosen by `model_type`,
its `read` refuses what the spec cannot express (naming the field), and the spec is
written with vars for every size, so a student is `extends` plus `vars`. The folder's
weights are checked against the spec (names, shapes, index) before the spec is written,
so an import that succeeds is one that `morphspec.load` will read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphspec.arch import Arch, resolve
from morphspec.checkpoint.output import check_target, folder_inputs, output_file, staging_file
from morphspec.errors import Mark, MorphError, Problem
from morphspec.interop.family import Family, refuse
from morphspec.interop.hfconfig import checked, read_config_json, texts
from morphspec.interop.registry import BY_MODEL_TYPE, FAMILIES, REFUSED
from morphspec.spec import load_spec

__all__ = ["ImportResult", "import_hf", "read_config", "spec_text"]

_HEADER = """\
# Written by `morph import-hf` from {source}. The folder's safetensors are read as they are,
# through the {naming} key map (morphspec/interop); a student is this file `extends`-ed with
# other vars, or `--set NAME=VALUE`.
morphspec: 1
name: {name}
description: {description}
"""


@dataclass(frozen=True)
class ImportResult:
    spec: Path
    family: str
    vars: dict[str, Any]
    tensors: int


def read_config(folder: Path) -> tuple[Family, dict[str, Any]]:
    """The family of a folder and the parameters its spec needs, or a clear refusal."""
    path = folder / "config.json"
    where = Mark(str(path))
    if not folder.is_dir():
        raise MorphError("not a folder; give a Hugging Face model folder", Mark(str(folder)))
    if not path.exists() and not path.is_symlink():
        raise MorphError("the folder has no config.json", Mark(str(folder)))
    config = read_config_json(path)
    model_type = config.get("model_type")
    family = BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if isinstance(model_type, str) and model_type in REFUSED:
        field, why = REFUSED[model_type]
        raise refuse(where, field, config.get(field), why)
    if family is None:
        known = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise MorphError(
            f"unsupported architecture: model_type {model_type!r}; morph imports {known}", where
        )
    heads = [
        a
        for a in checked("architectures", config.get("architectures") or [], texts, where)
        if not a.endswith("ForCausalLM") and a != "GPT2LMHeadModel"
    ]
    if heads:
        raise MorphError(
            f"unsupported architecture {heads[0]} (architectures); morph imports causal"
            " language models (…ForCausalLM, GPT2LMHeadModel)",
            where,
        )
    return family, family.read(config, where)


def spec_text(family: Family, params: dict[str, Any], name: str, source: str) -> str:
    head = _HEADER.format(
        source=source,
        naming=family.naming,
        name=json.dumps(name),
        description=json.dumps(f"imported from {source}"),
    )
    return head + family.spec_yaml(params)


def resolve_text(text: str, where: Path) -> Arch:
    """Resolve spec text through a unique temporary file in the folder `where` (for its marks)."""
    with staging_file(where / "import.yaml") as tmp:
        tmp.write_text(text, encoding="utf-8")
        return resolve(load_spec(tmp))


def source_inputs(folder: Path) -> list[tuple[Path, str]]:
    """What import-hf reads: the folder and every file in it (none may be the output)."""
    return folder_inputs(folder, f"the folder {folder}")


def import_hf(folder: str | Path, output: str | Path, force: bool = False) -> ImportResult:
    """Write the spec of a Hugging Face folder to `output`, after checking its weights."""
    from morphspec.interop.folder import open_checkpoint

    src = Path(folder)
    inputs = source_inputs(src)
    out = check_target(output, force=force, inputs=inputs)
    family, params = read_config(src)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", src.resolve().name).strip("-.") or "imported"
    text = spec_text(family, params, name, src.as_posix())
    with output_file(out, force=force, inputs=inputs) as staged:
        staged.write_text(text, encoding="utf-8")
        try:
            arch = resolve(load_spec(staged))
        except MorphError as e:  # name the config, not the staging file that is removed
            where = Mark(str(src / "config.json"))
            made = [Problem(f"the spec made from it is invalid: {p.message}", where)
                    for p in e.problems]  # fmt: skip
            raise MorphError(made) from None
        with open_checkpoint(src, arch) as reader:
            tensors = len(reader)
    return ImportResult(out, family.naming, dict(arch.spec.vars), tensors)
