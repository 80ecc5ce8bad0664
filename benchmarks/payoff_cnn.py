"""The payoff benchmark's image task: a residual CNN on shapes drawn in code.

Digits' 1.8k images put every arm in an overfitting regime, where the frontier measures
regularisation rather than compute. Here every training batch is new: ten shape classes
(disk, ring, square, square outline, plus, bar, triangle, two dots, half disk, L), each
drawn at a random rotation (full turn), scale, position, contrast and background, with soft
edges and Gaussian pixel noise, on a 16 x 16 grey image. Validation: 1,024 images from a
fixed generator of their own. Vectorised in torch, so drawing costs little beside training.

Models: benchmarks/specs/payoff_cnn.yaml, S with `blocks` basic blocks per stage, T with
`teacher_blocks`, one width (depth-only growth, as for the GPT, so that stacking applies).
Budget: `steps` steps of S at `batch` images; `tokens_per_param` in the JSON is then images
seen per parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import morphspec
from morphspec.arch import Arch

__all__ = ["CnnConfig", "CnnTask", "draw_shapes"]

SPEC = Path(__file__).resolve().parent / "specs" / "payoff_cnn.yaml"
SIZE = 16


@dataclass(frozen=True)
class CnnConfig:
    width: int = 16
    blocks: int = 2
    teacher_blocks: int = 1
    batch: int = 64
    steps: int = 600
    evals: int = 24
    val_images: int = 1024
    noise: float = 0.25

    @classmethod
    def quick(cls) -> CnnConfig:
        return cls(width=4, steps=24, batch=16, evals=4, val_images=128)


def _distances(u: Tensor, v: Tensor) -> Tensor:
    """Signed distance-like values (> 0 inside) of the ten shapes, [10, n, H, W]."""
    r = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    m = torch.maximum(au, av)
    mn = torch.minimum
    return torch.stack([
        1 - r,                                                   # disk
        0.22 - (r - 0.75).abs(),                                 # ring
        0.8 - m,                                                 # square
        0.2 - (m - 0.7).abs(),                                   # square outline
        mn(0.25 - mn(au, av), 1 - m),                            # plus
        mn(0.25 - av, 1 - au),                                   # bar
        mn(v + 0.6, (1 - v) * 0.5625 - au),                      # triangle
        0.4 - mn(torch.hypot(u - 0.55, v), torch.hypot(u + 0.55, v)),  # two dots
        mn(1 - r, v),                                            # half disk
        torch.maximum(mn(0.25 - (u + 0.45).abs(), 0.8 - av),
                      mn(0.25 - (v + 0.55).abs(), 0.7 - au)),    # L
    ])  # fmt: skip


def draw_shapes(n: int, gen: torch.Generator, noise: float) -> tuple[Tensor, Tensor]:
    """`n` images [n, 1, 16, 16] and their classes."""
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    cls = torch.randint(0, 10, (n,), generator=gen)
    angle = rand(n) * 2 * math.pi
    scale = 0.4 + 0.3 * rand(n)
    centre = (rand(n, 2) * 2 - 1) * 0.3
    contrast = 0.6 + 0.6 * rand(n)
    background = (rand(n) * 2 - 1) * 0.3
    axis = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    s = scale[:, None, None]
    u, v = (cos * dx + sin * dy) / s, (-sin * dx + cos * dy) / s
    d = _distances(u, v)[cls, torch.arange(n)]
    pixel = (2 / SIZE) / s  # one pixel in shape units: edges about a pixel wide
    img = torch.sigmoid(d / (0.5 * pixel))
    img = background[:, None, None] + contrast[:, None, None] * img
    img = img + noise * torch.randn(img.shape, generator=gen)
    return img[:, None], cls


class CnnTask:
    """T (`teacher_blocks` per stage) and S (`blocks`) of one width, the shapes, the loss."""

    name = "cnn"

    def __init__(self, cfg: CnnConfig):
        self.cfg = cfg
        width = f"width={cfg.width}"
        self.teacher = morphspec.resolve(
            morphspec.load_spec(SPEC, [width, f"blocks={cfg.teacher_blocks}"])
        )
        self.student = morphspec.resolve(morphspec.load_spec(SPEC, [width, f"blocks={cfg.blocks}"]))
        self.val = draw_shapes(cfg.val_images, torch.Generator().manual_seed(12345), cfg.noise)
        self.params = self.student.trainable_count()
        self.steps = cfg.steps
        self.tokens_per_param = cfg.steps * cfg.batch / self.params
        self.budget = cfg.steps * self.flops_per_step(self.student)
        self.evals = cfg.evals

    def flops_per_step(self, arch: Arch) -> float:
        return 3.0 * arch.flops() * self.cfg.batch

    def sampler(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def batch(self, sampler: Any) -> tuple[Tensor, Tensor]:
        return draw_shapes(self.cfg.batch, sampler, self.cfg.noise)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        was = model.training
        model.eval()
        x, y = self.val
        total = sum(
            float(F.cross_entropy(model(x[i : i + 512]), y[i : i + 512], reduction="sum"))
            for i in range(0, len(y), 512)
        )
        model.train(was)
        return total / len(y)

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "task": "residual CNN on procedurally drawn shapes, 10 classes (val cross-entropy)",
            "teacher": f"{c.teacher_blocks} block(s) per stage x width {c.width}",
            "student": f"{c.blocks} blocks per stage x width {c.width}",
            "student_params": self.params,
            "teacher_params": self.teacher.trainable_count(),
            "student_steps": c.steps,
            "batch_images": c.batch,
            "images_per_param": self.tokens_per_param,
        }
