"""A short demo: a language model grown mid-training, measured on real text.

Its learning rate is not tuned, its student sees ~0.6 tokens per parameter and its growth
step was chosen on a reported seed, so its saving against the scratch student says nothing
about whether growth is worth doing: the teacher trained alone for the whole budget does
better. `benchmarks/payoff.py` measures that question against the compute frontier, with
tuning on seeds it never reports (docs/results.md).

A byte-level GPT (vocab 256, no tokenizer, 32-byte context) is trained on the Python
standard library's own `.py` files (found with `sysconfig`, so on every install; files go to
validation when crc32 of their relative path is 0 mod 10, a fixed split by file name; at most
`--train-bytes` of training text). The student (examples/specs/gpt_mini_grown.yaml: 4 layers,
d_model 128, 8 heads) is trained from scratch with a budget of `--steps` student steps. The
teacher (gpt_mini.yaml: 2 layers, d_model 64, 4 heads) is trained `--grow-at` steps, grown
into the student with `morphspec.grow` (Adam's state carried), and trained on until it has
spent the scratch run's FLOPs, once per exact family. Every run of a seed sees the same
batches in the same order; the learning rate is a function of the FLOPs spent (warmup, then
cosine to 10%), so both kinds of run follow one schedule.

Training FLOPs: 3 x the arch's forward FLOPs (`Arch.flops()`) per token x tokens seen;
evaluation is not counted. Reported: validation loss (nats/byte) against FLOPs, and the FLOPs
each run needed to reach the scratch run's final validation loss.

    python examples/grow_gpt.py               # 3 seeds, ~9.5 minutes on 2 CPU cores (--jobs 2)
    python examples/grow_gpt.py --quick       # a smoke run, under a minute

Matplotlib (optional) draws the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import sysconfig
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import morphspec

SPECS = Path(__file__).resolve().parent / "specs"
TEACHER = SPECS / "gpt_mini.yaml"
STUDENT = SPECS / "gpt_mini_grown.yaml"
EXACT = ("r2r", "net2net", "netmorph")
CTX = 32  # the specs' input shape: Arch.flops() counts this many tokens


@dataclass(frozen=True)
class Config:
    steps: int = 500  # the scratch run's steps; its FLOPs are every run's budget
    grow_at: int = 600  # teacher steps before growth (~17% of the budget)
    batch: int = 32
    lr: float = 1e-3
    warmup: float = 0.05  # of the budget
    eval_every: int = 25
    eval_batches: int = 16
    train_bytes: int = 2_000_000
    val_bytes: int = 200_000


# -- data ------------------------------------------------------------------------------------


def load_text(cfg: Config) -> tuple[Tensor, Tensor]:
    """The stdlib's .py files as bytes, split by file name; each side capped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    train, val = bytearray(), bytearray()
    for path in files:
        name = path.relative_to(root).as_posix()
        side, cap = (val, cfg.val_bytes) if zlib.crc32(name.encode()) % 10 == 0 else (
            train, cfg.train_bytes)  # fmt: skip
        if len(side) < cap:
            try:
                side.extend(path.read_bytes()[: cap - len(side)])
            except OSError:
                continue
        if len(train) >= cfg.train_bytes and len(val) >= cfg.val_bytes:
            break
    as_tensor = lambda b: torch.tensor(list(b), dtype=torch.long)  # noqa: E731
    return as_tensor(train), as_tensor(val)


