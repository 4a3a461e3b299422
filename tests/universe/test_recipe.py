"""The universe recipe from cells end to end, then tokenize and pretrain on it; and the
``atacformer universe`` commands as a user runs them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atacformer.cli import main
from atacformer.genome import get_genome
from atacformer.io.bed import read_bed
from atacformer.vocab import Vocabulary
from atacformer.vocab.universe import CoverageTracks, cc, hmm
from atacformer.vocab.universe.recipe import from_cells, merge_universes

PB = "archr_pbsmall_fragments_labeled"


@pytest.fixture(scope="module")
def pbsmall(data_dir):
    return data_dir / PB / "PBSmall.tsv.gz", data_dir / PB / "cell_labels.tsv"


@pytest.fixture(scope="module")
def recipe(pbsmall, tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    u = from_cells(pbsmall[0], work / "universe.bed.gz", genome="hg19", groupby=pbsmall[1], min_fragments=100,
                   workdir=work / "work", progress=False)
    return u, work


def _bases(regions: pd.DataFrame, chrom: str, L: int) -> np.ndarray:
    m = np.zeros(L, bool)
    for s, e in zip(regions.loc[regions["chrom"] == chrom, "start"], regions.loc[regions["chrom"] == chrom, "end"]):
        m[s:e] = True
    return m


def test_from_cells_is_the_merge_of_cc_and_hmm(recipe):
    u, work = recipe
    peaks = sorted((work / "work" / "peaks").glob("*_peaks.narrowPeak"))
    assert [p.name.split("_peaks")[0] for p in peaks] == ["B_cell", "Monocyte", "T_cell"]
    cov = CoverageTracks.from_beds(peaks, genome="hg19", clip=True)
    parts = [cc(cov), hmm(cov)]
    L = get_genome("hg19").chrom_sizes
    written = read_bed(work / "universe.bed.gz")
    assert len(written) == len(u) > 500
    for chrom in sorted(set(written["chrom"])):
        want = _bases(parts[0].regions, chrom, L[chrom]) | _bases(parts[1].regions, chrom, L[chrom])
        got = _bases(written, chrom, L[chrom])
        np.testing.assert_array_equal(got, want)
        # the default cutoff is below one peak set here: every called peak base is in the universe
        for p in peaks:
            assert not (_bases(read_bed(p), chrom, L[chrom]) & ~got).any()
    # merged: sorted, non-overlapping, not touching
    for _, r in written.groupby("chrom"):
        assert (r["start"].to_numpy()[1:] > r["end"].to_numpy()[:-1]).all()
    assert (work / "work" / "coverage" / "all_core.bw").exists()


def test_tokenize_and_pretrain_on_the_universe(recipe, pbsmall, tmp_path):
    from atacformer.models import load_model
    from atacformer.tokenizers import tokenize_fragments
    from atacformer.tools import embed
    from atacformer.train import TrainConfig, pretrain

    u, work = recipe
    vocab = Vocabulary.from_bed(work / "universe.bed.gz", genome="hg19")
    assert vocab.n_regions == len(u)
    labels = pd.read_csv(pbsmall[1], sep="\t")
    cells = tokenize_fragments(pbsmall[0], vocab, barcodes=list(labels.iloc[:, 0]), progress=False)
    a = cells.to_anndata()
    assert a.n_vars == vocab.n_regions and (np.asarray(a.X.sum(1)).ravel() > 0).mean() > 0.9
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=4, batch_size=16, progress=False, tensorboard=False,
                      model_overrides={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32})
    model = load_model(pretrain(cfg, data=a)["model_dir"])
    embed(a, model, batch_size=32, progress=False)
    X = a.obsm["X_atacformer"]
    assert X.shape[0] == a.n_obs and np.isfinite(X).all()


def test_merge_universes_matches_brute_force(recipe):
    u, work = recipe
    cov = CoverageTracks.from_beds(sorted((work / "work" / "peaks").glob("*.narrowPeak")), genome="hg19", clip=True)
    a, b = cc(cov, 2), hmm(cov)
    m = merge_universes(a, b)
    L = get_genome("hg19").chrom_sizes
    for chrom in set(m.regions["chrom"]):
        np.testing.assert_array_equal(_bases(m.regions, chrom, L[chrom]),
                                      _bases(a.regions, chrom, L[chrom]) | _bases(b.regions, chrom, L[chrom]))


def test_matrix_route(data_dir, tmp_path):
    u = from_cells(data_dir / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad", None,
                   genome="hg19", groupby="cell_type", progress=False)
    assert len(u) > 10_000 and u.method == "cc+hmm"


# -- the commands -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beds(data_dir):
    return sorted(str(p) for p in (data_dir / "bulk_peaks_encode_roadmap_hg38" / "geniml_bedbase_samples_hg38").glob("*.bed"))


def test_cli_build(beds, tmp_path, capsys):
    out = tmp_path / "u.bed.gz"
    assert main(["universe", "build", *beds, "--method", "hmm", "--genome", "hg38", "-o", str(out),
                 "--coverage-dir", str(tmp_path / "cov")]) == 0
    u = read_bed(out)
    assert len(u) > 0 and (tmp_path / "cov" / "all_start.bw").exists()
    before = out.read_bytes()
    # an existing output is kept without --overwrite
    assert main(["universe", "build", *beds, "--method", "union", "--genome", "hg38", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    # a cutoff above the number of files: an error, nothing written
    bad = tmp_path / "cc.bed"
    assert main(["universe", "build", *beds, "--method", "cc", "--cutoff", str(len(beds) + 1), "--genome", "hg38",
                 "-o", str(bad)]) == 2
    assert "above the number of region sets" in capsys.readouterr().err and not bad.exists()
    # a chromosome outside the genome: the file, line and value; nothing written
    odd = tmp_path / "odd.bed"
    odd.write_text("chr1\t10\t20\nchrQ\t10\t20\n")
    assert main(["universe", "build", beds[0], str(odd), "--method", "union", "--genome", "hg38",
                 "-o", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "odd.bed, line 2" in err and "chrQ" in err and not bad.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_from_cells(pbsmall, tmp_path, capsys):
    out = tmp_path / "pb.bed"
    assert main(["universe", "from-cells", str(pbsmall[0]), "--genome", "hg19", "--groupby", str(pbsmall[1]),
                 "--min-fragments", "100", "-o", str(out)]) == 0
    assert len(read_bed(out)) > 500
    assert "regions" in capsys.readouterr().err


def test_cli_assess(beds, tmp_path, capsys):
    u = tmp_path / "u.bed"
    assert main(["universe", "build", *beds, "--method", "ccf", "--genome", "hg38", "-o", str(u)]) == 0
    rep = tmp_path / "report.tsv"
    assert main(["universe", "assess", str(u), *beds, "--genome", "hg38", "-o", str(rep)]) == 0
    t = pd.read_csv(rep, sep="\t", comment="#")
    assert len(t) == len(beds) and t["f10"].between(0, 1).all() and "rbs_flex" in t
    assert "likelihood" in rep.read_text().split("\n", 3)[0] + rep.read_text()
    err = capsys.readouterr().err
    assert "f10" in err
    # the report is kept without --overwrite
    before = rep.read_bytes()
    assert main(["universe", "assess", str(u), *beds, "--genome", "hg38", "-o", str(rep)]) == 2
    assert rep.read_bytes() == before
