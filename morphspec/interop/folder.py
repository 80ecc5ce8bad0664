"""Reading a Hugging Face folder as it is: a key-mapping view over the checkpoint reader.

`HFFolder` is a `CheckpointReader` of the folder's safetensors (one file, or shards with
their index, all checked by the reader) that answers in the spec's keys: each key's tensor
is computed on demand from the folder's tensor by the family's `KeyMap` (a rename, a
transpose, a slice of a fused tensor). Nothing is copied to disk, and every missing,
unexpected or mis-shaped tensor is reported under the folder's own name before any
tensor is read. `open_checkpoint` is what every command uses: a DCP directory is read by
`distributed/dcp_source.py`; for a spec with an HF
`naming` it returns this view, unless the checkpoint holds the spec's own keys (one that
morph wrote); for a morphspec spec, the plain reader.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from morphspec.arch import Arch
from morphspec.checkpoint.reader import INDEX_NAME, CheckpointReader, Span
from morphspec.errors import CheckpointError, Mark, MorphError, Problem, closest
from morphspec.interop.keymap import Group, KeyMap
from morphspec.interop.registry import BY_NAMING

__all__ = ["HFFolder", "open_checkpoint"]


def open_checkpoint(path: str | os.PathLike[str], arch: Arch) -> CheckpointReader:
    """The reader for `path` as `arch` names it: a view of an HF folder, or the file itself."""
    p = Path(path)
    naming = arch.spec.naming
    if p.is_dir() and (p / ".metadata").is_file():  # torch.distributed.checkpoint
        from morphspec.distributed.dcp_source import DCPSource
        from morphspec.distributed.torchtitan import TorchtitanView, is_torchtitan

        source = DCPSource(p)
        if naming == "hf-llama" and is_torchtitan(source):
            return TorchtitanView(source, arch)
        return source
    if naming == "morphspec":
        if p.is_dir() and (p / "config.json").is_file():
            raise CheckpointError(
                f"{p} is a Hugging Face folder, but spec '{arch.name}' reads morphspec names;"
                " write its spec with `morph import-hf` (or add `naming: hf-...`)",
                Mark(str(p)),
            )
        return CheckpointReader(p)
    if p.is_dir():
        _check_folder(p)
    plain = CheckpointReader(p)
    if set(plain.keys()) == set(arch.state_shapes()):  # written by morph: the spec's own keys
        return plain
    plain.close()
    return HFFolder(p, BY_NAMING[naming].keymap, arch.state_shapes())


def _check_folder(folder: Path) -> None:
    """Weights exist as safetensors, and an index names only plain files in the folder."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"not a valid index ({e!r})", Mark(str(index))) from None
        bad = sorted(
            str(n)
            for n in names
            if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..")
        )
        if bad:
            raise CheckpointError(
                f"the index names shards outside the folder: {', '.join(bad[:5])}; a shard"
                " must be a plain file name beside the index",
                Mark(str(index)),
            )
        return
    if (folder / "model.safetensors").is_file():
        return
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    extra = (
        f" (it has {', '.join(pickled[:3])}: pickle files, which morph never loads; re-save"
        " with save_pretrained, which writes safetensors)"
        if pickled
        else ""
    )
    raise CheckpointError(
        f"the folder has no weights: neither model.safetensors nor {INDEX_NAME}{extra}",
        Mark(str(folder)),
    )


