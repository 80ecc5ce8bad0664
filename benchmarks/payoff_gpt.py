"""The payoff benchmark's language task: a byte-level GPT on the Python stdlib's sources.

Text: the stdlib's `.py` files (found with `sysconfig`, so on every install, no download),
split by file name (crc32 of the relative path 0 mod 10 goes to validation), the same rule
as examples/grow_gpt.py. Models: examples/specs/gpt_mini.yaml (pre-norm GPT-2 blocks, GELU
MLP, 32-byte context, vocab 256) at the sizes of `GptConfig`. The student S and the teacher
T have the same width and T has half S's blocks: `--family stack` repeats whole blocks and
has no rule for new channels, so depth-only growth is the one T -> S pair every family can
make, and every grown arm then differs only in the operator.

The budget: S sees `tokens_per_param` tokens per non-embedding parameter (every parameter
but the token and position embeddings; the untied head counts), rounded up to whole steps.
"""

from __future__ import annotations

import math
import statistics
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import morphspec
from morphspec.arch import Arch

__all__ = ["GptConfig", "GptTask", "load_text"]

SPEC = Path(__file__).resolve().parents[1] / "examples" / "specs" / "gpt_mini.yaml"
CTX = 32  # the spec's input shape: Arch.flops() counts this many tokens
EMBEDDINGS = ("transformer.wte.", "transformer.wpe.")


@dataclass(frozen=True)
class GptConfig:
    dim: int = 32
    heads: int = 4
    layers: int = 4
    teacher_layers: int = 2
    batch: int = 32
    tokens_per_param: float = 20.0
    evals: int = 32  # evaluations over the budget (on a FLOPs grid); not counted as FLOPs
    eval_windows: int = 512
    train_bytes: int = 12_000_000
    val_bytes: int = 400_000


def load_text(train_bytes: int, val_bytes: int) -> tuple[Tensor, Tensor]:
    """The stdlib's .py files as bytes, split by file name; each side capped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    train, val = bytearray(), bytearray()
    for path in files:
        name = path.relative_to(root).as_posix()
        to_val = zlib.crc32(name.encode()) % 10 == 0
        side, cap = (val, val_bytes) if to_val else (train, train_bytes)
        if len(side) < cap:
            try:
                side.extend(path.read_bytes()[: cap - len(side)])
            except OSError:
                continue
        if len(train) >= train_bytes and len(val) >= val_bytes:
            break
    return (torch.frombuffer(train, dtype=torch.uint8).long(),
            torch.frombuffer(val, dtype=torch.uint8).long())  # fmt: skip


def _windows(data: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
    chunk = data[starts[:, None] + torch.arange(CTX + 1)]
    return chunk[:, :-1], chunk[:, 1:]


def non_embedding_params(arch: Arch) -> int:
    shapes = arch.state_shapes()
    return sum(
        math.prod(s)
        for k, s in shapes.items()
        if not k.startswith(EMBEDDINGS) and not k.endswith(("running_mean", "running_var"))
    )


class GptTask:
    """T (`teacher_layers` blocks) and S (`layers` blocks) of one width, the text, the loss."""

    name = "gpt"

    def __init__(self, cfg: GptConfig):
        self.cfg = cfg
        dims = [f"dim={cfg.dim}", f"heads={cfg.heads}"]
        spec = morphspec.load_spec
        self.teacher = morphspec.resolve(spec(SPEC, [*dims, f"layers={cfg.teacher_layers}"]))
        self.student = morphspec.resolve(spec(SPEC, [*dims, f"layers={cfg.layers}"]))
        self.train, val = load_text(cfg.train_bytes, cfg.val_bytes)
        vgen = torch.Generator().manual_seed(12345)  # one validation set for every run
        starts = torch.randint(0, len(val) - CTX - 1, (cfg.eval_windows,), generator=vgen)
        self.val = _windows(val, starts)
        self.params = non_embedding_params(self.student)
        tokens_per_step = cfg.batch * CTX
        self.steps = math.ceil(cfg.tokens_per_param * self.params / tokens_per_step)
        self.tokens_per_param = self.steps * tokens_per_step / self.params
        self.budget = self.steps * self.flops_per_step(self.student)
        self.evals = cfg.evals

    def flops_per_step(self, arch: Arch) -> float:
        return 3.0 * arch.flops() * self.cfg.batch

    def sampler(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def batch(self, sampler: Any) -> tuple[Tensor, Tensor]:
        starts = torch.randint(0, len(self.train) - CTX - 1, (self.cfg.batch,), generator=sampler)
        return _windows(self.train, starts)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        was = model.training
        model.eval()
        x, y = self.val
        out = statistics.fmean(
            float(self.loss(model, x[i : i + 128], y[i : i + 128])) for i in range(0, len(x), 128)
        )
        model.train(was)
        return out

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "task": "byte-level GPT on the stdlib's .py files (nats/byte)",
            "teacher": f"{c.teacher_layers} blocks x d{c.dim}, {c.heads} heads",
            "student": f"{c.layers} blocks x d{c.dim}, {c.heads} heads",
            "student_non_embedding_params": self.params,
            "teacher_non_embedding_params": non_embedding_params(self.teacher),
            "student_steps": self.steps,
            "batch_tokens": c.batch * CTX,
            "train_bytes": len(self.train),
        }
