"""sha256 of every tensor `morph convert` writes for the example pairs, per family.

A refactor of the growth code must give the same bytes for the same seed (except where it
is a fix). Run before and after, and diff the JSON:

    PYTHONPATH=$PWD:$PWD/tests python benchmarks/student_hashes.py > after.json

Hashes cover the tensors' bytes (not the file, whose metadata holds the plan's JSON).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from growth_helpers import make_teacher, read_tensors

from morphspec.convert import convert
from morphspec.errors import MorphError

SPECS = Path(__file__).resolve().parents[1] / "examples" / "specs"
FAMILIES = ["r2r", "net2net", "netmorph", "randpad"]
# name: (teacher, student, teacher --set, student --set)
PAIRS: dict[str, tuple[str, str, list[str] | None, list[str] | None]] = {
    "mlp": ("mlp.yaml", "mlp_wide.yaml", None, None),
    "mlp_odd": ("mlp.yaml", "mlp.yaml", None, ["width=33"]),
    "smallconv": ("smallconv.yaml", "smallconv_wide.yaml", None, None),
    "resnet_cifar10_18wide": ("resnet_cifar10.yaml", "resnet_cifar18_wide.yaml", None, None),
    "resnet_cifar10_18": ("resnet_cifar10.yaml", "resnet_cifar18.yaml", None, None),
    "spec_example": ("spec_example.yaml", "spec_example_wide.yaml", None, None),
    "resnet18_34": ("resnet18.yaml", "resnet34.yaml", ["r=0.0625"], ["r=0.09375"]),
    "preact_wide": (
        "preact_resnet.yaml",
        "preact_resnet.yaml",
        ["L=1", "width=4"],
        ["L=2", "width=7"],
    ),
    "plain_cnn": ("plain_cnn.yaml", "plain_cnn.yaml", None, ["depth=4", "width=11"]),
    "gpt_mini": ("gpt_mini.yaml", "gpt_mini.yaml", ["dim=32"], ["dim=48"]),
}
EXTRA = [
    ("mlp", "r2r", {"rescale": "default_vt"}),
    ("smallconv", "r2r", {"rescale": "vt_constraint_new_shape", "allow_inexact": True}),
    ("mlp", "netmorph", {"netmorph_zero": "in"}),
    ("plain_cnn", "r2r", {"rescale": "default_vt"}),
    ("spec_example", "r2r", {"rescale": "vt_constraint_old_shape"}),
    ("mlp", "net2net", {"noise": 0.1}),
    ("smallconv", "r2r", {"noise": 0.05, "init": "he", "init_scale": 0.5, "seed": 3}),
]


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for key, t in sorted(read_tensors(path).items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hashes(tmp: Path, names: list[str] | None = None) -> dict[str, str]:
    """The digest (or the refusal) of every case, or of the cases `names`."""
    out: dict[str, str] = {}
    cases = [(p, f, {}) for p in PAIRS for f in FAMILIES] + EXTRA
    for pair, family, kw in cases:
        name = f"{pair}/{family}" + "".join(f"/{k}={v}" for k, v in sorted(kw.items()))
        if names is not None and name not in names:
            continue
        t, s, ts, ss = PAIRS[pair]
        ckpt = tmp / f"{pair}.teacher.safetensors"
        if not ckpt.exists():
            make_teacher(SPECS / t, ts, out=ckpt)
        dst = tmp / "student.safetensors"
        try:
            convert(SPECS / t, SPECS / s, ckpt, dst, family=family, force=True,
                    verify=False, teacher_set=ts, student_set=ss, **kw)  # fmt: skip
            out[name] = digest(dst)
        except MorphError as e:
            out[name] = "refused: " + str(e).splitlines()[0][:100]
        print(name, out[name][:24], file=sys.stderr)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = hashes(Path(tmp))
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