class HFFolder(CheckpointReader):
    """A Hugging Face folder read in a spec's keys; see the module docstring."""

    def __init__(
        self, folder: Path, keymap: KeyMap, expected: Mapping[str, tuple[int, ...]]
    ) -> None:
        """`folder`: the HF folder, or its model.safetensors or index file."""
        if folder.is_dir():
            _check_folder(folder)
        super().__init__(folder)
        self.folder = folder
        self.keymap = keymap
        self._shapes = dict(expected)
        self._hf: dict[str, str] = {}  # the spec's group name -> the folder's actual key
        self._group: dict[str, tuple[Group, int]] = {}
        self._map(keymap, expected)

    def _actual(self, hf_key: str, have: set[str]) -> str | None:
        if hf_key in have:
            return hf_key
        prefix = self.keymap.optional_prefix
        if prefix and hf_key.startswith(prefix) and hf_key[len(prefix) :] in have:
            return hf_key[len(prefix) :]
        return None

    def _map(self, keymap: KeyMap, expected: Mapping[str, tuple[int, ...]]) -> None:
        have = set(super().keys())
        mark = Mark(str(self.folder))
        groups, unnamed = keymap.groups(sorted(expected))
        problems = [
            Problem(f"the spec's key '{k}' has no rule in {keymap.name}'s key map", mark)
            for k in unnamed
        ]
        used: set[str] = set()
        for g in groups:
            actual = self._actual(g.hf, have)
            if actual is None:
                problems.append(
                    Problem(
                        f"missing tensor '{g.hf}' (the spec's {', '.join(g.morph)})"
                        f"{closest(g.hf, have - used)}",
                        mark,
                    )
                )
                continue
            used.add(actual)
            want = g.hf_shape([expected[k] for k in g.morph])
            got = super().shape(actual)
            if got != want:
                problems.append(
                    Problem(
                        f"tensor '{actual}' has shape {list(got)} but the spec needs {list(want)}"
                        f" (for {', '.join(g.morph)})",
                        mark,
                    )
                )
                continue
            self._hf[g.hf] = actual
            for j, k in enumerate(g.morph):
                self._group[k] = (g, j)
        for key in sorted(have - used):
            if not keymap.ignored(key) and not keymap.ignored(keymap.optional_prefix + key):
                problems.append(
                    Problem(f"unexpected tensor '{key}' (shape {list(super().shape(key))})", mark)
                )
        if problems:
            raise CheckpointError(problems)

    def keys(self) -> list[str]:
        return sorted(self._group)

    def __contains__(self, key: object) -> bool:
        return key in self._group

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._group)

    def _where(self, key: str) -> tuple[Group, int]:
        try:
            return self._group[key]
        except KeyError:
            raise MorphError(
                f"no tensor '{key}' in {self.folder}{closest(key, self._group)}",
                Mark(str(self.folder)),
            ) from None

    def shape(self, key: str) -> tuple[int, ...]:
        self._where(key)
        return self._shapes[key]

    def dtype(self, key: str) -> torch.dtype:
        g, _ = self._where(key)
        return super().dtype(self._hf[g.hf])

    def nbytes(self, key: str) -> int:
        return math.prod(self.shape(key)) * self.dtype(key).itemsize

    def span(self, key: str) -> Span | None:
        """Where `key`'s bytes are, when the folder stores it as is (a rename) or as rows
        of a fused tensor (a concatenation); None when it is transposed."""
        g, j = self._where(key)
        whole = super().span(self._hf[g.hf])
        if whole is None or g.ops not in ((), ("concat",)):
            return None
        shapes = [self._shapes[k] for k in g.morph]
        row = whole.nbytes // whole.shape[0] if whole.shape and whole.shape[0] else 0
        before = sum(s[0] for s in shapes[:j]) * row if g.ops else 0
        shape = shapes[j]
        nbytes = math.prod(shape) * whole.dtype.itemsize
        return Span(whole.file, whole.offset + before, nbytes, whole.dtype, shape)

    def get(self, key: str, copy: bool = True) -> torch.Tensor:
        """The spec's tensor `key`: a fresh contiguous tensor, or with `copy=False` (for a
        reader that only reads) the mapped one where no regrouping moved it (a rename)."""
        g, j = self._where(key)
        whole = super().get(self._hf[g.hf], copy=False)
        part = g.from_hf(whole, [self._shapes[k] for k in g.morph])[j]
        if not copy and part.is_contiguous():
            return part
        shared = part.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()
        return part.clone() if shared else part
