"""Does growing mid-training save compute? A measured answer on scikit-learn's digits.

The student (examples/specs/digits_resnet_wide.yaml: twice as wide and twice as deep as the
teacher) is trained from scratch for `--epochs` epochs. The teacher (digits_resnet.yaml) is
trained for `--grow-at` epochs, grown into the student with `morphspec.grow` (Adam's state
carried over, the learning-rate schedule continued where it was) and trained to the same
last epoch, once per family. Every run sees the same batches in the same order, the same
optimizer and the same schedule; only the network before the growth differs.

Training FLOPs are 3 x the arch's forward FLOPs per sample x samples seen (backward ~ 2x
forward); evaluation is not counted. The digits are made harder than the raw set (upsampled
to 16x16 through a random rotation, scale and shift, plus pixel noise, fixed once per image)
so that the student does not saturate near 99%.

    python examples/grow_and_train.py               # 3 seeds, ~8 minutes on 2 CPU cores
    python examples/grow_and_train.py --quick       # a smoke run, under a minute

Needs scikit-learn (the data, no download) and, for the plot, matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import morphspec

SPECS = Path(__file__).resolve().parent / "specs"
TEACHER = SPECS / "digits_resnet.yaml"
STUDENT = SPECS / "digits_resnet_wide.yaml"
FAMILIES = ("r2r", "net2net", "netmorph", "randpad")
EXACT = ("r2r", "net2net", "netmorph")


# -- data ------------------------------------------------------------------------------------


@dataclass
class Digits:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _distort(images: Tensor, gen: torch.Generator, size: int, noise: float) -> Tensor:
    """Each 8x8 image resampled once to size x size through a random rotation (±20°),
    scale (0.9-1.1) and shift (±7.5% of the side), then Gaussian pixel noise."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(20)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.15
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out + noise * torch.randn(out.shape, generator=gen)
    return (out - 0.25) / 0.5


def load_digits(size: int = 16, noise: float = 0.25, copies: int = 1) -> Digits:
    """Fixed, seeded split (75/25, stratified) and fixed distortions; `copies` distorted
    versions of each training image."""
    try:
        from sklearn.datasets import load_digits as sk_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("grow_and_train needs scikit-learn for the digits: pip install scikit-learn")
    data = sk_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        list(range(len(y))), test_size=0.25, random_state=0, stratify=data.target
    )
    gen = torch.Generator().manual_seed(0)
    x_tr = x[idx_train].repeat(copies, 1, 1, 1)
    y_tr = y[idx_train].repeat(copies)
    return Digits(
        _distort(x_tr, gen, size, noise), y_tr, _distort(x[idx_test], gen, size, noise), y[idx_test]
    )


# -- training --------------------------------------------------------------------------------


@dataclass
class Config:
    epochs: int = 20
    grow_at: int = 8
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 1
    noise: float = 1e-2  # Net2Net's symmetry-breaking noise
    train_limit: int | None = None
    budget: str = "flops"  # grown runs: "flops" (the scratch run's) or "epochs" (its count)


