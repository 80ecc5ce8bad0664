"""2 processes (torchrun) against 1 on convert_throughput.py's ~1 GB teacher: wall time and
peak heap (RssAnon) per rank, for a sharded folder and for --to-dcp.

Run by hand: `python benchmarks/distributed_convert.py [--size-gb 1.0] [--repeat 1]`.
Every conversion runs with `--no-verify` (verification is rank 0's alone, the same work in
both). torchrun sets OMP_NUM_THREADS=1 in each rank, so the 1-process run is timed both
with the default thread count and with one thread. It prints the machine's load before and
after (it is shared): a measurement, it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from convert_throughput import make_teacher, write_specs

MB = 1e6
GOAL_SPEEDUP = 1.6


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[int, int]]:
    """Wall time and the peak RssAnon of the command and each of its descendants."""
    os.sync()
    peaks: dict[int, int] = {}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in [proc.pid, *_descendants(proc.pid)]:
                peaks[p] = max(peaks.get(p, 0), _anon(p))
            stop.wait(0.02)

    start = time.perf_counter()
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    t.join()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-3000:]}")
    return wall, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--only", default="", help="run the cases whose name holds this")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="morph-dist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    try:
        t_spec, s_spec = write_specs(work, args.size_gb * 1e9)
        ckpt = work / "teacher.safetensors"
        make_teacher(t_spec, ckpt)
        base = [str(t_spec), str(s_spec), str(ckpt), "--no-verify", "--force"]
        one = [py, "-m", "morphspec", "convert", *base]
        two = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "morphspec", "convert", *base]  # fmt: skip
        env = {**os.environ, "NO_COLOR": "1"}
        env1 = {**env, "OMP_NUM_THREADS": "1"}
        shard = ["--max-shard-size", "200MB"]
        cases = {
            "sharded, 1 process": (one, env, ["-o", str(work / "a"), *shard]),
            "sharded, 1 process, 1 thread": (one, env1, ["-o", str(work / "a"), *shard]),
            "sharded, 2 processes (torchrun)": (two, env, ["-o", str(work / "b"), *shard]),
            "dcp, 1 process": (one, env, ["--to-dcp", str(work / "c")]),
            "dcp, 1 process, 1 thread": (one, env1, ["--to-dcp", str(work / "c")]),
            "dcp, 2 processes (torchrun)": (two, env, ["--to-dcp", str(work / "d")]),
        }
        cases = {k: v for k, v in cases.items() if args.only in k}
        load = os.getloadavg()
        results: dict[str, tuple[float, list[int]]] = {}
        for _ in range(args.repeat):
            for name, (cmd, e, extra) in cases.items():
                wall, peaks = run([*cmd, *extra], e)
                ranks = sorted(peaks.values(), reverse=True)[: 2 if "2 proc" in name else 1]
                best = results.get(name)
                if best is None or wall < best[0]:
                    results[name] = (wall, ranks)
        load_end = os.getloadavg()
        size_t = ckpt.stat().st_size
        made = next(work / n for n in "acbd" if (work / n).is_dir())
        size_s = sum(p.stat().st_size for p in made.iterdir())
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; load average"
          f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start,"
          f" {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at end")  # fmt: skip
    print(f"teacher {size_t / MB:,.0f} MB -> student {size_s / MB:,.0f} MB;"
          f" best of {args.repeat}")  # fmt: skip
    for name, (wall, ranks) in results.items():
        heaps = ", ".join(f"{h / MB:,.0f}" for h in ranks)
        print(f"  {name:34s} {wall:7.2f} s   peak RssAnon per process (MB): {heaps}")
    for kind in ("sharded", "dcp"):
        if f"{kind}, 1 process" not in results or f"{kind}, 2 processes (torchrun)" not in results:
            continue
        w1 = results[f"{kind}, 1 process"][0]
        w2 = results[f"{kind}, 2 processes (torchrun)"][0]
        ok = "met" if w1 / w2 >= GOAL_SPEEDUP else "NOT met"
        print(f"{kind}: speedup 2 vs 1 process {w1 / w2:.2f}x (goal >= {GOAL_SPEEDUP}x: {ok})")


if __name__ == "__main__":
    main()