def windows(data: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
    idx = starts[:, None] + torch.arange(CTX + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


# -- training --------------------------------------------------------------------------------


def lr_at(spent: float, budget: float, cfg: Config) -> float:
    f = spent / budget
    if f < cfg.warmup:
        return cfg.lr * (f / cfg.warmup + 1e-3)
    t = min(1.0, (f - cfg.warmup) / (1 - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def loss_of(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def val_loss(model: nn.Module, val: tuple[Tensor, Tensor]) -> float:
    was = model.training
    model.eval()
    x, y = val
    out = statistics.fmean(
        float(loss_of(model, x[i : i + 64], y[i : i + 64])) for i in range(0, len(x), 64)
    )
    model.train(was)
    return out


@dataclass
class Curve:
    flops: list[float]
    loss: list[float]


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: range,
    batches: Tensor,
    data: Tensor,
    val: tuple[Tensor, Tensor],
    flops_per_step: float,
    budget: float,
    cfg: Config,
    curve: Curve,
    stop_at_budget: bool = True,
) -> None:
    model.train()
    for step in steps:
        spent = curve.flops[-1]
        if stop_at_budget and spent + flops_per_step > budget * (1 + 1e-9):
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(spent, budget, cfg)
        x, y = windows(data, batches[step])
        loss = loss_of(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.flops.append(spent + flops_per_step)
        curve.loss.append(val_loss(model, val) if (step + 1) % cfg.eval_every == 0 else math.nan)


def run(task: tuple[int, str, Config]) -> dict[str, Any]:
    """One run: the scratch student, or a teacher grown by `kind` (an exact family)."""
    seed, kind, cfg = task
    torch.set_num_threads(1)
    start = time.perf_counter()
    data, val_data = load_text(cfg)
    t_arch = morphspec.resolve(morphspec.load_spec(TEACHER))
    s_arch = morphspec.resolve(morphspec.load_spec(STUDENT))
    per_token = {"t": 3 * t_arch.flops() / CTX, "s": 3 * s_arch.flops() / CTX}
    tokens = cfg.batch * CTX
    budget = cfg.steps * tokens * per_token["s"]
    gen = torch.Generator().manual_seed(seed)
    n_batches = cfg.grow_at + cfg.steps * 2  # more than any run uses
    batches = torch.randint(0, len(data) - CTX - 1, (n_batches, cfg.batch), generator=gen)
    vgen = torch.Generator().manual_seed(12345)  # one validation set for every run
    val = windows(
        val_data,
        torch.randint(0, len(val_data) - CTX - 1, (cfg.eval_batches * 64,), generator=vgen),
    )
    curve = Curve([0.0], [math.nan])
    torch.manual_seed(seed)
    info: dict[str, Any] = {"seed": seed, "kind": kind}
    if kind == "scratch":
        model = morphspec.build(s_arch)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        curve.loss[0] = val_loss(model, val)
        train(
            model,
            opt,
            range(cfg.steps),
            batches,
            data,
            val,
            tokens * per_token["s"],
            budget,
            cfg,
            curve,
        )
    else:
        teacher = morphspec.build(t_arch)
        opt = torch.optim.Adam(teacher.parameters(), lr=cfg.lr)
        curve.loss[0] = val_loss(teacher, val)
        train(
            teacher,
            opt,
            range(cfg.grow_at),
            batches,
            data,
            val,
            tokens * per_token["t"],
            budget,
            cfg,
            curve,
        )
        before = val_loss(teacher, val)
        grown = morphspec.grow(teacher, t_arch, s_arch, optimizer=opt, family=kind, seed=seed)
        after = val_loss(grown.student, val)
        x, _ = val
        with torch.no_grad():
            teacher.eval()
            grown.student.eval()
            a, b = teacher(x[:64]), grown.student(x[:64])
        info["growth"] = {
            "step": cfg.grow_at,
            "flops": curve.flops[-1],
            "val_before": before,
            "val_after": after,
            "max_abs_logit_diff": float((a - b).abs().max()),
        }
        assert grown.optimizer is not None
        rest = range(cfg.grow_at, n_batches)
        train(
            grown.student,
            grown.optimizer,
            rest,
            batches,
            data,
            val,
            tokens * per_token["s"],
            budget,
            cfg,
            curve,
        )
    if math.isnan(curve.loss[-1]):
        curve.loss[-1] = val_loss(model if kind == "scratch" else grown.student, val)
    keep = [i for i, v in enumerate(curve.loss) if not math.isnan(v)]
    info["curve"] = {"flops": [curve.flops[i] for i in keep], "loss": [curve.loss[i] for i in keep]}
    info["seconds"] = time.perf_counter() - start
    return info


# -- reporting -------------------------------------------------------------------------------


def first_reach(flops: list[float], loss: list[float], target: float) -> float | None:
    return next((f for f, v in zip(flops, loss, strict=True) if v <= target + 1e-12), None)


def summarise(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    by = {(r["seed"], r["kind"]): r for r in runs}
    out: dict[str, Any] = {"kinds": {}}
    kinds = ["scratch", *sorted({r["kind"] for r in runs} - {"scratch"}, key=EXACT.index)]
    for kind in kinds:
        rows = []
        for seed in seeds:
            scratch, mine = by[(seed, "scratch")]["curve"], by[(seed, kind)]["curve"]
            target, budget = scratch["loss"][-1], scratch["flops"][-1]
            reach = first_reach(mine["flops"], mine["loss"], target)
            rows.append({
                "seed": seed,
                "final_loss": mine["loss"][-1],
                "flops_to_target": reach,
                "saving": None if reach is None else 1 - reach / budget,
            })  # fmt: skip
        savings = [r["saving"] for r in rows if r["saving"] is not None]
        growth = [by[(s, kind)].get("growth") for s in seeds]
        out["kinds"][kind] = {
            "seeds": rows,
            "final_mean": statistics.fmean(r["final_loss"] for r in rows),
            "final_std": statistics.pstdev(r["final_loss"] for r in rows),
            "seeds_reaching": len(savings),
            "saving_mean": statistics.fmean(savings) if len(savings) == len(rows) else None,
            "max_abs_logit_diff_at_growth": max(
                (g["max_abs_logit_diff"] for g in growth if g), default=None
            ),
            "curves": [by[(s, kind)]["curve"] for s in seeds],
        }
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| run | final val loss (nats/byte) | FLOPs to scratch's final loss (per seed) | saved |",
        "| --- | --- | --- | --- |",
    ]
    for kind, k in summary["kinds"].items():
        reach = ", ".join(
            "not reached" if r["flops_to_target"] is None else f"{r['flops_to_target']:.3g}"
            for r in k["seeds"]
        )
        saved = "—" if k["saving_mean"] is None else f"{100 * k['saving_mean']:.0f}%"
        lines.append(
            f"| {kind} | {k['final_mean']:.4f} ± {k['final_std']:.4f} | {reach} | {saved} |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, k in summary["kinds"].items():
        for i, c in enumerate(k["curves"]):
            ax.plot(c["flops"], c["loss"], color=f"C{list(summary['kinds']).index(kind)}",
                    alpha=0.8, lw=1, label=kind if i == 0 else None)  # fmt: skip
    ax.set_xlabel("training FLOPs (3 × forward)")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("byte-level GPT on the stdlib's .py files: 2×64 grown into 4×128")
    ax.set_ylim(top=min(3.5, ax.get_ylim()[1]))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=Config.steps)
    p.add_argument("--grow-at", type=int, default=Config.grow_at)
    p.add_argument("--families", default=",".join(EXACT))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    p.add_argument("--quick", action="store_true", help="1 seed, 40 steps: a smoke run")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, default=Path("grow_gpt.png"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    torch.set_num_threads(1)
    if args.quick:
        cfg = Config(
            steps=40,
            grow_at=20,
            eval_every=10,
            eval_batches=2,
            train_bytes=200_000,
            val_bytes=50_000,
        )
        seeds = [0]
    else:
        cfg = Config(steps=args.steps, grow_at=args.grow_at)
        seeds = list(range(args.seeds))
    families = [f for f in args.families.split(",") if f]
    tasks = [(s, kind, cfg) for s in seeds for kind in ["scratch", *families]]
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(run, tasks))
    else:
        runs = [run(t) for t in tasks]
    summary = summarise(runs, seeds)
    summary["config"] = asdict(cfg)
    summary["seconds"] = time.perf_counter() - start
    summary["run_seconds"] = {f"{r['seed']}-{r['kind']}": round(r["seconds"], 1) for r in runs}
    summary["growth"] = {f"{r['seed']}-{r['kind']}": r["growth"] for r in runs if "growth" in r}
    print(table(summary))
    for key, g in summary["growth"].items():
        print(f"growth {key}: val loss {g['val_before']:.6f} -> {g['val_after']:.6f},"
              f" max |logit diff| {g['max_abs_logit_diff']:.2e}")  # fmt: skip
    print(f"total {summary['seconds']:.0f} s")
    if plot(summary, args.plot):
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
