"""Resolving specs: the naming rules, shape inference, and refusals that carry a YAML place."""

from __future__ import annotations

from pathlib import Path

import pytest
from yaml_marks import where

from morphspec import load_spec, resolve
from morphspec.arch import Arch, TensorShape
from morphspec.errors import SpecError

HEAD = "morphspec: 1\nname: t\n"
BASIC = """blocks:
  basic:
    args: {width: required, stride: 1}
    residual:
      body:
        - conv: {name: conv1, out: width, kernel: 3, stride: stride, padding: 1, bias: false}
        - batchnorm: {name: bn1}
        - relu
        - conv: {name: conv2, out: width, kernel: 3, padding: 1, bias: false}
        - batchnorm: {name: bn2}
      shortcut: {name: downsample}
      post: relu
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def arch(tmp_path: Path, text: str) -> Arch:
    return resolve(load_spec(write(tmp_path, HEAD + text)))


def refusal(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, HEAD + text)
    with pytest.raises(SpecError) as info:
        resolve(load_spec(path))
    assert len(info.value.problems) == 1
    return path, str(info.value)


# -- naming rules --------------------------------------------------------------------------------


def test_unnamed_layers_take_their_index_and_parameter_free_layers_own_no_keys(
    tmp_path: Path,
) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [4]}\nbody:\n  - linear: {out: 5}\n  - relu\n  - dropout\n"
        "  - linear: {name: head, out: 2, bias: false}\n"
        "  - sequential:\n      name: tail\n"
        "      body: [{linear: {out: 3}}, tanh, {layernorm: {bias: false}}]\n",
    )
    assert a.state_shapes() == {
        "0.weight": (5, 4), "0.bias": (5,), "head.weight": (2, 5),
        "tail.0.weight": (3, 2), "tail.0.bias": (3,), "tail.2.weight": (3,),
    }  # fmt: skip
    assert [n.path for n in a.root.children] == ["0", "1", "2", "head", "tail"]


def test_repeat_copies_are_named_0_to_n_minus_1(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "vars: {n: 3}\ninput: {shape: [4]}\nbody:\n"
        "  - repeat: {name: blocks, times: n, body: [{linear: {name: fc, out: 4}}, relu]}\n",
    )
    node = a.node("blocks")
    assert node.kind == "repeat" and node.args == {"times": 3}
    assert [c.path for c in node.children] == ["blocks.0", "blocks.1", "blocks.2"]
    assert [k for k in a.state_shapes() if k.endswith("weight")] == [
        "blocks.0.fc.weight", "blocks.1.fc.weight", "blocks.2.fc.weight",
    ]  # fmt: skip


def test_residual_body_sits_under_the_residual_and_shortcut_under_its_name(
    tmp_path: Path,
) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [4]}\nbody:\n  - residual:\n      name: res\n"
        "      body: [{linear: {name: fc, out: 6}}]\n"
        "      shortcut: {name: proj, body: [{linear: {name: lin, out: 6, bias: false}}]}\n"
        "      post: relu\n",
    )
    assert a.state_shapes() == {"res.fc.weight": (6, 4), "res.fc.bias": (6,),
                                "res.proj.lin.weight": (6, 4)}  # fmt: skip
    res = a.node("res")
    assert res.shortcut is not None and res.shortcut.path == "res.proj"
    assert [p.path for p in res.post] == ["res.post"]


def test_default_shortcut_is_a_strided_1x1_conv_and_batchnorm(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [4, 8, 8]}\n" + BASIC + "body:\n"
        "  - repeat: {name: layer1, times: 2, block: basic, args: {width: 8},\n"
        "             first: {stride: 2}}\n",
    )
    shapes = a.state_shapes()
    assert shapes["layer1.0.conv1.weight"] == (8, 4, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (8, 4, 1, 1)
    assert {k for k in shapes if k.startswith("layer1.0.downsample.1.")} == {
        f"layer1.0.downsample.1.{b}"
        for b in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    assert not [k for k in shapes if k.startswith("layer1.1.downsample")]  # identity: shapes match
    conv = a.node("layer1.0.downsample.0")
    assert (conv.args["stride"], conv.args["kernel"], conv.args["bias"]) == (2, 1, False)
    assert a.node("layer1.0").args == {} and a.node("layer1.0").block == "basic"
    assert a.node("layer1.1.conv1").args["stride"] == 1  # `first` applies to copy 0 only
    assert a.output.dims == (8, 4, 4)


def test_shortcut_when_always_projects_equal_shapes(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [4, 8, 8]}\nbody:\n  - residual:\n      name: r\n"
        "      body: [{conv: {out: 4, kernel: 3, padding: 1}}]\n"
        "      shortcut: {name: sc, when: always}\n",
    )
    assert a.state_shapes()["r.sc.0.weight"] == (4, 4, 1, 1)


def test_a_block_call_is_named_like_any_layer(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [4, 8, 8]}\n" + BASIC + "body:\n  - basic: {name: stem, width: 4}\n"
        "  - basic: {width: 4}\n",
    )
    assert "stem.conv1.weight" in a.state_shapes() and "1.bn2.weight" in a.state_shapes()


# -- shapes --------------------------------------------------------------------------------------


def test_shapes_are_inferred_per_node(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [3, 32, 32]}\nbody:\n"
        "  - conv: {name: c, out: 8, kernel: 5, stride: 2, padding: 1, dilation: 2}\n"
        "  - maxpool: {name: p, kernel: 3, stride: 2, padding: 1}\n"
        "  - avgpool: {name: q, kernel: 2}\n"
        "  - flatten: {name: f}\n",
    )
    # (32 + 2*1 - 2*(5-1) - 1) // 2 + 1 = 13; (13 + 2 - 3) // 2 + 1 = 7; 7 // 2 = 3
    assert a.node("c").out == TensorShape((8, 13, 13), "image")
    assert a.node("p").out.dims == (8, 7, 7)
    assert a.node("q").out.dims == (8, 3, 3) and a.node("q").args["stride"] == 2
    assert a.output == TensorShape((72,), "vector")


def test_token_input_and_attention_defaults(tmp_path: Path) -> None:
    a = arch(
        tmp_path,
        "input: {shape: [6], dtype: int64}\nbody:\n  - embedding: {name: e, vocab: 11, dim: 8}\n"
        "  - attention: {name: a, heads: 2, head_dim: 3}\n",
    )
    assert a.input == TensorShape((6,), "tokens", "int64")
    assert a.node("e").out == TensorShape((6, 8), "sequence")
    assert a.node("a").args["kv_heads"] == 2
    assert a.state_shapes()["a.q_proj.weight"] == (6, 8)
    assert a.state_shapes()["a.o_proj.weight"] == (8, 6)


def test_trainable_count_leaves_out_buffers(tmp_path: Path) -> None:
    a = arch(tmp_path, "input: {shape: [3, 4, 4]}\nbody:\n  - batchnorm\n")
    assert len(a.state_shapes()) == 5 and a.trainable_count() == 6


# -- refusals, each with its YAML place ------------------------------------------------------------


def test_non_integer_channel_count_shows_expression_and_value(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path, "vars: {r: 0.35}\ninput: {shape: [4]}\nbody:\n  - linear: {out: 10*r}\n"
    )
    assert err == (
        f"{where(path, '10*r')}: 'out' must be a positive integer, but '10*r' = 3.5;"
        " wrap it in floor() or round()"
    )


def test_zero_channel_count_is_refused(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "vars: {r: 0.01}\ninput: {shape: [3, 8, 8]}\nbody:\n"
        "  - conv: {out: floor(64*r), kernel: 1}\n",
    )
    assert err.startswith(f"{where(path, 'floor')}: 'out' must be a positive integer")
    assert "'floor(64*r)' = 0" in err


def test_non_integer_template_argument_is_refused_where_it_is_used(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "vars: {r: 0.1}\ninput: {shape: [4, 8, 8]}\n" + BASIC + "body:\n"
        "  - repeat: {name: l, times: 1, block: basic, args: {width: 64*r}}\n",
    )
    assert err.startswith(f"{where(path, 'out: ^width, kernel: 3, stride')}: 'out' must be a")
    assert "'width' = 6.4" in err


def test_residual_of_unequal_shapes(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path, "input: {shape: [4]}\nbody:\n  - residual:\n      body: [{linear: {out: 3}}]\n"
    )
    assert err.startswith(f"{where(path, 'residual')}: residual '0' sums tensors of unequal shapes")
    assert "the body gives [3], the input is [4]" in err


def test_shortcut_body_of_the_wrong_shape(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "input: {shape: [4]}\nbody:\n  - residual:\n      body: [{linear: {out: 3}}]\n"
        "      shortcut: {name: s, body: [{linear: {out: 2}}]}\n",
    )
    assert err.startswith(f"{where(path, '{name: s')}: residual '0': the shortcut gives [2]")


def test_linear_on_an_image(tmp_path: Path) -> None:
    path, err = refusal(tmp_path, "input: {shape: [3, 8, 8]}\nbody:\n  - linear: {out: 3}\n")
    assert err.startswith(f"{where(path, 'linear')}: linear '0': needs a flat input")
    assert "add 'flatten' or 'global_avgpool'" in err


def test_heads_not_divisible_by_kv_heads(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "input: {shape: [8], dtype: int64}\nbody:\n  - embedding: {vocab: 10, dim: 12}\n"
        "  - attention: {name: attn, heads: 3, head_dim: 4, kv_heads: 2}\n",
    )
    assert err == (
        f"{where(path, 'kv_heads: ^2')}: attention 'attn': heads (3) must be divisible by"
        " kv_heads (2)"
    )


def test_position_embedding_shorter_than_the_sequence(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "input: {shape: [8], dtype: int64}\nbody:\n  - embedding: {vocab: 10, dim: 12}\n"
        "  - position_embedding: {max_len: 4}\n",
    )
    assert err.startswith(f"{where(path, 'max_len: ^4')}: position_embedding '1': the sequence")
    assert "has 8 positions, more than max_len 4" in err


def test_conv_kernel_larger_than_the_input(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path, "input: {shape: [3, 4, 4]}\nbody:\n  - conv: {out: 3, kernel: 7}\n"
    )
    assert err == (
        f"{where(path, 'kernel: ^7')}: conv '0': kernel 7 (dilation 1, padding 0) is larger than"
        " the input size 4"
    )


@pytest.mark.parametrize(
    ("use", "needle"),
    [("  - b: {name: x}\n", "b: {name"), ("  - repeat: {times: 2, block: b}\n", "b}")],
)
def test_missing_required_block_argument(tmp_path: Path, use: str, needle: str) -> None:
    text = "input: {shape: [4]}\nblocks:\n  b:\n    args: {width: required}\n"
    path, err = refusal(tmp_path, text + "    body: [{linear: {out: width}}]\nbody:\n" + use)
    assert err == f"{where(path, needle)}: block 'b' needs the argument 'width'"


@pytest.mark.parametrize(
    ("use", "needle"),
    [("  - b: {width: 3, widht: 4}\n", "widht"),
     ("  - repeat: {times: 2, block: b, args: {widht: 3}}\n", "widht"),
     ("  - repeat: {times: 2, block: b, args: {width: 3}, first: {widht: 2}}\n", "widht")],
)  # fmt: skip
def test_unknown_block_argument(tmp_path: Path, use: str, needle: str) -> None:
    text = "input: {shape: [4]}\nblocks:\n  b:\n    args: {width: 1}\n"
    path, err = refusal(tmp_path, text + "    body: [{linear: {out: width}}]\nbody:\n" + use)
    assert err == (
        f"{where(path, needle)}: block 'b' has no argument 'widht' (did you mean 'width'?)"
        " (its args: width)"
    )


def test_unknown_block_in_a_repeat(tmp_path: Path) -> None:
    path, err = refusal(
        tmp_path,
        "input: {shape: [4]}\nblocks: {basic: {body: [relu]}}\nbody:\n"
        "  - repeat: {times: 2, block: basik}\n",
    )
    assert (
        err
        == f"{where(path, 'basik')}: unknown layer kind or block 'basik' (did you mean 'basic'?)"
    )


def test_a_block_using_itself(tmp_path: Path) -> None:
    path, err = refusal(tmp_path, "input: {shape: [4]}\nblocks:\n  b: {body: [b]}\nbody: [b]\n")
    assert err.startswith(f"{where(path, 'b]', nth=1)}: block 'b' uses itself: b -> b")


@pytest.mark.parametrize(
    ("body", "first", "second"),
    [
        ("  - linear: {name: fc, out: 3}\n  - relu\n  - linear: {name: fc, out: 3}\n",
         "linear", "^linear"),
        ("  - residual:\n      body: [{linear: {name: fc, out: 4}}]\n"
         "      post: {linear: {name: fc, out: 4}}\n", "{linear", "post: ^{linear"),
        ("  - residual:\n      body: [{linear: {name: fc, out: 5}}]\n      shortcut: {name: fc}\n",
         "{linear", "{name: fc}"),
        ("  - residual:\n      body: [{linear: {name: post, out: 4}}]\n      post: relu\n",
         "{linear", "relu"),
    ],
)  # fmt: skip
def test_duplicated_layer_names(tmp_path: Path, body: str, first: str, second: str) -> None:
    path, err = refusal(tmp_path, "input: {shape: [4]}\nbody:\n" + body)
    assert "two layers named" in err
    assert err.startswith(where(path, second, nth=2 if second == "^" + first else 1) + ": ")
    assert f"the first is at {where(path, first)}" in err


def test_layer_names_without_dots(tmp_path: Path) -> None:
    path, err = refusal(tmp_path, "input: {shape: [4]}\nbody:\n  - linear: {name: a.b, out: 2}\n")
    assert err == f"{where(path, 'linear')}: layer name 'a.b' must be non-empty without dots"


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        ("input: {shape: [4]}\nbody:\n  - conv: {out: 3, kernel: 1}\n", "conv",
         "needs a [C, H, W] input but gets [4]"),
        ("input: {shape: [5]}\nbody:\n  - embedding: {vocab: 3, dim: 4}\n", "embedding",
         "needs int64 token ids"),
        ("input: {shape: [5], dtype: int64}\nbody:\n  - relu\n", "relu",
         "add an 'embedding' first"),
        ("input: {shape: [3, 8, 8]}\nbody:\n  - conv: {out: 2, kernel: 3, stride: 1.5}\n", "1.5",
         "'stride' must be a positive integer, but 1.5"),
        ("input: {shape: [3, 8, 8]}\nbody:\n  - maxpool: {kernel: 2, padding: 2}\n", "padding: ^2",
         "padding 2 must be at most half the kernel 2"),
        ("input: {shape: [4]}\nbody:\n  - repeat: {times: 0, body: [relu]}\n", "0,",
         "'times' must be a positive integer, but 0"),
        ("input: {shape: [4, 2, 2, 2]}\nbody: []\n", "[4", "input shape [4, 2, 2, 2]"),
        ("input: {shape: [4]}\nbody:\n  - residual: {body: []}\n", "residual",
         "a residual needs a non-empty body"),
        ("input: {shape: [8], dtype: int64}\nbody:\n  - embedding: {vocab: 3, dim: 4}\n"
         "  - attention: {heads: 2, head_dim: 3, rope: true}\n", "head_dim: ^3",
         "rotary embedding needs an even head_dim"),
        ("input: {shape: [3, 8, 8]}\nbody:\n  - hamiltonian: {steps: 1, hidden: 2}\n",
         "hamiltonian", "needs an even count, got 3"),
        ("vars: {w: 2}\ninput: {shape: [4]}\nbody:\n  - linear: {out: wdth}\n", "wdth",
         "unknown name 'wdth' (known: w)"),
    ],
)  # fmt: skip
def test_other_refusals_carry_their_place(
    tmp_path: Path, text: str, needle: str, message: str
) -> None:
    path, err = refusal(tmp_path, text)
    assert err.startswith(where(path, needle) + ": ")
    assert message in err
