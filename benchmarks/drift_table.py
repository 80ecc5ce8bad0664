"""The drift-ratio table of docs/growth.md: every family on each kind of new block.

Run by hand: `python benchmarks/drift_table.py`. For each case the teacher is seeded with
non-trivial batchnorms (tests/growth_helpers.make_teacher), grown with `morphspec.grow`,
and both take k = 1 and 10 steps of SGD (momentum 0.9, lr 0.01) and Adam (lr 1e-3) on
identical random batches of 16; the ratio is morphspec.drift's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from growth_helpers import make_teacher  # noqa: E402

import morphspec  # noqa: E402
from morphspec.drift import drift_ratio  # noqa: E402
from morphspec.growing import grow  # noqa: E402

SPECS = ROOT / "examples" / "specs"
CASES = {
    "conv+batchnorm (ResNetCifar-10 -> 18 wide)": (
        "resnet_cifar10.yaml", "resnet_cifar18_wide.yaml", None, None),
    "conv, pre-activation (preact L 1 -> 2, width 4 -> 6)": (
        "preact_resnet.yaml", "preact_resnet.yaml", ["L=1", "width=4"], ["L=2", "width=6"]),
}  # fmt: skip
FAMILIES = ["r2r", "net2net", "netmorph", "randpad"]


def main() -> None:
    torch.set_num_threads(1)
    print("| new block | family | SGD k=1 | SGD k=10 | Adam k=1 | Adam k=10 |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (t, s, t_set, s_set) in CASES.items():
            ckpt = make_teacher(SPECS / t, t_set, out=Path(tmp) / "t.safetensors")
            teacher = morphspec.load(SPECS / t, ckpt, set=t_set)
            for family in FAMILIES:
                result = grow(
                    teacher, SPECS / t, SPECS / s, teacher_set=t_set, student_set=s_set,
                    family=family, noise=0.05 if family == "net2net" else 0.0,
                    verify=family != "randpad",
                )  # fmt: skip
                arch = result.plan.teacher
                ratios = [
                    drift_ratio(teacher, result.student, arch, steps=k, optimizer=opt, batch=16)
                    for opt in ("sgd", "adam")
                    for k in (1, 10)
                ]
                cells = " | ".join(f"{d.ratio:.2f}" for d in ratios)
                print(f"| {label} | {family} | {cells} |")


if __name__ == "__main__":
    main()
