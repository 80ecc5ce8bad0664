"""Does growth pay? Grown arms against the compute frontier, with stacking beside them.

Arms (payoff_train.ARMS): `scratch-big` (the student S from scratch), `scratch-small` (the
teacher T alone for the whole budget), `grown-r2r`, `grown-net2net`, `grown-netmorph`,
`grown-stack` (T grown into S at a growth point) and remedy arms (`grown-r2r-rewarm`,
`grown-r2r-scale3`, `grown-netmorph-copy`). Every run spends the same training FLOPs, the
budget, at which S has seen >= 20 tokens per non-embedding parameter (`--task gpt`).

Tuning, never on a reported seed: each arm's learning rate is chosen from `--lrs` by the
mean final validation loss over `--tuning-seeds` (grown arms at the middle growth point;
when the best value is at an edge of the grid, the grid grows by a factor 2 beyond it, at
most twice, so a chosen lr is never the last one tried unless the limit was hit);
then each grown arm's growth point from `--grow-fracs` (fractions of the budget spent on
the teacher) at that learning rate, the same way (at an edge, one more point halfway to 0
or to 1, at most twice). The chosen settings are then run on
`--seeds`, and only those runs are reported. Runs start as soon as what they depend on is
known, `--jobs` at a time; every finished run is appended to `--log`, and `--resume`
skips the runs found there (a stopped run picks up where it was).

The frontier is the lower of scratch-big and scratch-small at equal FLOPs; a grown arm
"ends below the frontier" when its mean final loss is below both scratch arms' mean final
losses. "FLOPs saved": 1 - (FLOPs at the first evaluation at or below scratch-big's final
loss on the same seed) / budget.

    python benchmarks/payoff.py --jobs 2 --json payoff_gpt.json    # the full run (~1 h)
    python benchmarks/payoff.py --quick                             # a smoke run
    python benchmarks/payoff.py --task cnn --jobs 2                 # the CNN frontier
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from payoff_report import growth_table, plot, summarise, table, tuning_table
from payoff_train import ARMS, run_arm, same_students

Key = tuple[str, float, float, int]  # arm, lr, grow_frac, seed
EXTEND = 2  # lr values added beyond an edge of --lrs when the best one is at that edge
LRS = {"gpt": "4e-3,8e-3,1.6e-2", "cnn": "1e-3,3e-3,1e-2"}
_TASKS: dict[tuple[str, bool], Any] = {}


def make_task(name: str, quick: bool) -> Any:
    """The task, built once per process (it loads its data)."""
    if (name, quick) not in _TASKS:
        if name == "gpt":
            from payoff_gpt import GptConfig, GptTask

            cfg = GptConfig()
            if quick:
                cfg = GptConfig(dim=16, heads=2, layers=2, teacher_layers=1, batch=16,
                                tokens_per_param=2.0, evals=4, eval_windows=64,
                                train_bytes=100_000, val_bytes=20_000)  # fmt: skip
            _TASKS[(name, quick)] = GptTask(cfg)
        else:
            from payoff_cnn import CnnConfig, CnnTask

            _TASKS[(name, quick)] = CnnTask(CnnConfig.quick() if quick else CnnConfig())
    return _TASKS[(name, quick)]


def work(task_name: str, quick: bool, key: Key) -> dict[str, Any]:
    arm, lr, frac, seed = key
    return run_arm(make_task(task_name, quick), ARMS[arm], lr, frac, seed)


class Scheduler:
    """Submits runs when their settings are known; collects results by key."""

    def __init__(self, pool: Executor | None, args: argparse.Namespace, done: dict[Key, Any],
                 alias: dict[str, str]):  # fmt: skip
        self.pool, self.args, self.done, self.alias = pool, args, done, alias
        self.pending: dict[Future[dict[str, Any]], Key] = {}
        self.wanted: dict[Key, int] = {}
        self.log = args.log.open("a") if args.log else None

    def need(self, keys: list[Key], priority: int) -> list[Key]:
        """Queue those of `keys` not done or running; return the ones not done yet."""
        running = set(self.pending.values())
        for key in keys:
            if key not in self.done and key not in running:
                self.wanted.setdefault(key, priority)
        return [k for k in keys if k not in self.done]

    def pump(self) -> None:
        """Start queued runs, lowest priority first (arm by arm), while a worker is free;
        without a pool, run one here."""
        while self.wanted and (self.pool is None or len(self.pending) < self.args.jobs):
            key = min(self.wanted, key=self.wanted.__getitem__)
            del self.wanted[key]
            if self.pool is None:
                self._finish(key, work(self.args.task, self.args.quick, key))
                return
            self.pending[self.pool.submit(work, self.args.task, self.args.quick, key)] = key

    def _finish(self, key: Key, result: dict[str, Any]) -> None:
        self.done[key] = result
        if self.log:
            self.log.write(json.dumps({"key": list(key), "result": result}) + "\n")
            self.log.flush()
        if not self.args.quiet:
            arm, lr, frac, seed = key
            loss, secs = result["final_loss"], result["seconds"]
            print(
                f"  {arm} lr={lr:g} frac={frac:g} seed={seed}: {loss:.4f} ({secs:.0f} s)",
                flush=True,
            )

    def wait_any(self) -> None:
        if not self.pending:
            return
        finished, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
        for fut in finished:
            self._finish(self.pending.pop(fut), fut.result())


def _best(done: dict[Key, Any], keys: list[list[Key]]) -> int:
    """Index of the candidate (a list of keys, one per tuning seed) with the lowest mean."""
    means = [statistics.fmean(done[k]["final_loss"] for k in ks) for ks in keys]
    return min(range(len(means)), key=means.__getitem__)


def tune_and_run(sched: Scheduler, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Drive every arm through its lr sweep, growth sweep and reported seeds; runs start
    arm by arm (in `--arms` order), so a stopped run leaves whole arms behind."""
    lrs, fracs = args.lrs, args.grow_fracs
    mid = fracs[len(fracs) // 2]
    state: dict[str, dict[str, Any]] = {a: {"stage": "lr"} for a in args.arms}
    for arm, rep in sched.alias.items():
        state[arm]["same_as"] = rep
    while True:
        for rank, (name, st) in enumerate(state.items()):
            arm = st.get("same_as", name)  # whose runs these are (identical students)
            grown = ARMS[arm].kind == "grown"
            frac = mid if grown else 0.0
            if st["stage"] == "lr":
                grid = st.setdefault("lrs", list(lrs))
                cands = [[(arm, lr, frac, s) for s in args.tuning_seeds] for lr in grid]
                if not sched.need([k for ks in cands for k in ks], rank):
                    best = _best(sched.done, cands)
                    if best in (0, len(grid) - 1) and len(grid) < len(lrs) + EXTEND:
                        # the best is at an edge: try one more value beyond it, x2 or /2
                        grid.insert(0, grid[0] / 2) if best == 0 else grid.append(grid[-1] * 2)
                        continue
                    st["lr"] = grid[best]
                    st["lr_sweep"] = _sweep(sched.done, cands, grid)
                    st["stage"] = "frac" if grown else "report"
            if st["stage"] == "frac":
                points = st.setdefault("fracs", list(fracs))
                cands = [[(arm, st["lr"], f, s) for s in args.tuning_seeds] for f in points]
                if not sched.need([k for ks in cands for k in ks], rank):
                    best = _best(sched.done, cands)
                    if best in (0, len(points) - 1) and len(points) < len(fracs) + EXTEND:
                        # at an edge: halve the distance to 0 (earlier) or to 1 (later)
                        if best == 0:
                            points.insert(0, points[0] / 2)
                        else:
                            points.append((points[-1] + 1) / 2)
                        continue
                    st["grow_frac"] = points[best]
                    st["frac_sweep"] = _sweep(sched.done, cands, points)
                    st["stage"] = "report"
            if st["stage"] == "report":
                keys = [(arm, st["lr"], st.get("grow_frac", 0.0), s) for s in args.seeds]
                if not sched.need(keys, rank):
                    st["runs"] = [sched.done[k] for k in keys]
                    st["stage"] = "done"
        if all(st["stage"] == "done" for st in state.values()):
            return state
        sched.pump()
        sched.wait_any()


def _sweep(done: dict[Key, Any], cands: list[list[Key]], values: list[float]) -> dict[str, Any]:
    return {f"{v:g}": statistics.fmean(done[k]["final_loss"] for k in ks)
            for v, ks in zip(values, cands, strict=True)}  # fmt: skip


def _meta(start: float, load_start: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], text=True,
                                capture_output=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load_end = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else ""
    return {
        "commit": commit, "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "wall_seconds": round(
            time.perf_counter() - start, 1), "loadavg_start": load_start, "loadavg_end": load_end,
    }  # fmt: skip


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["gpt", "cnn"], default="gpt")
    p.add_argument("--arms", help="comma-separated (payoff_train.ARMS); default: all for gpt,"
                   " the plain ones for cnn")  # fmt: skip
    p.add_argument("--lrs", type=_floats, help="learning rates to sweep (>= 3)")
    p.add_argument(
        "--grow-fracs",
        type=_floats,
        default=_floats("0.1,0.25,0.5"),
        help="growth points, as the fraction of the budget spent on the teacher",
    )
    ints = lambda t: [int(v) for v in t.split(",")]  # noqa: E731
    p.add_argument("--tuning-seeds", type=ints, help="default 100,101 (--quick: 100)")
    p.add_argument("--seeds", type=ints, help="reported seeds; default 0,1,2 (--quick: 0,1)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    p.add_argument("--quick", action="store_true", help="tiny models and budget: a smoke run")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="the plot (default payoff_<task>.png)")
    p.add_argument("--log", type=Path, help="append every finished run here (JSON lines)")
    p.add_argument("--resume", action="store_true", help="skip the runs already in --log")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    plain = [a for a in ARMS if not ARMS[a].remedy]
    args.arms = [a for a in args.arms.split(",") if a] if args.arms else (
        list(ARMS) if args.task == "gpt" else plain)  # fmt: skip
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not {"scratch-big", "scratch-small"} <= set(args.arms):
        p.error(f"--arms: unknown {unknown}; scratch-big and scratch-small are required")
    args.lrs = args.lrs or _floats(LRS[args.task])
    args.tuning_seeds = args.tuning_seeds or ([100] if args.quick else [100, 101])
    args.seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    if set(args.seeds) & set(args.tuning_seeds):
        p.error("--seeds and --tuning-seeds must not overlap (tuning seeds are never reported)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    start, load = time.perf_counter(), Path("/proc/loadavg").read_text().strip()
    torch.set_num_threads(1)
    done: dict[Key, Any] = {}
    if args.resume and args.log and args.log.exists():
        for line in args.log.read_text().splitlines():
            rec = json.loads(line)
            k = rec["key"]
            done[(k[0], k[1], k[2], k[3])] = rec["result"]
    task = make_task(args.task, args.quick)
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    try:
        alias = same_students(task, [ARMS[a] for a in args.arms])
        for arm, rep in alias.items():
            print(f"{arm}: the same student and optimizer state as {rep}, bit for bit; its"
                  f" runs are {rep}'s")  # fmt: skip
        state = tune_and_run(Scheduler(pool, args, done, alias), args)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    chosen = {a: {k: st[k] for k in ("lr", "grow_frac") if k in st} for a, st in state.items()}
    summary = summarise({a: st["runs"] for a, st in state.items()}, chosen, args.tuning_seeds,
                        args.seeds, task.budget, task.tokens_per_param)  # fmt: skip
    summary["tuning"] = {
        a: {k: st[k] for k in ("lr_sweep", "frac_sweep") if k in st} for a, st in state.items()
    }
    summary["same_students"] = alias
    summary["remedies"] = {a: ARMS[a].remedy for a in args.arms if ARMS[a].remedy}
    summary["config"] = {**task.describe(), "lrs": args.lrs, "grow_fracs": args.grow_fracs,
                         "runs": len(done)}  # fmt: skip
    summary["meta"] = _meta(start, load)
    print(table(summary), tuning_table(summary), growth_table(summary), sep="\n\n")
    print(f"budget {task.budget:.3g} FLOPs, {task.tokens_per_param:.1f} tokens per parameter;"
          f" wall {summary['meta']['wall_seconds']:.0f} s")  # fmt: skip
    path = args.plot or Path(f"payoff_{args.task}.png")
    if plot(summary, path, f"payoff ({args.task}): {task.describe()['student']}"):
        print(f"plot: {path}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
