"""Key converters as data: how a family's checkpoint names and lays out a spec's tensors.

A `Rule` pairs one or more morphspec keys with one Hugging Face key and a list of `ops`
applied on the way to Hugging Face; the way back applies their inverses in reverse order:

- `concat`: the morphspec tensors are stacked along dim 0 (GPT-2's fused `c_attn` holds
  q, k and v rows in that order); its inverse splits by the morphspec shapes, which the
  spec fixes, so an uneven split (grouped-query q, k, v) needs no extra data.
- `transpose`: a 2-D tensor's two dims swap (GPT-2's Conv1D stores `[in, out]`, a linear
  `[out, in]`); it is its own inverse, and a no-op on 1-D tensors (biases).

Patterns hold `{i}` (a layer index), `{j}` (an expert's index) and `{w}` (`weight` or
`bias`); both sides of a rule use the same placeholders, so a key maps by matching one
side and filling in the other.
`ignore` lists Hugging Face keys that carry no state of the spec (GPT-2's causal-mask
buffers, a tied head stored twice) and are skipped when a folder is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["Group", "KeyMap", "Op", "Rule"]

Op = Literal["concat", "transpose"]
_SLOTS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "w": r"(?P<w>weight|bias)"}


def _regex(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(_SLOTS[m.group(1)])
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Rule:
    morph: tuple[str, ...]
    hf: str
    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        if len(self.morph) > 1 and self.ops[:1] != ("concat",):
            raise ValueError(f"rule for {self.hf}: several morphspec keys need 'concat' first")


@dataclass(frozen=True)
class Group:
    """One Hugging Face tensor and the morphspec tensors it is made of."""

    hf: str
    morph: tuple[str, ...]
    ops: tuple[Op, ...]

    def hf_shape(self, shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        """The Hugging Face shape that the morphspec `shapes` give."""
        shape = shapes[0]
        for op in self.ops:
            if op == "concat":
                if any(s[1:] != shape[1:] for s in shapes):
                    raise ValueError(f"cannot concatenate shapes {list(shapes)} into '{self.hf}'")
                shape = (sum(s[0] for s in shapes), *shape[1:])
            elif len(shape) == 2:
                shape = (shape[1], shape[0])
        return shape

    def to_hf(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        out = tensors[0]
        for op in self.ops:
            if op == "concat":
                out = torch.cat(list(tensors), dim=0)
            elif out.dim() == 2:
                out = out.T
        return out.contiguous()

    def from_hf(
        self, tensor: torch.Tensor, shapes: Sequence[tuple[int, ...]]
    ) -> list[torch.Tensor]:
        parts = [tensor]
        for op in reversed(self.ops):
            if op == "concat":
                parts = list(parts[0].split([s[0] for s in shapes], dim=0))
            else:
                parts = [p.T if p.dim() == 2 else p for p in parts]
        return [p.contiguous() for p in parts]


@dataclass(frozen=True)
class KeyMap:
    """A family's rules; `groups` maps a spec's keys to the folder's, refusing leftovers."""

    name: str
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    optional_prefix: str = ""  # GPT2Model checkpoints omit GPT2LMHeadModel's 'transformer.'

    @cached_property
    def _matchers(self) -> list[tuple[re.Pattern[str], int, Rule]]:
        return [(_regex(p), j, r) for r in self.rules for j, p in enumerate(r.morph)]

    @cached_property
    def _ignored(self) -> list[re.Pattern[str]]:
        return [_regex(p) for p in self.ignore]

    def group_of(self, key: str) -> Group | None:
        """The group a morphspec key belongs to, or None when no rule names it."""
        for regex, _, rule in self._matchers:
            m = regex.fullmatch(key)
            if m:
                b = m.groupdict()
                return Group(
                    rule.hf.format(**b), tuple(p.format(**b) for p in rule.morph), rule.ops
                )
        return None

    def groups(self, keys: Sequence[str]) -> tuple[list[Group], list[str]]:
        """The groups covering `keys` (each once, in key order) and the keys no rule names."""
        seen: dict[str, Group] = {}
        unnamed: list[str] = []
        for key in keys:
            g = self.group_of(key)
            if g is None:
                unnamed.append(key)
            elif g.hf not in seen:
                seen[g.hf] = g
        return list(seen.values()), unnamed

    def ignored(self, hf_key: str) -> bool:
        return any(r.fullmatch(hf_key) for r in self._ignored)

    def to_hf(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A morphspec state_dict under Hugging Face names (every key must be named by a rule)."""
        groups, unnamed = self.groups(sorted(state))
        if unnamed:
            raise KeyError(f"{self.name} names no rule for {', '.join(unnamed[:5])}")
        return {g.hf: g.to_hf([state[k] for k in g.morph]) for g in groups}

    def from_hf(
        self, tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        """The morphspec state_dict of `shapes`' keys from tensors under Hugging Face names."""
        groups, unnamed = self.groups(sorted(shapes))
        if unnamed:
            raise KeyError(f"{self.name} names no rule for {', '.join(unnamed[:5])}")
        out: dict[str, torch.Tensor] = {}
        for g in groups:
            parts = g.from_hf(tensors[g.hf], [shapes[k] for k in g.morph])
            out.update(zip(g.morph, parts, strict=True))
        return out
