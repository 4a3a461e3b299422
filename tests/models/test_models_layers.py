"""The SDPA encoder block against PyTorch's own layers and a brute-force attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atacformer.models._layers import (
    CrossAttentionBlock, Encoder, EncoderBlock, MultiHeadAttention, key_padding_mask, mean_pool,
)


def _copy_from_torch(block: EncoderBlock, ref: nn.TransformerEncoderLayer) -> None:
    with torch.no_grad():
        block.self_attn.qkv.weight.copy_(ref.self_attn.in_proj_weight)
        block.self_attn.qkv.bias.copy_(ref.self_attn.in_proj_bias)
        for name in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            src, dst = ref.get_submodule(name), block.get_submodule(name)
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


@pytest.mark.parametrize("norm_first,act", [(False, "relu"), (True, "gelu")])
def test_block_matches_torch_transformer_layer(norm_first, act):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, activation=act, batch_first=True,
                                     norm_first=norm_first).eval()
    block = EncoderBlock(32, 4, 64, dropout=0.1, activation_fn=act, norm_first=norm_first).eval()
    _copy_from_torch(block, ref)
    x = torch.randn(3, 7, 32)
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 4:] = False
    keep[2, 2:] = False
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=~keep)
        got = block(x, key_padding_mask(keep))
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)


def test_post_ln_encoder_matches_torch_encoder():
    """The geniml backbone is nn.TransformerEncoder of default post-LN ReLU layers."""
    torch.manual_seed(1)
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    enc = Encoder(2, 32, 4, 64, activation_fn="relu", norm_first=False).eval()
    for b, r in zip(enc.layers, ref.layers):
        _copy_from_torch(b, r)
    x = torch.randn(2, 9, 32)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[0, 5:] = False
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=~keep)
        got = enc(x, keep)
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)


def test_attention_matches_brute_force():
    torch.manual_seed(2)
    att = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        got = att(x, key_padding_mask(keep))
        q, k, v = att.qkv(x).split(16, dim=-1)
        out = torch.empty(2, 5, 16)
        for b in range(2):
            for h in range(2):
                sl = slice(8 * h, 8 * h + 8)
                s = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(8)
                s[:, ~keep[b]] = -math.inf
                out[b, :, sl] = torch.softmax(s, -1) @ v[b, :, sl]
        want = att.out_proj(out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mask_none_without_padding_and_no_nan_for_empty_rows():
    assert key_padding_mask(torch.ones(2, 4, dtype=torch.bool)) is None
    enc = Encoder(1, 16, 2, 32).eval()
    keep = torch.tensor([[True, True, False], [False, False, False]])
    with torch.no_grad():
        h = enc(torch.randn(2, 3, 16), keep)
    assert torch.isfinite(h).all()
    assert torch.equal(mean_pool(h, keep)[1], torch.zeros(16))


def test_cross_attention_queries_are_independent():
    torch.manual_seed(3)
    block = CrossAttentionBlock(16, 2, 32).eval()
    mem = torch.randn(1, 6, 16)
    q = torch.randn(1, 4, 16)
    q2 = q.clone()
    q2[0, 1:] = torch.randn(3, 16)  # change every query but the first
    with torch.no_grad():
        a, b = block(q, mem), block(q2, mem)
    torch.testing.assert_close(a[0, 0], b[0, 0])
