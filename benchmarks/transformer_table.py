"""The measured tables of docs/transformers.md: every transformer example student, every
family.

Run by hand: `python benchmarks/transformer_table.py [--drift]`. The teacher (gpt_mini or
llama_mini) gets seeded weights and random norm gains and shifts, and is grown with
`morphspec.grow`. Columns: rel_err = max|s − t| / max|t| on 16 seeded inputs in float64
(eval and train mode) and float32 (eval); `bf16`: the teacher rounded to bfloat16, grown
(computed in float64, rounded once), then both models run in float64, so the column is the
error the rounding of the construction itself leaves. `--drift` adds morphspec.drift's ratio
(SGD momentum 0.9 lr 0.01 and Adam lr 1e-3, k = 1 and 10 steps, batches of 16).
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from transformer_specs import build_teacher, transformer_spec  # noqa: E402

from morphspec.drift import drift_ratio  # noqa: E402
from morphspec.growing import grow, verify_modules  # noqa: E402

SPECS = ROOT / "examples" / "specs"
STUDENTS = {
    "gpt_mini": ["gpt_mini_heads", "gpt_mini_head_dim", "gpt_mini_wide", "gpt_mini_deep",
                 "gpt_mini_grown"],
    "llama_mini": ["llama_mini_heads", "llama_mini_kv", "llama_mini_wide", "llama_mini_deep",
                   "llama_mini_grown"],
}  # fmt: skip
FAMILIES = ["r2r", "net2net", "netmorph"]


def _err(
    teacher: torch.nn.Module, t_spec: Path, student_spec: Path, family: str, dtype: torch.dtype
) -> str:
    model = copy.deepcopy(teacher).to(dtype)
    result = grow(model, t_spec, student_spec, family=family, verify=False)
    t, s = model, result.student
    if dtype == torch.bfloat16:
        t, s = t.double(), s.double()
    arch = result.plan.teacher
    ev, tr = verify_modules(t, s, arch, 16, 0, 1.0)
    return f"{ev.rel_err:.1e}" if dtype != torch.float64 else f"{ev.rel_err:.1e} / {tr.rel_err:.1e}"


def _pairs(tmp: Path) -> dict[Path, list[Path]]:
    """The example students, and two fills (d_model 64 -> 96, eps scaled by 64/96)."""
    pairs = {SPECS / f"{t}.yaml": [SPECS / f"{s}.yaml" for s in ss] for t, ss in STUDENTS.items()}
    for style in ("llama", "gpt"):
        base = {"style": style, "dim": 64, "heads": 4, "head_dim": 16, "hidden": 128,
                "layers": 2, "seq": 32, "vocab": 256}  # fmt: skip
        t = tmp / f"{style}_d64.yaml"
        t.write_text(transformer_spec(**base), encoding="utf-8")
        s = tmp / f"{style}_d96_{'zero' if style == 'llama' else 'mean'}_fill.yaml"
        s.write_text(transformer_spec(**{**base, "dim": 96, "eps": 1e-5 * 64 / 96}), "utf-8")
        pairs[t] = [s]
    return pairs


def main() -> None:
    torch.set_num_threads(1)
    drift = "--drift" in sys.argv
    head = "| student | family | float64 eval / train | float32 | bf16 |"
    print(head + (" SGD k=1 | SGD k=10 | Adam k=1 | Adam k=10 |" if drift else ""))
    print("| --- " * (head.count("|") - 1 + (4 if drift else 0)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for t_spec, students in _pairs(Path(tmp)).items():
            teacher = build_teacher(t_spec.read_text(encoding="utf-8"), Path(tmp) / "t.yaml")
            for spec in students:
                for family in FAMILIES:
                    cells = [_err(teacher, t_spec, spec, family, d)
                             for d in (torch.float64, torch.float32, torch.bfloat16)]  # fmt: skip
                    if drift:
                        t32 = copy.deepcopy(teacher).float()
                        result = grow(t32, t_spec, spec, family=family)
                        arch = result.plan.teacher
                        cells += [
                            f"{drift_ratio(t32, result.student, arch, steps=k, optimizer=o, batch=16).ratio:.2f}"  # noqa: E501
                            for o in ("sgd", "adam")
                            for k in (1, 10)
                        ]
                    print(f"| {spec.stem} | {family} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
