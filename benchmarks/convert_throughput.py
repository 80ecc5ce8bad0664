"""Throughput and memory of `morph convert` on a synthetic checkpoint of about `--size-gb` GB.

Run by hand: `python benchmarks/convert_throughput.py [--size-gb 1.0] [--workdir DIR] [--keep]`.
It writes a teacher spec (a residual conv stack in float32 and a residual MLP stack in
float16), a student spec that `extends` it with every space 1.25x wider and one more block
in each stack, and a seeded teacher checkpoint, written one tensor at a time. It then
times `morph convert ... --no-verify` as a subprocess (peak RSS from wait4, peak RssAnon
sampled from /proc every ~20 ms), `cp` of the student file, and `import morphspec`, and
prints the ratios against issue 3's goals. It is a measurement: it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import morphspec
from morphspec.checkpoint import CheckpointReader, TensorEntry, write_safetensors

MB = 1e6
GOAL_TIME = 2.0  # (convert - import) / cp
HEAP_SLACK = 300 * MB  # peak RssAnon <= 2 x largest student tensor + this

TEACHER = """\
morphspec: 1
name: bench-teacher
vars: {{c: {c}, d: {d}, h: {h}, conv_blocks: 2, mlp_blocks: 2, classes: 1000}}
input: {{shape: [3, 8, 8]}}
blocks:
  convblock:
    args: {{width: required}}
    residual:
      body:
        - conv: {{name: conv1, out: width, kernel: 3, padding: 1, bias: false}}
        - batchnorm: {{name: bn1}}
        - relu
        - conv: {{name: conv2, out: width, kernel: 3, padding: 1, bias: false}}
  mlpblock:
    args: {{width: required, hidden: required}}
    residual:
      body:
        - linear: {{name: up, out: hidden}}
        - relu
        - linear: {{name: down, out: width}}
body:
  - conv: {{name: stem, out: c, kernel: 3, padding: 1}}
  - repeat: {{name: convs, times: conv_blocks, block: convblock, args: {{width: c}}}}
  - global_avgpool
  - linear: {{name: proj, out: d}}
  - repeat: {{name: mlps, times: mlp_blocks, block: mlpblock, args: {{width: d, hidden: h}}}}
  - linear: {{name: head, out: classes}}
"""
STUDENT = """\
morphspec: 1
name: bench-student
extends: teacher.yaml
vars: {{c: {c}, d: {d}, h: {h}, conv_blocks: 3, mlp_blocks: 3}}
"""


def widths(c: int) -> dict[str, int]:
    return {"c": c, "d": 2 * c, "h": 8 * c}


def dtype_of(key: str) -> torch.dtype:
    """The conv stack is float32, the linear layers float16."""
    if key.endswith("num_batches_tracked"):
        return torch.int64
    return torch.float16 if key.startswith(("proj.", "mlps.", "head.")) else torch.float32


def teacher_bytes(spec: Path) -> int:
    shapes = morphspec.resolve(morphspec.load_spec(spec)).state_shapes()
    return sum(torch.Size(s).numel() * dtype_of(k).itemsize for k, s in shapes.items())


def write_specs(work: Path, size_bytes: float) -> tuple[Path, Path]:
    """Pick the conv width `c` (a multiple of 64) that makes the teacher about `size_bytes`."""
    teacher, student = work / "teacher.yaml", work / "student.yaml"
    probe = 256
    teacher.write_text(TEACHER.format(**widths(probe)))
    per_c2 = teacher_bytes(teacher) / probe**2
    c = max(64, round((size_bytes / per_c2) ** 0.5 / 64) * 64)
    teacher.write_text(TEACHER.format(**widths(c)))
    student.write_text(STUDENT.format(**widths(c * 5 // 4)))
    return teacher, student


def make_teacher(spec: Path, out: Path, seed: int = 0) -> None:
    """A seeded teacher checkpoint, produced and written one tensor at a time."""
    shapes = morphspec.resolve(morphspec.load_spec(spec)).state_shapes()

    def producer(i: int, key: str, shape: tuple[int, ...]) -> TensorEntry:
        def produce() -> torch.Tensor:
            dtype = dtype_of(key)
            if dtype == torch.int64:
                return torch.full(shape, 100, dtype=dtype)
            gen = torch.Generator().manual_seed(seed * 100_003 + i)
            x = torch.randn(shape, generator=gen)
            if key.endswith("running_var"):
                x = x.abs_().add_(0.5)
            elif len(shape) > 1:
                x.mul_(torch.Size(shape[1:]).numel() ** -0.5)
            return x.to(dtype)

        return TensorEntry(key, tuple(shape), dtype_of(key), produce)

    entries = [producer(i, k, tuple(s)) for i, (k, s) in enumerate(sorted(shapes.items()))]
    write_safetensors(out, entries)


class MemSampler(threading.Thread):
    """Peak VmRSS and RssAnon (bytes) of one process, read from /proc every `period` s."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.path, self.period = Path(f"/proc/{pid}/status"), period
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                lines = self.path.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                name, _, value = line.partition(":")
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], int(value.split()[0]) * 1024)
            self.samples += 1
            self.stop.wait(self.period)


