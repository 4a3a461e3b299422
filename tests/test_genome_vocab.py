"""Genomes and vocabularies."""

import numpy as np
import pytest

from atacformer.errors import GenomeMismatchError, VocabularyMismatchError
from atacformer.genome import get_genome, normalize_chrom
from atacformer.vocab import Vocabulary


def test_normalisation():
    assert [normalize_chrom(c) for c in ["1", "chr1", "X", "MT", "M", "chrMT", "chrUn_KI270742v1", "KI270742.1"]] == \
        ["chr1", "chr1", "chrX", "chrM", "chrM", "chrM", "chrUn_KI270742v1", "KI270742.1"]


@pytest.mark.parametrize("name,n_chrom,chr1", [("hg38", 25, 248956422), ("hg19", 25, 249250621),
                                               ("mm10", 22, 195471971), ("mm39", 22, 195154279)])
def test_builtin_genomes(name, n_chrom, chr1):
    g = get_genome(name)
    assert len(g.chroms) == n_chrom and g.length("1") == chr1


def test_chrom_sizes_file_and_errors(tmp_path, data_dir):
    g = get_genome(data_dir / "genome_annotations/hg38/hg38.chrom.sizes")
    assert g.length("chr1") == get_genome("hg38").length("chr1")
    bad = tmp_path / "bad.sizes"
    bad.write_text("chr1\t100\nchr2\tabc\n")
    with pytest.raises(ValueError, match="line 2.*abc"):
        get_genome(bad)
    with pytest.raises(ValueError, match="unknown genome"):
        get_genome("hg99")
    with pytest.raises(GenomeMismatchError, match="chr23"):
        get_genome("hg38").check_intervals(np.array(["chr23"]), np.array([5]))


def test_bins_count_independent():
    g = get_genome("hg38")
    want = sum(-(-g.length(c) // 5000) for c in [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY"])
    v = Vocabulary.from_bins("hg38", 5000)
    assert v.n_regions == want == 617665
    assert v.ends[-1] == g.length("chrY")
    assert len(v) == want + 7 and v.token_id("<unk>") == want


def test_save_load_hash(tmp_path, data_dir):
    v = Vocabulary.from_bed(data_dir / "fragments_macs3_chr22_100cells/macs3_callpeak_frag_peaks.narrowPeak",
                            genome="hg38").with_chrom_eos()
    v.save(tmp_path / "v")
    w = Vocabulary.load(tmp_path / "v")
    assert w == v and w.hash == v.hash and w.special_tokens[-1] == "<eos_chr22>"
    assert Vocabulary.from_bins("hg19", 5000).hash != Vocabulary.from_bins("hg38", 5000).hash
    with pytest.raises(VocabularyMismatchError):
        Vocabulary.from_bins("hg19", 5000).check_same(v)


def test_geniml_style_universe_loads_unchanged(tmp_path, data_dir):
    """A folder holding only universe.bed.gz (as geniml models ship) loads with gtars' specials."""
    import gzip
    import shutil

    src = data_dir / "bulk_peaks_encode_roadmap_hg38/test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz"
    (tmp_path / "m").mkdir()
    shutil.copy(src, tmp_path / "m" / "universe.bed.gz")
    v = Vocabulary.load(tmp_path / "m")
    with gzip.open(src, "rt") as f:
        n = len({tuple(ln.split("\t")[:3]) for ln in f})
    assert v.n_regions == n and v.special_tokens[:4] == ["<unk>", "<pad>", "<mask>", "<cls>"]
