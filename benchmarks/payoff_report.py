"""The payoff benchmark's summary: per arm its chosen settings, curves and final losses; per
grown arm the FLOPs it saves to reach scratch-big's final loss and whether it ends below
the frontier (the lower of scratch-big and scratch-small at equal FLOPs); a table and a
plot with the frontier drawn."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

__all__ = ["first_reach", "growth_table", "plot", "summarise", "table", "tuning_table"]


def first_reach(curve: list[list[float]], target: float) -> float | None:
    """FLOPs of the first evaluation at or below `target` (conservative: evaluations are
    on a grid, so the true crossing is no later)."""
    return next((f for f, v in curve if v <= target + 1e-12), None)


def _stats(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _at(curve: list[list[float]], flops: float) -> float:
    """The loss at `flops`, linearly interpolated between evaluations (last value beyond)."""
    for (f0, v0), (f1, v1) in itertools.pairwise(curve):
        if f0 <= flops <= f1:
            return v0 if f1 == f0 else v0 + (v1 - v0) * (flops - f0) / (f1 - f0)
    return curve[-1][1]


def _mean_curve(curves: list[list[list[float]]]) -> list[list[float]]:
    grid = sorted({f for c in curves for f, _ in c})
    return [[f, statistics.fmean(_at(c, f) for c in curves)] for f in grid]


def summarise(
    runs: dict[str, list[dict[str, Any]]], chosen: dict[str, dict[str, Any]],
    tuning_seeds: list[int], seeds: list[int], budget: float, tokens_per_param: float,
) -> dict[str, Any]:  # fmt: skip
    """`runs[arm]`: the reported seeds' runs at the chosen settings, in `seeds` order."""
    by_seed = {arm: {r["seed"]: r for r in rs} for arm, rs in runs.items()}
    big, small = by_seed["scratch-big"], by_seed["scratch-small"]
    frontier = {s: min(big[s]["final_loss"], small[s]["final_loss"]) for s in seeds}
    mean_frontier = min(
        statistics.fmean(big[s]["final_loss"] for s in seeds),
        statistics.fmean(small[s]["final_loss"] for s in seeds),
    )
    arms: dict[str, Any] = {}
    for arm, rs in by_seed.items():
        entry: dict[str, Any] = {"lr": chosen[arm]["lr"]}
        if "grow_frac" in chosen[arm]:
            entry["growth_step"] = rs[seeds[0]]["growth_step"]
            entry["growth_frac"] = chosen[arm]["grow_frac"]
        entry["tuning_seeds"] = tuning_seeds
        entry["seeds"] = seeds
        entry["curves"] = {str(s): rs[s]["curve"] for s in seeds}
        entry["final_loss"] = {str(s): rs[s]["final_loss"] for s in seeds}
        entry["final_mean"], entry["final_sd"] = _stats([rs[s]["final_loss"] for s in seeds])
        if "growth_step" in entry:
            saved = {}
            saved_frontier = {}
            for s in seeds:
                reach = first_reach(rs[s]["curve"], big[s]["final_loss"])
                saved[str(s)] = None if reach is None else 1 - reach / budget
                reach = first_reach(rs[s]["curve"], frontier[s])
                saved_frontier[str(s)] = None if reach is None else 1 - reach / budget
            entry["flops_saved_per_seed"] = saved
            reached = [v for v in saved.values() if v is not None]
            entry["flops_saved"] = statistics.fmean(reached) if len(reached) == len(seeds) else None
            entry["flops_saved_sd"] = (
                _stats(reached)[1] if entry["flops_saved"] is not None else None
            )
            entry["flops_saved_to_frontier_per_seed"] = saved_frontier
            entry["below_frontier_per_seed"] = {
                str(s): rs[s]["final_loss"] < frontier[s] for s in seeds
            }
            entry["below_frontier"] = entry["final_mean"] < mean_frontier
            entry["growth"] = {str(s): rs[s]["growth"] for s in seeds}
        arms[arm] = entry
    return {
        "budget_flops": budget,
        "tokens_per_param": tokens_per_param,
        "frontier_final_loss": mean_frontier,
        "arms": arms,
    }