def warm(path: Path) -> None:
    """Read `path` once (untimed), so that it is in the page cache. Since issue 21 morph
    writes its output past the page cache (O_DIRECT); without this, `cp` would read the
    student back from the disk and the baseline would be slower than a copy from memory,
    which is what it was before and what the goal compares against."""
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds
    maxrss: int  # bytes, from wait4
    faults: int  # minor page faults
    peak: dict[str, int]  # from /proc/<pid>/status
    samples: int


def run_convert(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """One conversion as a subprocess, after flushing dirty pages so it pays only its own."""
    os.sync()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env)
        sampler = MemSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"morph convert failed ({proc.returncode}):\n{err.read().decode()}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, usage.ru_maxrss * 1024, usage.ru_minflt, sampler.peak, sampler.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="teacher size (default 1)")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved runs of convert and cp; medians kept"
    )
    parser.add_argument(
        "--verify-repeat", type=int, default=1, help="runs of convert with its check (0: none)"
    )
    parser.add_argument(
        "--before", type=Path,
        help="another checkout (e.g. of main) with its own install (TREE/.venv, the README's"
        " command), whose conversions are interleaved with these, for a before/after table",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="morph-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bindir, py = Path(sys.executable).parent, [sys.executable, "-c"]
    morph = str(bindir / "morph") if (bindir / "morph").exists() else shutil.which("morph")
    try:
        teacher_spec, student_spec = write_specs(work, args.size_gb * 1e9)
        ckpt, out, copy = work / "teacher.safetensors", work / "student.safetensors", work / "cp"
        make_teacher(teacher_spec, ckpt)
        t_import = statistics.median(timed([*py, "import morphspec"]) for _ in range(5))
        t_torch = statistics.median(timed([*py, "import morphspec.convert"]) for _ in range(3))
        cmd = [str(morph), "convert", str(teacher_spec), str(student_spec), str(ckpt)]
        cmd += ["-o", str(out), "--force"]
        load = os.getloadavg()
        base = run_convert([*cmd, "--dry-run"])
        runs, cps, old_runs, old_checked = [], [], [], []
        old_cmd = [str(args.before / ".venv" / "bin" / "morph"), *cmd[1:]] if args.before else []
        old_env = dict(os.environ) if args.before else None
        t_cp_new = 0.0
        for i in range(max(1, args.repeat)):  # interleaved, so both see the same load
            if old_env is not None:
                old_runs.append(run_convert([*old_cmd, "--no-verify"], env=old_env))
            runs.append(run_convert([*cmd, "--no-verify"]))
            os.sync()
            warm(out)  # cp copies from memory, whether or not convert wrote past the cache
            if i == 0:
                t_cp_new = timed(["cp", str(out), str(copy)])  # a fresh file, as convert writes
            cps.append(timed(["cp", str(out), str(copy)]))
        copy.unlink()
        checked = []
        for _ in range(args.verify_repeat):
            if old_env is not None:
                old_checked.append(run_convert(old_cmd, env=old_env))
            checked.append(run_convert(cmd))
        load_end = os.getloadavg()
        with CheckpointReader(out) as reader:
            largest = max(reader.nbytes(k) for k in reader)
            biggest_key = max(reader, key=reader.nbytes)
        size_t, size_s = ckpt.stat().st_size, out.stat().st_size
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    best = Run(
        statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs),
        max(r.maxrss for r in runs), int(statistics.median(r.faults for r in runs)),
        {k: max(r.peak[k] for r in runs) for k in runs[0].peak}, min(r.samples for r in runs),
    )  # fmt: skip
    peak_anon = best.peak["RssAnon"]
    t_cp = statistics.median(cps)
    time_x = (best.wall - t_import) / t_cp
    heap_budget = 2 * largest + HEAP_SLACK
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, python"
          f" {platform.python_version()}, torch {torch.__version__}; load average"
          f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) at start,"
          f" {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at end")  # fmt: skip
    print(f"teacher {size_t / MB:,.0f} MB -> student {size_s / MB:,.0f} MB; largest student"
          f" tensor {biggest_key} {largest / MB:,.0f} MB")  # fmt: skip
    runs_label = f"median of {len(runs)}" if len(runs) > 1 else "1 run"
    walls = ", ".join(f"{r.wall:.2f}" for r in runs)
    rows = [
        ("import morphspec (median of 5)", f"{t_import:.2f} s"),
        ("import morphspec.convert (torch; median of 3)", f"{t_torch:.2f} s"),
        (f"morph convert --no-verify ({runs_label})", f"{best.wall:.2f} s"),
        ("  its CPU time (user + system)", f"{best.cpu:.2f} s"),
        ("  its minor page faults", f"{best.faults:,}"),
        ("  throughput (student bytes / wall)", f"{size_s / MB / best.wall:.0f} MB/s"),
        ("  all runs", f"{walls}"),
        (f"cp of the student file (overwrite; {runs_label})", f"{t_cp:.2f} s"),
        ("  all runs", ", ".join(f"{c:.2f}" for c in cps)),
        ("cp of the student file (1st run, new file)", f"{t_cp_new:.2f} s"),
        ("peak RSS (wait4 ru_maxrss)", f"{best.maxrss / MB:,.0f} MB"),
        (f"peak RssAnon (heap; {best.samples} samples)", f"{peak_anon / MB:,.0f} MB"),
        ("peak RssFile (mapped file pages)", f"{best.peak['RssFile'] / MB:,.0f} MB"),
        ("peak RssAnon of --dry-run (imports, plan)", f"{base.peak['RssAnon'] / MB:,.0f} MB"),
    ]
    for r in checked:
        rows += [
            ("morph convert with its check (verification)", f"{r.wall:.2f} s"),
            ("  its CPU time; peak RssAnon", f"{r.cpu:.1f} s; {r.peak['RssAnon'] / MB:,.0f} MB"),
            ("  verification cost on top of --no-verify", f"{r.wall / best.wall - 1:+.0%}"),
        ]
    if old_runs:
        old_wall = statistics.median(r.wall for r in old_runs)
        old_heap = max(r.peak["RssAnon"] for r in old_runs)
        rows += [
            ("BEFORE: morph convert --no-verify", f"{old_wall:.2f} s"),
            ("  all runs", ", ".join(f"{r.wall:.2f}" for r in old_runs)),
            ("  its CPU time", f"{statistics.median(r.cpu for r in old_runs):.2f} s"),
            ("  (convert - import) / cp", f"{(old_wall - t_import) / t_cp:.2f}x"),
            ("  peak RssAnon; of the heap goal",
             f"{old_heap / MB:,.0f} MB; {old_heap / (2 * largest + HEAP_SLACK):.2f}"),
        ]  # fmt: skip
        for r in old_checked:
            rows += [
                ("BEFORE: with its check", f"{r.wall:.2f} s"),
                ("  its CPU time; peak RssAnon", f"{r.cpu:.1f} s; {r.peak['RssAnon'] / MB:,.0f}"),
                ("  verification cost on top of --no-verify", f"{r.wall / old_wall - 1:+.0%}"),
            ]
    for name, value in rows:
        print(f"  {name:<46}{value:>12}")
    heap_x = peak_anon / heap_budget
    ok = {True: "PASS", False: "FAIL"}
    print(f"time: (convert - import) / cp = {time_x:.2f}x, goal <= {GOAL_TIME:g}x:"
          f" {ok[time_x <= GOAL_TIME]}  (against the 1st cp:"
          f" {(best.wall - t_import) / t_cp_new:.2f}x; minus the torch import"
          f" too: {(best.wall - t_torch) / t_cp:.2f}x)")  # fmt: skip
    if checked:
        with_check = statistics.median(r.wall for r in checked)
        print(f"time with verification: (convert - import) / cp = "
              f"{(with_check - t_import) / t_cp:.2f}x")  # fmt: skip
    print(f"heap: peak RssAnon / (2 x largest + 300 MB) = {peak_anon / MB:,.0f} /"
          f" {heap_budget / MB:,.0f} MB = {heap_x:.2f}, goal <= 1: {ok[heap_x <= 1]}")  # fmt: skip
    if args.keep or args.workdir is not None:
        print(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
