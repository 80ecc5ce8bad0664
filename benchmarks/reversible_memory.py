"""Peak memory and time of one training step of reversible networks, store vs recompute.

The network is the report's: a 3x3 stem conv, then 3 units (widths W, 2W, 4W) with a
`channel_pad` doubling the channels and a 2x2 average pool between units, global average
pool and a 10-way linear head; batch 64 of 3x32x32 inputs. For 4, 16 and 64 steps per unit
it measures one forward + backward of each configuration in its own subprocess, so that one
run's allocator state cannot leak into the next:

* memory: on CPU the peak RSS during the step minus the peak RSS after the imports, the
  model and the batch exist (`ru_maxrss`); on a GPU `torch.cuda.max_memory_allocated` over
  the step minus the memory allocated before it;
* time: the median over `--repeats` steps (after one warm-up step) of the process's CPU time
  on one torch thread (`time.process_time`), which the other jobs of a shared machine do
  not inflate the way they inflate wall time; the wall time is printed too. On a GPU, the
  wall time after synchronising.

Rows: the three units in both memory modes; `residual`, plain residual blocks of the same
width (`x + conv(relu(conv(x)))`, W -> W -> W: the FLOPs of one hamiltonian
step, whose 4 convolutions are W/2 -> W -> W/2 twice, with twice its parameters as
Kᵀ shares K's weight) under ordinary autograd; and, when `memcnn`
imports, `memcnn-additive`: memcnn's AdditiveCoupling with the same residual function
Kᵀσ(K x + b), wrapped in InvertibleModuleWrapper (its memory-saving mode).

    PYTHONPATH=$PWD python benchmarks/reversible_memory.py [--width 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = (4, 16, 64)
KINDS = ("hamiltonian", "midpoint", "leapfrog")
GOALS = {"memory ratio (recompute)": 1.5, "time ratio": 1.6}


def _spec_text(kind: str, steps: int, memory: str, width: int) -> str:
    def unit(c: int, name: str) -> str:
        if kind == "residual":
            return (f"  - repeat: {{name: {name}, times: {steps}, body: [{{residual: {{body: ["
                    f"{{conv: {{out: {c}, kernel: 3, padding: 1}}}}, relu, "
                    f"{{conv: {{out: {c}, kernel: 3, padding: 1}}}}]}}}}]}}\n")  # fmt: skip
        args = f"name: {name}, steps: {steps}, hidden: {c}, h: 0.1, memory: {memory}"
        return f"  - {kind}: {{{args}}}\n"

    w = width
    return (
        "morphspec: 1\nname: bench\ninput: {shape: [3, 32, 32]}\nbody:\n"
        f"  - conv: {{name: stem, out: {w}, kernel: 3, padding: 1}}\n"
        + unit(w, "unit1")
        + f"  - channel_pad: {{out: {2 * w}}}\n  - avgpool: {{kernel: 2}}\n"
        + unit(2 * w, "unit2")
        + f"  - channel_pad: {{out: {4 * w}}}\n  - avgpool: {{kernel: 2}}\n"
        + unit(4 * w, "unit3")
        + "  - global_avgpool\n  - linear: {name: fc, out: 10}\n"
    )


def _memcnn_model(steps: int, width: int):  # type: ignore[no-untyped-def]
    import memcnn  # optional; only imported in its own subprocess
    from torch import nn

    from morphspec.builder.reversible import _bias, _force, _Kernel

    class Residual(nn.Module):  # Kᵀσ(K x + b), as in one hamiltonian half-update
        def __init__(self, half: int, hidden: int):
            super().__init__()
            self.k, self.b = _Kernel(hidden, half, 3), _bias(hidden, half * 9)
            self.act = nn.ReLU()

        def forward(self, x):  # type: ignore[no-untyped-def]
            return _force(x, self.k, self.b, self.act)

    def unit(c: int) -> nn.Module:
        return nn.Sequential(*[
            memcnn.InvertibleModuleWrapper(
                memcnn.AdditiveCoupling(Residual(c // 2, c), Residual(c // 2, c)),
                keep_input=False, keep_input_inverse=False,
            ) for _ in range(steps)
        ])  # fmt: skip

    def pad(c: int) -> nn.Module:
        from morphspec.builder.reversible import ChannelPad

        return ChannelPad(c, channels_last=False)

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), unit(w), pad(2 * w), nn.AvgPool2d(2), unit(2 * w),
        pad(4 * w), nn.AvgPool2d(2), unit(4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * w, 10),
    )  # fmt: skip


def _measure(kind: str, steps: int, memory: str, width: int, repeats: int) -> dict[str, float]:
    """Runs inside the child process."""
    import torch

    from morphspec import build

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    if kind == "memcnn-additive":
        model = _memcnn_model(steps, width)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.yaml"
            path.write_text(_spec_text(kind, steps, memory, width), encoding="utf-8")
            model = build(path)
    model = model.to(device).train()
    x = torch.randn(64, 3, 32, 32, device=device)
    target = torch.randint(0, 10, (64,), device=device)

    def one_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        model.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    one_step()  # warm-up; its peak is the step's peak
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    cpu, wall = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        one_step()
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "peak_mib": peak / 2**20,
        "time_s": statistics.median(wall if cuda else cpu),
        "wall_s": statistics.median(wall),
    }


def _rows(width: int) -> list[tuple[str, str]]:
    rows = [(k, m) for k in KINDS for m in ("store", "recompute")]
    rows.append(("residual", "store"))
    try:
        import memcnn  # noqa: F401

        rows.append(("memcnn-additive", "recompute"))
    except ImportError:
        print("memcnn not importable: its row is left out", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "STEPS", "MEMORY"), help="internal")
    args = parser.parse_args()
    if args.one:
        kind, steps, memory = args.one
        print(json.dumps(_measure(kind, int(steps), memory, args.width, args.repeats)))
        return
    results: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for kind, memory in _rows(args.width):
        for steps in STEPS:
            cmd = [sys.executable, __file__, "--one", kind, str(steps), memory,
                   "--width", str(args.width), "--repeats", str(args.repeats)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                print(f"{kind}/{memory}/{steps} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.setdefault((kind, memory), {})[steps] = json.loads(done.stdout.splitlines()[-1])
            print(f"# {kind} {memory} {steps}: {results[(kind, memory)][steps]}", file=sys.stderr)
    _table(results)


def _table(results: dict[tuple[str, str], dict[int, dict[str, float]]]) -> None:
    head = " | ".join(f"peak MiB / s @{n}" for n in STEPS)
    print(f"| unit | memory | {head} | peak(64)/peak(4) | time(recompute)/time(store) @64 |")
    print("|" + " --- |" * (len(STEPS) + 4))
    for (kind, memory), by_steps in results.items():
        cells = " | ".join(
            f"{by_steps[n]['peak_mib']:.0f} / {by_steps[n]['time_s']:.2f}" if n in by_steps else "-"
            for n in STEPS
        )
        ratio = "-"
        if 4 in by_steps and 64 in by_steps and by_steps[4]["peak_mib"] > 0:
            ratio = f"{by_steps[64]['peak_mib'] / by_steps[4]['peak_mib']:.2f}"
        slow = "-"
        store = results.get((kind, "store"), {}).get(64)
        if memory == "recompute" and store and 64 in by_steps:
            slow = f"{by_steps[64]['time_s'] / store['time_s']:.2f}"
        print(f"| {kind} | {memory} | {cells} | {ratio} | {slow} |")


if __name__ == "__main__":
    main()
