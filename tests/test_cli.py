"""The command line, as a user runs it."""

import subprocess
import sys

import anndata as ad
import pytest
import numpy as np

from atacformer.cli import main
from atacformer.tokenizers import tokenize_fragments
from atacformer.vocab import Vocabulary


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "atacformer.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("tokenize", "demo"):
        assert cmd in out


def test_tokenize_command_does_not_import_the_model_stack(tmp_path, data_dir):
    """``atacformer tokenize`` to .h5ad never imports torch, anndata or scikit-learn, nor the
    universe builders: building the parser of every subcommand stays cheap (a regression cost
    the atlas CLI 10 s, the universe builders 0.3 s)."""
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    code = ("import sys; from atacformer.cli import main; "
            f"rc = main(['tokenize', {str(frag)!r}, '--genome', 'hg38', '-o', {str(tmp_path / 'c.h5ad')!r}]); "
            "print(rc, sorted(m for m in ('torch', 'anndata', 'sklearn', 'scanpy', "
            "'atacformer.vocab.universe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []"


def test_tokenize_to_h5ad_matches_api(tmp_path, data_dir):
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    out = tmp_path / "cells.h5ad"
    assert main(["tokenize", str(frag), "--genome", "hg38", "--bins", "5000", "--min-fragments", "100",
                 "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    ref = tokenize_fragments(frag, Vocabulary.from_bins("hg38", 5000), min_fragments=100, progress=False)
    assert list(a.obs_names) == list(ref.barcodes)
    assert (a.X != ref.X).nnz == 0
    assert list(a.var.columns[:3]) == ["chrom", "start", "end"] and a.var_names[0] == "chr1:0-5000"


def test_tokenize_universe_and_bed_and_corpus(tmp_path, data_dir):
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    peaks = data_dir / "fragments_macs3_chr22_100cells/macs3_callpeak_frag_peaks.narrowPeak"
    out = tmp_path / "u.h5ad"
    assert main(["tokenize", str(frag), "--universe", str(peaks), "--barcodes",
                 str(data_dir / "fragments_macs3_chr22_100cells/barcodes.txt"), "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    assert a.n_vars == 1455 and a.X.nnz > 0
    beds = [data_dir / "bulk_peaks_encode_roadmap_hg38" / n for n in
            ("test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz", "geniml_bedbase_samples_hg38/Example1.bed")]
    assert main(["tokenize", *map(str, beds), "--genome", "hg38", "-o", str(tmp_path / "bulk.h5ad")]) == 0
    b = ad.read_h5ad(tmp_path / "bulk.h5ad")
    assert b.n_obs == 2 and np.all(np.diff(b.X.indptr) > 0)
    corpus = tmp_path / "corpus"
    assert main(["tokenize", str(frag), "--genome", "hg38", "-o", str(corpus)]) == 0
    assert main(["tokenize", str(data_dir / "muon_pbmc_multiome_fragments_hg38/test_rna_atac_fragments.tsv.gz"),
                 "--genome", "hg38", "-o", str(corpus)]) == 0
    from atacformer.corpus import Corpus

    c = Corpus.open(corpus)
    assert len(c) == 100 + 24508


def test_mouse_peaks_against_hg38_are_refused(data_dir, capsys):
    """The ENCODE 'ppr.overlap' set is mm10: its chr19 runs past hg38's chr19."""
    bed = data_dir / "bulk_peaks_encode_roadmap_hg38/ppr.overlap.bfilt.narrowPeak.gz"
    assert main(["tokenize", str(bed), "--genome", "hg38", "-o", "unused.h5ad"]) == 2
    assert "looks like mm10" in capsys.readouterr().err


def test_embed_cli_with_a_saved_model(tmp_path, data_dir):
    """tokenize with the model's own vocabulary -> embed -> obsm['X_atacformer'] equals the API."""
    import torch

    from atacformer.models import AtacformerConfig, AtacformerForReplacedTokenDetection, embed_cells

    peaks = data_dir / "fragments_macs3_chr22_100cells/macs3_callpeak_frag_peaks.narrowPeak"
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    vocab = Vocabulary.from_bed(peaks, genome="hg38")
    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    model = AtacformerForReplacedTokenDetection(cfg, vocab=vocab)
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "emb.h5ad"
    assert main(["embed", str(tmp_path / "model"), str(frag), "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    cells = tokenize_fragments(frag, vocab, progress=False)
    want = embed_cells(model, cells.X)
    assert a.obsm["X_atacformer"].shape == (100, 32)
    np.testing.assert_allclose(a.obsm["X_atacformer"], want, rtol=1e-5, atol=1e-6)
    # the tokenized h5ad it wrote is itself a valid input (already in the model's vocabulary)
    out2 = tmp_path / "emb2.h5ad"
    assert main(["embed", str(tmp_path / "model"), str(out), "-o", str(out2)]) == 0
    np.testing.assert_allclose(ad.read_h5ad(out2).obsm["X_atacformer"], want, rtol=1e-5, atol=1e-6)


def test_embed_cli_with_a_geniml_folder(tmp_path, data_dir):
    """`atacformer embed` on a geniml checkpoint folder gives geniml's own embeddings."""
    import gzip

    import torch

    geniml_af = pytest.importorskip("geniml.atacformer", reason="geniml (with transformers < 5) is not installed")
    h5 = data_dir / "geniml_pbmc_hg38_tiny/pbmc_hg38.h5ad"
    a = ad.read_h5ad(h5)
    vocab = Vocabulary(a.var["chr"].to_numpy(), a.var["start"].to_numpy(), a.var["end"].to_numpy())
    n = vocab.n_regions
    cfg = geniml_af.AtacformerConfig(vocab_size=n + 7, pad_token_id=n + 1, cls_token_id=n + 3, eos_token_id=n + 4,
                                     bos_token_id=n + 5, sep_token_id=n + 6, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                                     use_pos_embeddings=False)
    torch.manual_seed(0)
    gm = geniml_af.AtacformerForReplacedTokenDetection(cfg).eval()
    gm.save_pretrained(tmp_path / "g")
    with gzip.open(tmp_path / "g" / "universe.bed.gz", "wt") as f:
        for c, s, e in zip(vocab.chroms, vocab.starts, vocab.ends):
            f.write(f"{c}\t{s}\t{e}\n")
    out = tmp_path / "emb.h5ad"
    assert main(["embed", str(tmp_path / "g"), str(h5), "-o", str(out)]) == 0
    got = ad.read_h5ad(out).obsm["X_atacformer"]
    # geniml's path: the cell's non-zero peaks are its tokens (the universe is the peak set)
    cells = [np.sort(a.X[i].indices).tolist() for i in range(a.n_obs)]
    want = gm.encode_tokenized_cells(cells).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
