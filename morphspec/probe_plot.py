"""The probe's figures (matplotlib, an optional extra): what `morph probe --plot` draws.

Kept out of the command module, which parses, calls and renders; imported only when a
plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from morphspec.errors import MorphError
from morphspec.probe import ProbeReport

__all__ = ["need_matplotlib", "plot_report"]


def need_matplotlib() -> Any:
    """matplotlib, or a MorphError naming the extra that installs it."""
    try:
        import matplotlib
    except ImportError:
        raise MorphError(
            "--plot needs matplotlib, an optional extra: pip install 'morphspec[plot]'"
        ) from None
    return matplotlib


def plot_report(report: ProbeReport, path: Path) -> None:
    """The paper's figures for one network: scaled and absolute perturbation against
    relative depth (l + 1/2) / L, one line per section, and each section's distances."""
    need_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    scaled_ax, abs_ax, dist_ax = fig.subplots(1, 3)
    for sec in report.sections:
        rows = [b for b in report.blocks if b.section == sec.name]
        depth = [(i + 0.5) / len(rows) for i in range(len(rows))]
        scaled_ax.plot(depth, [b.scaled for b in rows], marker="o", label=sec.name)
        abs_ax.plot(depth, [b.abs for b in rows], marker="o", label=sec.name)
    scaled_ax.axhline(report.epsilon, color="grey", linestyle="--", linewidth=1, label="ε")
    scaled_ax.set(xlabel="relative depth in section", ylabel="‖Δx‖ / ‖x‖",
                  title="scaled perturbation", xlim=(0, 1))  # fmt: skip
    abs_ax.set(xlabel="relative depth in section", ylabel="‖Δx‖", title="perturbation",
               xlim=(0, 1))  # fmt: skip
    names = [s.name for s in report.sections]
    x = list(range(len(names)))
    dist_ax.bar([i - 0.2 for i in x], [s.distance for s in report.sections], 0.4, label="d")
    twin = dist_ax.twinx()
    twin.bar([i + 0.2 for i in x], [s.scaled_distance for s in report.sections], 0.4,
             color="tab:orange", label="d scaled")  # fmt: skip
    dist_ax.set(xticks=x, title="distance per section", ylabel="d = Σ‖Δx‖")
    dist_ax.set_xticklabels(names, rotation=20)
    twin.set_ylabel("d scaled = Σ‖Δx‖/‖x‖")
    scaled_ax.set_ylim(bottom=0)
    abs_ax.set_ylim(bottom=0)
    scaled_ax.legend(fontsize="small")
    handles = dist_ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    dist_ax.margins(y=0.3)
    twin.margins(y=0.3)
    dist_ax.legend(handles=handles, fontsize="small", loc="upper left", ncols=2)
    fig.savefig(path, format="png")
