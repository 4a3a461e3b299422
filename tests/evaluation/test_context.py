"""Context robustness of cell embeddings on real cells (BM0828, an initialised model).

Counts are checked against the tokenized matrix itself and embeddings against a forward
pass of the model on each cell's whole token list, not against numbers the code produced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from atacformer.evaluation import (context_robustness, load_labelled_sets, plot_context_robustness,
                                   tokenize_sets)
from atacformer.metrics._evaluate import COLUMNS

SMALL = 1024  # most BM0828 cells are longer (median ~2,000 tokens, shortest ~300); some are not


@pytest.fixture(scope="module")
def bm0828(data_dir, tmp_path_factory):
    """200 labelled BM0828 cells in their peaks and the profile model at initialisation."""
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    sets = load_labelled_sets(data_dir, ["BM0828"], max_cells=200)
    tok = tokenize_sets(sets)["BM0828"][0]
    out = tmp_path_factory.mktemp("ctx")
    pretrain(TrainConfig(out=str(out), max_steps=0, progress=False, tensorboard=False), data=tok)
    yield tok, load_model(out / "model")


@pytest.fixture(scope="module")
def lengths(bm0828):
    x = bm0828[0].X
    return np.asarray((x.toarray() if sp.issparse(x) else x) != 0).sum(1)  # tokens per cell


@pytest.fixture(scope="module")
def run(bm0828, lengths):
    tok, model = bm0828
    above = int(lengths.max()) + 1
    table = context_robustness(tok, model, (SMALL, above), key_added="X_ctx")
    return table, above


def test_one_row_per_context(run, bm0828):
    table, above = run
    assert list(table["context"]) == [above, SMALL]  # largest first
    assert set(COLUMNS) <= set(table.columns)
    assert table[["leiden_ari", "leiden_nmi", "kmeans_ari", "embed_seconds"]].notna().all().all()
    assert (table["model_context"] == bm0828[1].config.max_length).all()


def test_context_above_longest_cell_is_the_full_embedding(run, bm0828, lengths):
    table, above = run
    tok, model = bm0828
    row = table.set_index("context").loc[above]
    assert row.frac_truncated == 0
    assert row.cosine_median == pytest.approx(1, abs=1e-6) and row.cosine_p05 == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(tok.obsm[f"X_ctx_{above}"], tok.obsm["X_ctx_full"], atol=1e-6)
    # the reference is each cell's whole token list through the model, unit length (profile recipe)
    x = sp.csr_matrix(tok.X)
    for i in np.argsort(-lengths)[:3]:
        ids = torch.from_numpy(np.sort(x.indices[x.indptr[i]: x.indptr[i + 1]]).astype(np.int64))[None]
        with torch.inference_mode():
            e = model.eval().embed(ids, torch.ones_like(ids, dtype=torch.bool))[0].numpy()
        e = e / np.linalg.norm(e)
        ref = tok.obsm["X_ctx_full"][i]
        assert float(e @ ref / np.linalg.norm(ref)) == pytest.approx(1, abs=1e-6)


def test_small_context_truncates_the_longer_cells(run, bm0828, lengths):
    table, _ = run
    tok, _ = bm0828
    row = table.set_index("context").loc[SMALL]
    longer = lengths > SMALL
    assert 0 < longer.sum() < len(lengths)  # the check below sees both kinds of cell
    assert row.frac_truncated == pytest.approx(longer.mean())
    assert row.median_tokens == np.median(np.minimum(lengths, SMALL))
    a, b = tok.obsm[f"X_ctx_{SMALL}"], tok.obsm["X_ctx_full"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(cos[~longer], 1, atol=1e-6)  # short cells are embedded whole
    assert np.all(cos[longer] < 1 - 1e-4)  # long ones from a subset
    assert row.cosine_median == pytest.approx(np.median(cos), abs=1e-6)


def test_plot_is_a_png(run, tmp_path):
    table, _ = run
    both = pd.concat([table.assign(model="a"), table.assign(model="b")], ignore_index=True)
    path = tmp_path / "sub" / "context.png"
    plot_context_robustness(both, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["context.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="leiden_ari"):
        plot_context_robustness(table.drop(columns="leiden_ari"), tmp_path / "bad.png")


@pytest.mark.parametrize("bad", [0, -512, 1.5, "512", True, ()])
def test_bad_contexts_raise(bm0828, bad):
    tok, model = bm0828
    with pytest.raises(ValueError, match="context"):
        context_robustness(tok, model, bad if isinstance(bad, tuple) else (4096, bad))


def test_context_beyond_a_position_table_is_refused(bm0828):
    from atacformer.models import AtacformerModel
    from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig

    tok, _ = bm0828
    n = tok.n_vars
    cfg = AtacformerConfig(vocab_size=n + 7, n_regions=n, pad_token_id=n + 1, cls_token_id=n + 3, hidden_size=16,
                           num_layers=0, num_heads=2, intermediate_size=32, max_length=256,
                           use_position_embeddings=True)
    with pytest.raises(ValueError, match="position table"):
        context_robustness(tok, AtacformerModel(cfg), (512, 128))


def test_cosines_ignore_depth_removal(bm0828, lengths):
    """A model that removes depth directions is scored on its PCA coordinates, but its
    cosines compare raw embeddings (a PCA fitted per context has its own axes)."""
    import copy

    from atacformer import tools as tl

    tok, model = bm0828
    model = copy.deepcopy(model)
    model.config.remove_depth = True
    table = context_robustness(tok, model, (SMALL,), key_added="X_depth")
    raw = {c: tl.embed(tok, model, max_length=c, remove_depth=False, copy=True).obsm["X_atacformer"]
           for c in (SMALL, int(lengths.max()))}
    a, b = raw[SMALL], raw[int(lengths.max())]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert table.cosine_median.iloc[0] == pytest.approx(np.median(cos), abs=1e-6)
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert not np.allclose(tok.obsm[f"X_depth_{SMALL}"], unit, atol=1e-3)  # the scored one: PCA coordinates
