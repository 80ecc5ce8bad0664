"""`morph summary`: the layers of a spec with shapes, parameters and FLOPs, from the Arch."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from morphspec.arch import Arch, Node, resolve
from morphspec.cli.options import JsonOpt, SetOpt, SpecArg
from morphspec.cli.output import Output
from morphspec.spec import load_spec

__all__ = ["EXAMPLES", "layer_rows", "summary"]

EXAMPLES = """\
  morph summary examples/specs/resnet_cifar10.yaml
  morph summary examples/specs/resnet_cifar10.yaml --set r=0.25
  morph summary examples/specs/gpt_mini.yaml --json | jq .total_params"""

BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def summary(spec: SpecArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Show each layer's output shape, trainable parameters and forward FLOPs, with totals.

    FLOPs are multiply-adds x 2 of the matrix products and convolutions for one sample;
    parameter-free layers that keep the shape (activations, dropout) are left out.
    """
    out = Output(as_json)
    arch = resolve(load_spec(spec, set_))
    rows = layer_rows(arch)
    data = {
        "name": arch.name,
        "input": list(arch.input.dims),
        "output": list(arch.output.dims),
        "layers": rows,
        "total_params": arch.trainable_count(),
        "total_flops": arch.flops(),
    }
    out.result(data, _render(arch, rows))


def layer_rows(arch: Arch) -> list[dict[str, Any]]:
    """The leaves worth a line: those with parameters, FLOPs, or a new shape."""
    return [
        {
            "path": n.path,
            "kind": n.kind,
            "out_shape": list(n.out.dims),
            "params": _trainable(n),
            "flops": n.flops,
        }
        for n in arch.nodes()
        if not n.is_container and (n.params or n.flops or n.out != n.inp)
    ]


def _trainable(node: Node) -> int:
    total = 0
    for key, shape in node.params.items():
        if key.rsplit(".", 1)[-1] not in BUFFERS:
            n = 1
            for d in shape:
                n *= d
            total += n
    return total


def _render(arch: Arch, rows: list[dict[str, Any]]) -> Group:
    table = Table(title_justify="left", show_footer=True, box=None, pad_edge=False)
    total_params, total_flops = arch.trainable_count(), arch.flops()
    table.add_column("layer", footer="total")
    table.add_column("kind")
    table.add_column("output", footer=str(arch.output))
    table.add_column("params", justify="right", footer=f"{total_params:,}")
    table.add_column("FLOPs", justify="right", footer=_si(total_flops))
    for r in rows:
        shape = "[" + ", ".join(map(str, r["out_shape"])) + "]"
        table.add_row(r["path"], r["kind"], shape, f"{r['params']:,}", _si(r["flops"]))
    head = Text.assemble(
        (arch.name, "bold"), f"  input {arch.input} {arch.input.dtype}, output {arch.output}"
    )
    foot = Text(f"FLOPs: forward multiply-adds x 2 per sample ({total_flops:,})", style="dim")
    return Group(head, Text(""), table, Text(""), foot)


def _si(n: int) -> str:
    """1234567 -> '1.23M': FLOPs span too many orders of magnitude for plain digits."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
