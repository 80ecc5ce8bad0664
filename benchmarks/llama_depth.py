"""A checked `morph convert --to-hf` depth growth of a Llama against mergekit's passthrough.

Run by hand: `python benchmarks/llama_depth.py [--workdir DIR] [--repeat 3] [--mergekit BIN]
[--before TREE]`. It makes a float32 Llama Hugging Face folder with transformers at random
init (vocab 32000, d_model 768, 12 heads, MLP 3072, 8 layers: 125M parameters, 0.5 GB),
imports it (`morph import-hf`) and grows it to 16 layers, in turns (so all see the same
load): `morph convert --to-hf` with `--no-verify`, the same with its check, and, when
`--mergekit` names a `mergekit-yaml` (installed elsewhere: it is no dependency of this
project), mergekit's passthrough stacking of layers [0, 8) twice, which does the same depth
change unchecked. `--before TREE` adds the same two morph runs from another checkout with
its own install (TREE/.venv/bin/morph), for a before/after comparison in one run.
Prints medians of wall time, CPU time and peak RssAnon (sampled from /proc every 20 ms)
beside the heap goal (2 x the largest tensor + 300 MB). It is a measurement: exits 0.
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
from pathlib import Path

import torch
from convert_throughput import HEAP_SLACK, MB, Run, run_convert

from morphspec.checkpoint import CheckpointReader

MERGEKIT = """\
merge_method: passthrough
dtype: float32
slices:
  - sources: [{{model: {src}, layer_range: [0, 8]}}]
  - sources: [{{model: {src}, layer_range: [0, 8]}}]
"""


def make_folder(out: Path) -> None:
    """A random-init float32 Llama folder (transformers, seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
        num_key_value_heads=12, num_hidden_layers=8, max_position_embeddings=2048,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--mergekit", help="path of a mergekit-yaml to compare with")
    parser.add_argument("--before", type=Path, help="another source tree to compare with")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="morph-llama-"))
    work.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    morph = [str(bindir / "morph")] if (bindir / "morph").exists() else ["morph"]
    teacher = work / "teacher_hf"
    if not (teacher / "model.safetensors").exists():
        make_folder(teacher)
    subprocess.run([*morph, "import-hf", str(teacher), "-o", str(work / "teacher.yaml"), "--force"],
                   check=True, stdout=subprocess.DEVNULL, cwd=work)  # fmt: skip
    (work / "student.yaml").write_text(
        "morphspec: 1\nname: deep\nextends: teacher.yaml\nvars: {layers: 16}\n"
    )
    (work / "mk.yml").write_text(MERGEKIT.format(src=teacher))
    tail = ["teacher.yaml", "student.yaml", str(teacher), "--to-hf"]
    cases: dict[str, list[str]] = {
        "morph --no-verify": [*morph, "convert", *tail, "out_fast", "--no-verify", "--force"],
        "morph, checked": [*morph, "convert", *tail, "out_checked", "--force"],
    }
    env: dict[str, dict[str, str]] = {}
    if args.before is not None:
        old = [str(args.before / ".venv" / "bin" / "morph"), "convert", *tail]
        cases["before: morph --no-verify"] = [*old, "out_old_fast", "--no-verify", "--force"]
        cases["before: morph, checked"] = [*old, "out_old_checked", "--force"]
    if args.mergekit:
        cases["mergekit passthrough"] = [args.mergekit, "mk.yml", "out_mk", "--no-copy-tokenizer"]
        env["mergekit passthrough"] = {**os.environ, "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    try:
        for _ in range(max(1, args.repeat)):
            for name, cmd in cases.items():
                if name == "mergekit passthrough":
                    shutil.rmtree(work / "out_mk", ignore_errors=True)
                runs[name].append(run_convert(cmd, cwd=work, env=env.get(name)))
        largest = _largest(work / "out_fast" / "model.safetensors")
    finally:
        load_end = os.getloadavg()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    goal = 2 * largest + HEAP_SLACK
    print(f"machine: {os.cpu_count()} cores, python {platform.python_version()}, torch"
          f" {torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at"
          f" start, {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at end; heap goal"
          f" {goal / MB:,.0f} MB (largest tensor {largest / MB:,.0f} MB)")  # fmt: skip
    fast = statistics.median(r.wall for r in runs["morph --no-verify"])
    for name, rs in runs.items():
        wall = statistics.median(r.wall for r in rs)
        cpu = statistics.median(r.cpu for r in rs)
        heap = max(r.peak["RssAnon"] for r in rs)
        walls = ", ".join(f"{r.wall:.1f}" for r in rs)
        print(f"  {name:<28} {wall:6.1f} s ({walls}), CPU {cpu:5.1f} s, peak RssAnon"
              f" {heap / MB:6,.0f} MB ({heap / goal:.2f} of goal), {wall / fast - 1:+.0%}"
              f" on morph --no-verify")  # fmt: skip


def _largest(path: Path) -> int:
    with CheckpointReader(path) as reader:
        return max(reader.nbytes(k) for k in reader)


if __name__ == "__main__":
    main()
