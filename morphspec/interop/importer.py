"""`import_hf`: a Hugging Face folder's config.json -> a spec that reads the folder as it is.

Only JSON is read here (no torch, no transformers): the family is chosen by `model_type`,
its `read` refuses what the spec cannot express (naming the field), and the spec is
written with vars for every size, so a student is `extends` plus `vars`. The folder's
weights are checked against the spec (names, shapes, index) before the spec is written,
so an import that succeeds is one that `morphspec.load` will read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphspec.arch import Arch, resolve
from morphspec.errors import Mark, MorphError
from morphspec.interop.family import Family, refuse
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
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MorphError("the folder has no config.json", Mark(str(folder))) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MorphError(f"config.json is not readable JSON ({e})", where) from None
    if not isinstance(config, dict):
        raise MorphError("config.json must hold a JSON object", where)
    model_type = config.get("model_type")
    family = BY_MODEL_TYPE.get(str(model_type))
    if str(model_type) in REFUSED:
        field, why = REFUSED[str(model_type)]
        raise refuse(where, field, config.get(field), why)
    if family is None:
        known = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise MorphError(
            f"unsupported architecture: model_type {model_type!r}; morph imports {known}", where
        )
    heads = [
        a
        for a in config.get("architectures") or []
        if not a.endswith("ForCausalLM") and a != "GPT2LMHeadModel"
    ]
    if heads:
        raise MorphError(
            f"unsupported architecture {heads[0]} (architectures); morph imports causal"
            " language models (…ForCausalLM, GPT2LMHeadModel)",
            where,
        )
    try:
        return family, family.read(config, where)
    except (KeyError, TypeError, ValueError) as e:
        msg = f"config.json lacks or mistypes a field the spec needs: {e!r}"
        raise MorphError(msg, where) from None


def spec_text(family: Family, params: dict[str, Any], name: str, source: str) -> str:
    head = _HEADER.format(
        source=source,
        naming=family.naming,
        name=json.dumps(name),
        description=json.dumps(f"imported from {source}"),
    )
    return head + family.spec_yaml(params)


def resolve_text(text: str, where: Path) -> Arch:
    """Resolve spec text by writing it to a temporary file beside `where` (for its marks)."""
    fd, tmp = tempfile.mkstemp(dir=where, prefix=".morph-import-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return resolve(load_spec(tmp))
    finally:
        os.unlink(tmp)


def import_hf(folder: str | Path, output: str | Path, force: bool = False) -> ImportResult:
    """Write the spec of a Hugging Face folder to `output`, after checking its weights."""
    from morphspec.interop.folder import open_checkpoint

    src, out = Path(folder), Path(output)
    if out.exists() and not force:
        raise MorphError(f"{out} exists; pass --force to replace it", Mark(str(out)))
    if not out.parent.is_dir():
        raise MorphError(f"the output folder {out.parent} does not exist", Mark(str(out)))
    family, params = read_config(src)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", src.resolve().name).strip("-.") or "imported"
    text = spec_text(family, params, name, src.as_posix())
    arch = resolve_text(text, out.parent)
    with open_checkpoint(src, arch) as reader:
        tensors = len(reader)
    tmp = out.parent / f".{out.name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return ImportResult(out, family.naming, dict(arch.spec.vars), tensors)
