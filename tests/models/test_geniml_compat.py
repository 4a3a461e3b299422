"""Published geniml Atacformer checkpoints load unchanged and embed cells as geniml does.

geniml itself (a test-only dependency) builds and saves the checkpoints; skipped without it.
"""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest
import torch

geniml_af = pytest.importorskip("geniml.atacformer", reason="geniml (with transformers < 5) is not installed")

from atacformer.errors import VocabularyMismatchError  # noqa: E402
from atacformer.models import (  # noqa: E402
    AtacformerForReplacedTokenDetection, AtacformerModel, as_token_lists, embed_cells, load_model,
)


def _geniml_config(vocab, use_pos):
    n = vocab.n_regions  # gtars layout: <unk>, <pad>, <mask>, <cls>, <eos>, <bos>, <sep>
    return geniml_af.AtacformerConfig(
        vocab_size=n + 7, pad_token_id=n + 1, cls_token_id=n + 3, eos_token_id=n + 4,
        bos_token_id=n + 5, sep_token_id=n + 6, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
        use_pos_embeddings=use_pos)


def _save_with_universe(model, vocab, path):
    """A geniml model folder: save_pretrained + the universe BED the tokenizer was built on."""
    model.save_pretrained(path)
    with gzip.open(path / "universe.bed.gz", "wt") as f:
        for c, s, e in zip(vocab.chroms, vocab.starts, vocab.ends):
            f.write(f"{c}\t{s}\t{e}\n")


def _geniml_embeddings(backbone, cells):
    """geniml's own cell embeddings (encode_tokenized_cells: mean over non-pad tokens)."""
    wrapper = geniml_af.AtacformerForReplacedTokenDetection(backbone.config)
    wrapper.atacformer = backbone
    wrapper.eval()
    out = wrapper.encode_tokenized_cells([c.tolist() for c in cells], batch_size=7)
    return out.numpy()


@pytest.mark.parametrize("use_pos", [False, True])
def test_geniml_backbone_embeddings_agree(tmp_path, pbmc, use_pos):
    vocab, x, _ = pbmc
    cells = as_token_lists(x)
    torch.manual_seed(0)
    gm = geniml_af.AtacformerModel(_geniml_config(vocab, use_pos)).eval()
    _save_with_universe(gm, vocab, tmp_path / "g")
    want = _geniml_embeddings(gm, cells)
    assert np.ptp(want, axis=0).max() > 0.1  # cells differ: agreement to 1e-5 means something

    model = load_model(tmp_path / "g")
    assert type(model) is AtacformerModel
    assert model.config.use_position_embeddings is use_pos and not model.config.norm_first
    assert model.vocab.region_hash() == vocab.region_hash()
    got = embed_cells(model, cells, batch_size=5)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if not use_pos:  # without positions, batching and padding do not matter
        got1 = embed_cells(model, x, batch_size=1)
        np.testing.assert_allclose(got1, want, atol=1e-5, rtol=1e-5)


def test_geniml_rtd_checkpoint_agrees(tmp_path, pbmc, caplog):
    vocab, x, _ = pbmc
    cells = as_token_lists(x)
    torch.manual_seed(1)
    gm = geniml_af.AtacformerForReplacedTokenDetection(_geniml_config(vocab, False)).eval()
    _save_with_universe(gm, vocab, tmp_path / "g")

    model = load_model(tmp_path / "g")
    assert type(model) is AtacformerForReplacedTokenDetection
    np.testing.assert_allclose(embed_cells(model, cells), gm.encode_tokenized_cells(
        [c.tolist() for c in cells]).numpy(), atol=1e-5, rtol=1e-5)
    batch = model.prepare_inputs(cells)
    with torch.no_grad():
        want = gm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = model(**batch).logits
    keep = batch["attention_mask"]
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
    # the backbone alone from the same folder (the head is dropped)
    with caplog.at_level(logging.INFO):
        base = AtacformerModel.from_pretrained(tmp_path / "g")
    np.testing.assert_allclose(embed_cells(base, cells), embed_cells(model, cells), atol=1e-6)
    # and the converted model round-trips through our own folder format
    model.save_pretrained(tmp_path / "ours")
    again = load_model(tmp_path / "ours")
    np.testing.assert_array_equal(embed_cells(again, cells), embed_cells(model, cells))


def test_geniml_folder_with_another_universe_is_refused(tmp_path, pbmc):
    vocab, _, _ = pbmc
    gm = geniml_af.AtacformerModel(_geniml_config(vocab, False))
    _save_with_universe(gm, vocab, tmp_path / "g")
    with gzip.open(tmp_path / "g" / "universe.bed.gz", "wt") as f:  # one region short
        for c, s, e in zip(vocab.chroms[:-1], vocab.starts[:-1], vocab.ends[:-1]):
            f.write(f"{c}\t{s}\t{e}\n")
    with pytest.raises(VocabularyMismatchError, match="vocab_size 1,007"):
        load_model(tmp_path / "g")


def test_a_geniml_folder_fine_tunes_with_lora(tmp_path, pbmc):
    """``init_from`` a geniml checkpoint: its vocabulary tokenizes the cells, its weights are the
    base, LoRA trains adapters only, and the fine-tuned folder embeds like geniml before
    the adapters moved (they start at zero)."""
    import anndata as ad
    import pandas as pd

    from atacformer.train import TrainConfig, pretrain

    vocab, x, labels = pbmc
    torch.manual_seed(2)
    gm = geniml_af.AtacformerForReplacedTokenDetection(_geniml_config(vocab, False)).eval()
    _save_with_universe(gm, vocab, tmp_path / "g")
    cells = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame({"cell_type": labels},
                                                               index=[f"c{i}" for i in range(x.shape[0])]),
                       var=vocab.to_dataframe())
    pretrain(TrainConfig(out=str(tmp_path / "ft0"), init_from=str(tmp_path / "g"), objective="triplet", lora_rank=2,
                         max_steps=0, progress=False, tensorboard=False), data=cells)
    tuned = load_model(tmp_path / "ft0" / "model")
    want = gm.encode_tokenized_cells([c.tolist() for c in as_token_lists(x)]).numpy()
    np.testing.assert_allclose(embed_cells(tuned, x), want, atol=1e-5, rtol=1e-5)
    pretrain(TrainConfig(out=str(tmp_path / "ft"), init_from=str(tmp_path / "g"), objective="triplet", lora_rank=2,
                         max_steps=3, batch_size=20, lr=1e-2, progress=False, tensorboard=False), data=cells)
    state = load_model(tmp_path / "ft" / "model").state_dict()
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())