def _pct(v: float | None) -> str:
    return "not reached" if v is None else f"{100 * v:.0f}%"


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| arm | lr | growth step (of T) | final loss (mean ± sd) | FLOPs saved to scratch-big's"
        " final loss (per seed) | below the frontier |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, a in summary["arms"].items():
        step = f"{a['growth_step']} ({100 * a['growth_frac']:.0f}%)" if "growth_step" in a else "—"
        saved, below = "—", "—"
        if "flops_saved_per_seed" in a:
            per = ", ".join(_pct(v) for v in a["flops_saved_per_seed"].values())
            mean = a["flops_saved"]
            head = "—" if mean is None else f"{100 * mean:.0f} ± {100 * a['flops_saved_sd']:.0f}%"
            saved = f"{head} ({per})"
            n = sum(a["below_frontier_per_seed"].values())
            below = f"{'yes' if a['below_frontier'] else 'no'} ({n}/{len(a['seeds'])} seeds)"
        lines.append(
            f"| {arm} | {a['lr']:g} | {step} | {a['final_mean']:.4f} ± {a['final_sd']:.4f}"
            f" | {saved} | {below} |"
        )
    return "\n".join(lines)


def tuning_table(summary: dict[str, Any]) -> str:
    """Each arm's mean final loss on the tuning seeds per lr and per growth point."""
    lines = ["| arm | final loss by lr (tuning seeds) | by growth point, at the chosen lr |",
             "| --- | --- | --- |"]  # fmt: skip
    for arm, t in summary["tuning"].items():
        lrs = ", ".join(f"{k}: {v:.4f}" for k, v in t.get("lr_sweep", {}).items())
        fracs = ", ".join(f"{float(k):.0%}: {v:.4f}" for k, v in t.get("frac_sweep", {}).items())
        lines.append(f"| {arm} | {lrs} | {fracs or '—'} |")
    return "\n".join(lines)


def growth_table(summary: dict[str, Any]) -> str:
    """At the growth (reported seeds): validation loss before and after, and rel_err."""
    lines = ["| arm | val loss before → after growth (per seed) | rel_err |", "| --- | --- | --- |"]
    for arm, a in summary["arms"].items():
        if "growth" not in a:
            continue
        g = list(a["growth"].values())
        moves = ", ".join(f"{x['val_before']:.4f} → {x['val_after']:.4f}" for x in g)
        rel = max(x["rel_err"] for x in g if x["rel_err"] is not None)
        lines.append(f"| {arm} | {moves} | {rel:.2g} |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, title: str) -> bool:
    """Mean curve per arm and the frontier (thick black); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    means = {a: _mean_curve(list(e["curves"].values())) for a, e in summary["arms"].items()}
    big, small = means["scratch-big"], means["scratch-small"]
    grid = sorted({f for f, _ in big} | {f for f, _ in small})
    ax.plot(grid, [min(_at(big, f), _at(small, f)) for f in grid], color="black", lw=4,
            alpha=0.35, label="frontier: min(scratch-big, scratch-small)")  # fmt: skip
    for i, (arm, curve) in enumerate(means.items()):
        style = "--" if arm.startswith("scratch") else "-"
        ax.plot([f for f, _ in curve], [v for _, v in curve], style, color=f"C{i}", lw=1.2,
                label=arm)  # fmt: skip
    finals = [e["final_mean"] for e in summary["arms"].values()]
    lo, hi = min(finals), max(v for c in means.values() for _, v in c[len(c) // 5 :])
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.set_xlabel("training FLOPs (3 × forward; teacher phase included)")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":  # redraw a plot from a --json file: payoff_report.py JSON PNG
    import json
    import sys

    doc = json.loads(Path(sys.argv[1]).read_text())
    print(table(doc), tuning_table(doc), growth_table(doc), sep="\n\n")
    if len(sys.argv) > 2:
        print("plot:", plot(doc, Path(sys.argv[2]), f"payoff: {doc['config']['student']}"))