@dataclass
class Curve:
    """Test accuracy (%) after each epoch against cumulative training FLOPs."""

    flops: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def lr_at(step: int, total: int, cfg: Config, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay to zero over the whole run: one schedule for every
    run, continued across the growth."""
    warm = cfg.warmup * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + 512]).argmax(1) == y[i : i + 512]).sum())
        for i in range(0, len(y), 512)
    )
    model.train(was)
    return 100.0 * correct / len(y)


class Trainer:
    """Runs epochs [start, stop) of the shared schedule on one model, appending to a curve."""

    def __init__(self, data: Digits, cfg: Config, seed: int, epochs: int) -> None:
        self.data, self.cfg, self.seed = data, cfg, seed
        self.steps_per_epoch = math.ceil(len(data.y_train) / cfg.batch)
        self.total = epochs * self.steps_per_epoch

    def run(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        start: int,
        stop: int,
        flops_per_sample: float,
        curve: Curve,
    ) -> None:
        d, cfg = self.data, self.cfg
        n = len(d.y_train)
        model.train()
        for epoch in range(start, stop):
            gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)  # same for every run
            order = torch.randperm(n, generator=gen)
            for b in range(self.steps_per_epoch):
                step = epoch * self.steps_per_epoch + b
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, self.total, cfg, self.steps_per_epoch)
                idx = order[b * cfg.batch : (b + 1) * cfg.batch]
                loss = F.cross_entropy(model(d.x_train[idx]), d.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            last = curve.flops[-1] if curve.flops else 0.0
            curve.flops.append(last + 3 * flops_per_sample * n)
            curve.acc.append(accuracy(model, d.x_test, d.y_test))


def new_model(arch: morphspec.Arch, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return morphspec.build(arch).train()


def adam(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def grown_epochs(cfg: Config, t_flops: float, s_flops: float) -> int:
    """The grown runs' last epoch. Budget "epochs": the scratch run's. Budget "flops": as
    many student epochs after the growth as keep the run within the scratch run's FLOPs,
    G·t + k·s ≤ E·s, so k = floor(E − G·t/s)."""
    if cfg.budget == "epochs":
        return cfg.epochs
    return cfg.grow_at + math.floor(cfg.epochs - cfg.grow_at * t_flops / s_flops + 1e-9)


def run_seed(
    data: Digits, cfg: Config, seed: int, t_arch: morphspec.Arch, s_arch: morphspec.Arch
) -> dict[str, Curve]:
    """The scratch student, then the teacher up to the growth and each family after it."""
    tr = Trainer(data, cfg, seed, cfg.epochs)
    t_flops, s_flops = float(t_arch.flops()), float(s_arch.flops())
    end = grown_epochs(cfg, t_flops, s_flops)
    tr_grown = Trainer(data, cfg, seed, end)  # its schedule spans teacher and student
    curves = {"scratch": Curve()}
    student = new_model(s_arch, seed)
    tr.run(student, adam(student, cfg), 0, cfg.epochs, s_flops, curves["scratch"])
    print(f"  seed {seed} scratch: {curves['scratch'].acc[-1]:.2f}%", flush=True)

    teacher = new_model(t_arch, seed)
    t_opt = adam(teacher, cfg)
    t_curve = Curve()
    tr_grown.run(teacher, t_opt, 0, cfg.grow_at, t_flops, t_curve)
    for family in FAMILIES:
        # copies, so that no family's training can touch the teacher or its optimizer state
        t_copy, o_copy = copy.deepcopy((teacher, t_opt))
        grown = morphspec.grow(
            t_copy,
            TEACHER,
            STUDENT,
            optimizer=o_copy,
            family=family,
            seed=seed,
            noise=cfg.noise if family == "net2net" else 0.0,
            verify=True,
        )
        assert grown.optimizer is not None
        curve = copy.deepcopy(t_curve)
        curve.info = {
            "rel_err": grown.rel_err,
            "teacher_acc": accuracy(teacher, data.x_test, data.y_test),
            "grown_acc": accuracy(grown.student, data.x_test, data.y_test),
        }
        tr_grown.run(grown.student, grown.optimizer, cfg.grow_at, end, s_flops, curve)
        curves[family] = curve
        print(f"  seed {seed} {family}: {curve.acc[-1]:.2f}%", flush=True)
    return curves


# -- summary ---------------------------------------------------------------------------------


def first_reach(flops: list[float], acc: list[float], target: float) -> float | None:
    return next((f for f, a in zip(flops, acc, strict=True) if a >= target - 1e-9), None)


def summarise(runs: list[dict[str, Curve]]) -> dict[str, Any]:
    """Final accuracy mean ± std; FLOPs for the mean-over-seeds curve to reach the scratch
    runs' mean final accuracy (every seed runs the same schedule, so the FLOPs grids agree)."""
    target = statistics.fmean(r["scratch"].acc[-1] for r in runs)
    scratch_flops = runs[0]["scratch"].flops[-1]
    rows: dict[str, Any] = {}
    for name in ("scratch", *FAMILIES):
        curves = [r[name] for r in runs]
        finals = [c.acc[-1] for c in curves]
        flops = curves[0].flops
        mean_curve = [statistics.fmean(c.acc[i] for c in curves) for i in range(len(flops))]
        reach = first_reach(flops, mean_curve, target)
        rows[name] = {
            "final_acc": finals,
            "final_mean": statistics.fmean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "train_flops": flops[-1],
            "flops_to_target": reach,
            "saving_to_target": None if reach is None else 1 - reach / scratch_flops,
            "seeds_reaching": sum(first_reach(c.flops, c.acc, target) is not None for c in curves),
            "curve_flops": flops,
            "curve_acc_mean": mean_curve,
            "at_growth": [c.info for c in curves] if name != "scratch" else None,
        }
    return {"target_acc": target, "runs": rows}


def table(summary: dict[str, Any], seeds: int) -> str:
    head = (
        "| run | final test acc (%) | train FLOPs | FLOPs to reach scratch's"
        f" {summary['target_acc']:.2f}% | seeds reaching | rel_err at growth |"
    )
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for name, r in summary["runs"].items():
        if r["flops_to_target"] is None:
            reach = "not reached"
        else:
            reach = f"{r['flops_to_target']:.3g} ({100 * r['saving_to_target']:+.0f}% saved)"
        err = "-" if r["at_growth"] is None else f"{max(i['rel_err'] for i in r['at_growth']):.1e}"
        lines.append(
            f"| {name} | {r['final_mean']:.2f} ± {r['final_std']:.2f} | {r['train_flops']:.3g}"
            f" | {reach} | {r['seeds_reaching']}/{seeds} | {err} |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (the optional extra: pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, r in summary["runs"].items():
        style = {"linewidth": 2.2, "color": "black"} if name == "scratch" else {"linewidth": 1.3}
        ax.plot(r["curve_flops"], r["curve_acc_mean"], label=name, **style)
    ax.axhline(summary["target_acc"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("test accuracy (%), mean of seeds")
    lo = min(min(r["curve_acc_mean"]) for r in summary["runs"].values())
    ax.set_ylim(max(lo, summary["target_acc"] - 15), 100)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# -- entry point -----------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 3 epochs, 400 images")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run")
    p.add_argument("--grow-at", type=int, default=None, help="epoch at which the teacher grows")
    p.add_argument("--lr", type=float, default=Config.lr, help="Adam's peak learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small layers: 1)")
    p.add_argument(
        "--budget",
        choices=("flops", "epochs"),
        default="flops",
        help="grown runs train within the scratch run's FLOPs (default) or for its epochs",
    )
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    p.add_argument("--out", type=Path, default=Path("grow_and_train_out"), help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    cfg = Config(lr=args.lr, budget=args.budget)
    seeds = args.seeds
    if args.quick:
        cfg.epochs, cfg.grow_at, cfg.train_limit, seeds = 3, 1, 400, 1
    cfg.epochs = args.epochs or cfg.epochs
    cfg.grow_at = args.grow_at if args.grow_at is not None else cfg.grow_at
    if not 0 < cfg.grow_at < cfg.epochs:
        sys.exit(f"--grow-at must lie between 1 and --epochs - 1 ({cfg.epochs - 1})")
    data = load_digits()
    if cfg.train_limit:
        keep = slice(0, cfg.train_limit)
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    t_arch = morphspec.resolve(morphspec.load_spec(TEACHER))
    s_arch = morphspec.resolve(morphspec.load_spec(STUDENT))
    started = time.perf_counter()
    args_of = [(data, cfg, seed, t_arch, s_arch) for seed in range(seeds)]
    if args.jobs > 1:  # seeds in parallel processes; the results do not depend on it
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads,
                                 initargs=(args.threads,)) as pool:  # fmt: skip
            runs = list(pool.map(run_seed, *zip(*args_of, strict=True)))
    else:
        runs = [run_seed(*a) for a in args_of]
    print(f"{seeds} seed(s) done ({time.perf_counter() - started:.0f} s)", flush=True)
    summary = summarise(runs)
    summary["config"] = {**vars(cfg), "seeds": seeds, "train": len(data.y_train),
                         "test": len(data.y_test)}  # fmt: skip
    summary["seconds"] = time.perf_counter() - started
    print(table(summary, seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grow_and_train.json").write_text(json.dumps(summary, indent=1), "utf-8")
    plot(summary, args.out / "grow_and_train.png")
    print(f"wrote {args.out}/grow_and_train.json ({summary['seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
