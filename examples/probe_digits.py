"""Train the small ResNet of `specs/probe_digits.yaml` on scikit-learn's digits, then probe it.

The digits (1,797 8x8 images, shipped inside scikit-learn: nothing is downloaded) are split
80/20 with a fixed seed; a few epochs of Adam on two CPU cores take well under a minute.
The script writes, under --out: the trained checkpoint, the held-out images as
`inputs.safetensors` (tensor `inputs`, what `morph probe --inputs` reads), and prints the
probe's tables in Markdown (the ones in docs/probe.md) and the commands to go on with:

    python examples/probe_digits.py --out /tmp/digits --plot docs/probe_digits.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

import morphspec
from morphspec.cli.probe import plot_report

SPEC = Path(__file__).resolve().parent / "specs" / "probe_digits.yaml"


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels 0..16 scaled to [0, 1], shaped [N, 1, 8, 8]; a seeded 80/20 split."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * -(-len(y) // 64))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


def markdown(report: morphspec.ProbeReport) -> str:
    rows = ["| block | section | abs | scaled |", "| --- | --- | ---: | ---: |"]
    rows += [f"| `{b.path}` | {b.section} | {b.abs:.3f} | {b.scaled:.3f} |" for b in report.blocks]
    rows += ["", f"| section | blocks | distance | scaled_distance | mean_scaled |"
             f" recommended_blocks (ε = {report.epsilon:g}) | perturbation_from_identity |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    rows += [
        f"| {s.name} | {s.blocks} | {s.distance:.3f} | {s.scaled_distance:.3f} |"
        f" {s.mean_scaled:.3f} | {s.recommended_blocks} | {s.perturbation_from_identity} |"
        for s in report.sections
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("probe_digits_out"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--plot", type=Path, help="also draw the probe's figure here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_test, y_test = data(args.seed)
    model = morphspec.build(SPEC)
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.seed)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.1f} s;"
          f" held-out accuracy {accuracy:.3f} on {len(y_test)} images")  # fmt: skip

    ckpt = morphspec.save(model, args.out / "digits.safetensors", SPEC)
    inputs = args.out / "inputs.safetensors"
    save_file({"inputs": x_test.contiguous()}, str(inputs))
    report = morphspec.probe(model, spec=SPEC, inputs=x_test, epsilon=args.epsilon)
    print(markdown(report))
    if args.plot:
        plot_report(report, args.plot)
        print(f"wrote {args.plot}")
    print(f"\nmorph probe {SPEC} {ckpt} --inputs {inputs} --suggest {args.out / 'deeper.yaml'}")


if __name__ == "__main__":
    main()
