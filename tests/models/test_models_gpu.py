"""GPU: bf16 and the flash / memory-efficient SDPA kernels (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atacformer.models import (
    AtacformerConfig, AtacformerForReplacedTokenDetection, MaskedBinForPretraining,
    ReplacedTokenCollator, embed_cells,
)

pytestmark = pytest.mark.gpu

SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_atacformer_flash_kernel_bf16(tiny_vocab, random_cells):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(tiny_vocab, **SMALL)
    model = AtacformerForReplacedTokenDetection(cfg, vocab=tiny_vocab).eval()
    want = embed_cells(model, random_cells)  # CPU, fp32
    model.cuda()
    ids = torch.randint(0, 100, (4, 64), device="cuda")
    with torch.no_grad():
        ref = model.atacformer(ids).float()
        # an unpadded batch passes no mask, so the flash kernel alone must do
        with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            got = model.atacformer(ids, torch.ones_like(ids, dtype=torch.bool)).float()
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.05)
    # a padded batch runs with the memory-efficient kernel and the padding mask
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        emb = embed_cells(model, random_cells, dtype=torch.bfloat16)
    assert _cos(emb, want).min() > 0.995
    # one bf16 training step
    model.train()
    batch = {k: v.cuda() for k, v in ReplacedTokenCollator(cfg, seed=0)(random_cells).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("decoder", ["mlp", "cross_attention"])
def test_masked_bin_bf16(tiny_vocab, random_cells, decoder):
    torch.manual_seed(0)
    model = MaskedBinForPretraining.from_vocab(tiny_vocab, decoder=decoder, embedding_dim=16,
                                               decoder_dim=16, decoder_chunk_size=33, **SMALL).eval()
    want = embed_cells(model, random_cells)
    model.cuda()
    emb = embed_cells(model, random_cells, dtype=torch.bfloat16)
    assert _cos(emb, want).min() > 0.995
    model.train()
    batch = {k: v.cuda() for k, v in model.collator(seed=0)(random_cells).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    # pure bf16 weights work too (the cross-entropy runs in fp32)
    model.to(torch.bfloat16)
    with torch.no_grad():
        out16 = model(**batch)
    assert torch.isfinite(out16.loss) and abs(out16.loss.item() - out.loss.item()) < 0.1
