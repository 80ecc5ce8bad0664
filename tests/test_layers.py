"""Checks for morphspec.builder.layers against hand-written reference computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morphspec.builder.layers import (
    Attention,
    Flatten,
    GlobalAvgPool,
    Mlp,
    PositionEmbedding,
    Residual,
    RMSNorm,
    Sequence,
    activation,
    apply_rope,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _reference_attention(attn: Attention, x: Tensor, causal: bool = True) -> Tensor:
    """softmax(QK^T / sqrt(d)) V per head, written out with no torch attention helpers."""
    b, t, _ = x.shape
    h, d = attn.heads, attn.head_dim
    q = (x @ attn.q_proj.weight.T + attn.q_proj.bias).view(b, t, h, d).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T + attn.k_proj.bias).view(b, t, h, d).transpose(1, 2)
    v = (x @ attn.v_proj.weight.T + attn.v_proj.bias).view(b, t, h, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    out = scores.softmax(-1) @ v
    out = out.transpose(1, 2).reshape(b, t, h * d)
    return out @ attn.o_proj.weight.T + attn.o_proj.bias


def test_rmsnorm_matches_hand_computation() -> None:
    norm = RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(2, 3, 6)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert list(norm.state_dict()) == ["weight"]


def test_rmsnorm_half_input_keeps_dtype_and_is_finite() -> None:
    norm = RMSNorm(4)
    x = torch.full((1, 4), 300.0, dtype=torch.float16)  # x**2 overflows float16
    y = norm(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), torch.ones(1, 4), atol=1e-3, rtol=1e-3)


def test_position_embedding_adds_prefix_and_rejects_long_input() -> None:
    pe = PositionEmbedding(max_len=5, dim=4)
    assert pe.weight.shape == (5, 4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(pe(x), x + pe.weight[:3])
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.randn(1, 6, 4))


def test_attention_gqa_state_dict_keys_and_shapes() -> None:
    attn = Attention(dim=32, heads=4, head_dim=8, kv_heads=2)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "q_proj.weight": (32, 32),
        "q_proj.bias": (32,),
        "k_proj.weight": (16, 32),
        "k_proj.bias": (16,),
        "v_proj.weight": (16, 32),
        "v_proj.bias": (16,),
        "o_proj.weight": (32, 32),
        "o_proj.bias": (32,),
    }
    assert set(Attention(32, 4, 8, rope=True, bias=False).state_dict()) == {
        "q_proj.weight",
        "k_proj.weight",
        "v_proj.weight",
        "o_proj.weight",
    }


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_reference(causal: bool) -> None:
    attn = Attention(dim=16, heads=2, head_dim=8, kv_heads=2, causal=causal).eval()
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(attn(x), _reference_attention(attn, x, causal), atol=1e-5, rtol=1e-5)


def test_attention_is_causal() -> None:
    attn = Attention(dim=16, heads=2, head_dim=8).eval()
    x = torch.randn(1, 6, 16)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)
    y, y2 = attn(x), attn(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


@pytest.mark.parametrize("rope", [False, True])
def test_gqa_equals_mha_with_duplicated_kv(rope: bool) -> None:
    gqa = Attention(dim=32, heads=4, head_dim=8, kv_heads=2, rope=rope).eval()
    mha = Attention(dim=32, heads=4, head_dim=8, kv_heads=4, rope=rope).eval()
    d = gqa.head_dim

    def dup(t: Tensor) -> Tensor:
        # kv head j serves query heads 2j and 2j+1: repeat each head's rows in place.
        return t.view(2, d, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(4 * d, *t.shape[1:])

    with torch.no_grad():
        for name in ("q_proj", "o_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(gqa, name), getattr(mha, name)
            dst.weight.copy_(dup(src.weight))
            dst.bias.copy_(dup(src.bias))
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)


def test_rope_changes_output_except_at_length_one() -> None:
    plain = Attention(dim=16, heads=2, head_dim=8).eval()
    roped = Attention(dim=16, heads=2, head_dim=8, rope=True).eval()
    roped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 16)
    assert not torch.allclose(plain(x), roped(x), atol=1e-4)
    torch.testing.assert_close(plain(x[:, :1]), roped(x[:, :1]))


def test_rope_scores_depend_only_on_relative_position() -> None:
    t, d = 8, 6
    q = torch.randn(d).expand(1, t, d)  # the same vector at every position
    k = torch.randn(d).expand(1, t, d)
    qr, kr = apply_rope(q)[0], apply_rope(k)[0]
    scores = qr @ kr.T  # scores[m, n] = <rope(q, m), rope(k, n)>
    for m in range(t):
        for n in range(t):
            if m + 1 < t and n + 1 < t:
                torch.testing.assert_close(scores[m, n], scores[m + 1, n + 1])
    assert not torch.allclose(scores[0, 0], scores[0, 3])
    torch.testing.assert_close(qr.norm(dim=-1), q[0].norm(dim=-1))  # a rotation


def test_rope_rotate_half_convention() -> None:
    # Position 1, head_dim 2: one frequency (1.0), so the pair (x0, x1) turns by 1 radian.
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    out = apply_rope(x)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([math.cos(1.0), math.sin(1.0)]))


def test_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="multiple"):
        Attention(dim=16, heads=3, head_dim=4, kv_heads=2)
    with pytest.raises(ValueError, match="even"):
        Attention(dim=16, heads=2, head_dim=5, rope=True)


def test_mlp_ungated_matches_formula_and_keys() -> None:
    mlp = Mlp(dim=8, hidden=12, act="gelu")
    assert list(mlp.state_dict()) == [
        "up_proj.weight",
        "up_proj.bias",
        "down_proj.weight",
        "down_proj.bias",
    ]
    x = torch.randn(2, 3, 8)
    expected = F.linear(
        F.gelu(F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)),
        mlp.down_proj.weight,
        mlp.down_proj.bias,
    )
    torch.testing.assert_close(mlp(x), expected)


def test_mlp_gated_matches_swiglu_and_keys() -> None:
    mlp = Mlp(dim=8, hidden=12, act="silu", gated=True, bias=False)
    assert set(mlp.state_dict()) == {"up_proj.weight", "gate_proj.weight", "down_proj.weight"}
    x = torch.randn(2, 3, 8)
    gate = F.silu(x @ mlp.gate_proj.weight.T)  # type: ignore[union-attr]
    expected = (gate * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_activation_names() -> None:
    assert isinstance(activation("gelu"), nn.GELU)
    assert activation("gelu").approximate == "none"
    assert activation("leaky_relu", 0.2).negative_slope == 0.2
    for name in ("relu", "silu", "tanh", "sigmoid", "identity"):
        assert isinstance(activation(name), nn.Module)
    with pytest.raises(ValueError, match="swish"):
        activation("swish")


def test_pools() -> None:
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(GlobalAvgPool()(x), x.mean(dim=(2, 3)))
    assert Flatten()(x).shape == (2, 60)


def _basic_block() -> Residual:
    return Residual(
        body=[
            ("conv1", nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)),
            ("bn1", nn.BatchNorm2d(8)),
            ("relu", nn.ReLU()),
            ("conv2", nn.Conv2d(8, 8, 3, padding=1, bias=False)),
            ("bn2", nn.BatchNorm2d(8)),
        ],
        shortcut=(
            "downsample",
            Sequence([("0", nn.Conv2d(4, 8, 1, stride=2, bias=False)), ("1", nn.BatchNorm2d(8))]),
        ),
        post=[("post", nn.ReLU())],
    )


def test_residual_keys_sit_directly_under_it() -> None:
    block = _basic_block()
    keys = list(block.state_dict())
    assert "conv1.weight" in keys and "bn2.running_var" in keys
    assert "downsample.0.weight" in keys and "downsample.1.num_batches_tracked" in keys
    assert not any(k.startswith(("body.", "shortcut.")) for k in keys)
    # Nested in a Sequence the keys look like torchvision's ResNet.
    outer = Sequence([("layer2", Sequence([("0", block)]))])
    assert "layer2.0.downsample.0.weight" in outer.state_dict()


def test_residual_forward_is_post_of_body_plus_shortcut() -> None:
    block = _basic_block().eval()
    x = torch.randn(2, 4, 6, 6)
    body = nn.Sequential(
        *(block.get_submodule(n) for n in ("conv1", "bn1", "relu", "conv2", "bn2"))
    )
    shortcut = block.get_submodule("downsample")
    torch.testing.assert_close(block(x), torch.relu(body(x) + shortcut(x)))


def test_residual_identity_shortcut_and_digit_names() -> None:
    lin = nn.Linear(4, 4)
    block = Residual(body=[("0", lin), ("1", nn.Tanh())])
    assert list(block.state_dict()) == ["0.weight", "0.bias"]
    x = torch.randn(3, 4)
    torch.testing.assert_close(block(x), torch.tanh(lin(x)) + x)
    with pytest.raises(ValueError, match="duplicate"):
        Residual(body=[("a", nn.ReLU()), ("a", nn.Tanh())])


def test_sequence_keeps_names_and_order() -> None:
    seq = Sequence([("fc", nn.Linear(3, 4)), ("1", nn.ReLU()), ("out", nn.Linear(4, 2))])
    assert list(seq.state_dict()) == ["fc.weight", "fc.bias", "out.weight", "out.bias"]
    x = torch.randn(2, 3)
    fc, out = seq.get_submodule("fc"), seq.get_submodule("out")
    torch.testing.assert_close(seq(x), out(torch.relu(fc(x))))
    assert seq[2] is out  # positional indexing still works, as in nn.Sequential
