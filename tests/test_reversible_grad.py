"""`memory: recompute` gives plain autograd's gradients, of every parameter and of the input.

The recompute backward rebuilds each step's input by running the step backwards, so in float64
its gradients must equal `memory: store`'s to round-off (~1e-10 after 3 units x 8 steps); in
float32 the rebuilt inputs drift with depth, which `float32_drift` measures (docs/reversible.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from morphspec import build

KINDS = ("hamiltonian", "midpoint", "leapfrog")


def network(tmp_path: Path, kind: str, memory: str, steps: int = 8, stem: bool = True) -> nn.Module:
    """3 units with channel pads and average pooling between, as in the report."""
    unit = f"{{steps: {steps}, hidden: 6, h: 0.2, memory: {memory}}}"
    text = (
        "morphspec: 1\nname: t\ninput: {shape: [4, 8, 8]}\nbody:\n"
        + ("  - conv: {name: stem, out: 4, kernel: 3, padding: 1}\n" if stem else "")
        + f"  - {kind}: {unit}\n  - channel_pad: {{out: 6}}\n  - avgpool: {{kernel: 2}}\n"
        f"  - {kind}: {unit}\n  - channel_pad: {{out: 8}}\n  - avgpool: {{kernel: 2}}\n"
        f"  - {kind}: {unit}\n  - global_avgpool\n  - linear: {{name: fc, out: 3}}\n"
    )
    path = tmp_path / f"{kind}_{memory}_{steps}_{stem}.yaml"
    path.write_text(text, encoding="utf-8")
    torch.manual_seed(0)
    return build(path)


def pair(
    tmp_path: Path, kind: str, dtype: torch.dtype, **kw: object
) -> tuple[nn.Module, nn.Module]:
    store = network(tmp_path, kind, "store", **kw).to(dtype)  # type: ignore[arg-type]
    recompute = network(tmp_path, kind, "recompute", **kw).to(dtype)  # type: ignore[arg-type]
    recompute.load_state_dict(store.state_dict())
    return store, recompute


def grads(model: nn.Module, x: Tensor, weight: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """(output, {name: grad}) of the loss Σ weight·output², input grad under 'input'."""
    out = model(x)
    (weight * out**2).sum().backward()
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    if x.requires_grad:
        assert x.grad is not None
        got["input"] = x.grad.clone()
    return out, got


def assert_equal_grads(a: dict[str, Tensor], b: dict[str, Tensor], rtol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = a[key].abs().max().clamp_min(1e-30)
        err = ((a[key] - b[key]).abs().max() / scale).item()
        assert err <= rtol, f"{key}: relative error {err:.2e}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("stem", [True, False], ids=["stem", "leaf-input"])
def test_recompute_gradients_equal_plain_autograd_in_float64(
    tmp_path: Path, kind: str, train: bool, stem: bool
) -> None:
    store, recompute = pair(tmp_path, kind, torch.float64, stem=stem)
    store.train(train), recompute.train(train)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(3, 3, generator=g, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, ga = grads(store, xa, w)
    out_b, gb = grads(recompute, xb, w)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    # every parameter and the input have gradients, and they are not trivially zero
    assert len(ga) == len(list(store.parameters())) + 1
    assert all(v.abs().max() > 0 for v in ga.values())
    # a leaf input gets its gradient once, not twice (the coupling-library pitfall)
    assert_equal_grads(ga, gb, 1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_recompute_with_an_input_that_does_not_require_grad(tmp_path: Path, kind: str) -> None:
    store, recompute = pair(tmp_path, kind, torch.float64, stem=False)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.ones(2, 3, dtype=torch.float64)
    _, ga = grads(store, x, w)
    _, gb = grads(recompute, x, w)
    assert "input" not in gb and len(gb) == len(list(store.parameters()))
    assert_equal_grads(ga, gb, 1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_forward_and_frozen_parameters(tmp_path: Path, kind: str) -> None:
    store, recompute = pair(tmp_path, kind, torch.float64, stem=False)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = recompute(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, store(x), rtol=0, atol=0)
    for p in recompute.parameters():  # nothing needs a gradient but the input
        p.requires_grad_(False)
    for p in store.parameters():
        p.requires_grad_(False)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.ones(2, 3, dtype=torch.float64)
    _, ga = grads(store, xa, w)
    _, gb = grads(recompute, xb, w)
    assert ga.keys() == gb.keys() == {"input"}
    assert_equal_grads(ga, gb, 1e-10)


def float32_drift(tmp_path: Path, kind: str, steps: int) -> tuple[float, float]:
    """Largest relative gradient error of float32 recompute against float64 plain autograd,
    minus that of float32 store (what recomputation adds to float32's own round-off)."""
    store64, _ = pair(tmp_path, kind, torch.float64, steps=steps, stem=False)
    store32, recompute32 = pair(tmp_path, kind, torch.float32, steps=steps, stem=False)
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = torch.ones(4, 3, dtype=torch.float64)
    _, truth = grads(store64, x.clone().requires_grad_(), w)

    def worst(model: nn.Module) -> float:
        _, got = grads(model, x.float().requires_grad_(), w.float())
        return max(((got[k].double() - truth[k]).abs().max() / truth[k].abs().max()).item()
                   for k in truth)  # fmt: skip

    return worst(recompute32), worst(store32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [4, pytest.param(32, marks=pytest.mark.slow)])
def test_float32_recompute_stays_near_float32_store(tmp_path: Path, kind: str, steps: int) -> None:
    recompute, store = float32_drift(tmp_path, kind, steps)
    assert store < 1e-4
    assert recompute < 1e-3, f"recompute drift {recompute:.1e} (store {store:.1e})"


if __name__ == "__main__":  # the float32 drift table of docs/reversible.md
    import tempfile

    print("| unit | steps per unit | recompute f32 error | store f32 error |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            for steps in (4, 16, 64, 128):
                r, s = float32_drift(Path(tmp), kind, steps)
                print(f"| {kind} | {steps} | {r:.1e} | {s:.1e} |")


@pytest.mark.parametrize("kind", KINDS)
def test_recompute_saves_only_the_final_state(tmp_path: Path, kind: str) -> None:
    """The memory claim, structurally: one graph node per unit, holding the output (and, for
    the two-step units, U[N-1]), whatever the number of steps."""
    _, recompute = pair(tmp_path, kind, torch.float64, steps=5, stem=False)
    unit = recompute.get_submodule("0")
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    out = unit(x)
    node = out.grad_fn
    assert type(node).__name__ == "_RecomputeBackward"
    saved = node.saved_tensors  # type: ignore[union-attr]
    assert len(saved) == (1 if kind == "hamiltonian" else 2)
    assert saved[-1].data_ptr() == out.data_ptr()
    # the only edges lead to the input and the parameters (no per-step graph)
    assert len(node.next_functions) == 1 + len(list(unit.parameters()))  # type: ignore[union-attr]
