from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer._core.overlap import IntervalIndex, bin_span_pairs
from atacformer.errors import VocabularyMismatchError
from atacformer.genome import get_genome, normalize_chroms

log = logging.getLogger(__name__)

# gtars' order: a geniml Atacformer checkpoint expects these ids after the regions.
DEFAULT_SPECIAL_TOKENS = ("<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", "<sep>")
VOCAB_BED = "universe.bed.gz"
VOCAB_JSON = "vocab.json"


def _read_unique_regions(path) -> pd.DataFrame:
    from atacformer.io.bed import read_bed

    df = read_bed(path)
    dup = df.duplicated(["chrom", "start", "end"])
    if dup.any():
        log.info("%s: %d duplicate regions dropped (first occurrence kept)", path, int(dup.sum()))
        df = df[~dup].reset_index(drop=True)
    return df


class Vocabulary:
    """A fixed set of genomic regions plus special tokens.

    Parameters
    ----------
    chroms, starts, ends
        Region coordinates, 0-based half-open, in token-id order.
    special_tokens
        Names of the special tokens, in id order after the regions.
    genome
        Assembly name (or ``None`` when unknown).
    bin_size
        Set when the regions are the fixed-width tiling of ``genome``.

    Examples
    --------
    >>> v = Vocabulary.from_bins("hg38", 5000)
    >>> v.n_regions, v.token_id("<pad>") == v.n_regions + 1
    (617665, True)
    """

    def __init__(self, chroms, starts, ends, special_tokens=DEFAULT_SPECIAL_TOKENS,
                 genome: str | None = None, bin_size: int | None = None):
        self.chroms = np.asarray(normalize_chroms(chroms) if len(chroms) else [], dtype=object)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        if not (len(self.chroms) == len(self.starts) == len(self.ends)):
            raise ValueError("chroms, starts and ends differ in length")
        if len(self.starts) and (self.ends < self.starts).any():
            i = int(np.flatnonzero(self.ends < self.starts)[0])
            raise ValueError(f"region {i} has end < start: {self.chroms[i]}:{self.starts[i]}-{self.ends[i]}")
        self.special_tokens = list(special_tokens)
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError("special tokens must be unique")
        self.genome = genome
        self.bin_size = bin_size
        self._index: dict[str, tuple[np.ndarray, IntervalIndex]] | None = None
        self._hash: str | None = None
        self._region_hash: str | None = None
        self._chrom_offsets: dict[str, int] | None = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_bins(cls, genome="hg38", bin_size: int = 5000, chroms=None,
                  special_tokens=DEFAULT_SPECIAL_TOKENS) -> "Vocabulary":
        """Fixed-width tiling of a genome (default: its primary chromosomes incl. chrY).

        The last bin of a chromosome is cut at the chromosome end.
        """
        if bin_size <= 0:
            raise ValueError(f"bin_size must be positive, got {bin_size}")
        g = get_genome(genome)
        chroms = g.primary_chroms() if chroms is None else [c for c in normalize_chroms(chroms)]
        ns, ss, es = [], [], []
        for c in chroms:
            n = g.length(c)
            s = np.arange(0, n, bin_size, dtype=np.int64)
            ns.append(len(s))
            ss.append(s)
            es.append(np.minimum(s + bin_size, n))
        return cls(np.repeat(np.asarray(chroms, dtype=object), ns), np.concatenate(ss), np.concatenate(es),
                   special_tokens=special_tokens, genome=g.name, bin_size=bin_size)

    @classmethod
    def from_bed(cls, path, genome=None, special_tokens=DEFAULT_SPECIAL_TOKENS) -> "Vocabulary":
        """A BED file (3+ columns, gz or plain, e.g. a gtars/geniml universe) as a vocabulary.

        Ids follow the file order of the distinct regions (an exact duplicate line keeps the
        id of its first occurrence), which is how gtars numbers a universe, so a published
        model's embedding rows line up. With ``genome``, coordinates are checked against it.
        """
        df = _read_unique_regions(path)
        g = get_genome(genome) if genome is not None else None
        if g is not None:
            g.check_intervals(df["chrom"].to_numpy(), df["end"].to_numpy(), source=os.fspath(path))
        return cls(df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy(),
                   special_tokens=special_tokens, genome=g.name if g is not None else None)

    def with_special_tokens(self, extra) -> "Vocabulary":
        """A copy with ``extra`` special tokens appended (ids of existing tokens unchanged)."""
        specials = self.special_tokens + [t for t in extra if t not in self.special_tokens]
        return Vocabulary(self.chroms, self.starts, self.ends, specials, self.genome, self.bin_size)

    def with_chrom_eos(self) -> "Vocabulary":
        """Add one ``<eos_chrN>`` token per chromosome (the masked-bin model's sentence ends)."""
        return self.with_special_tokens([f"<eos_{c}>" for c in self.chrom_names])

    # -- basic facts --------------------------------------------------------------------
    @property
    def n_regions(self) -> int:
        return len(self.starts)

    def __len__(self) -> int:
        return self.n_regions + len(self.special_tokens)

    @property
    def chrom_names(self) -> list[str]:
        """Chromosomes in order of first appearance."""
        return list(self._chrom_offset())  # factorized: in order of first appearance

    def token_id(self, token: str) -> int:
        try:
            return self.n_regions + self.special_tokens.index(token)
        except ValueError:
            raise KeyError(f"{token!r} is not a special token of this vocabulary") from None

    @property
    def special_token_ids(self) -> dict[str, int]:
        return {t: self.n_regions + j for j, t in enumerate(self.special_tokens)}

    def region_names(self) -> np.ndarray:
        """``chrom:start-end`` for every region (the gtars token string)."""
        return (pd.Series(self.chroms).astype(str) + ":" + pd.Series(self.starts).astype(str)
                + "-" + pd.Series(self.ends).astype(str)).to_numpy()

    def to_dataframe(self) -> pd.DataFrame:
        """Regions as ``chrom``, ``start``, ``end`` (index = ``chrom:start-end``)."""
        df = pd.DataFrame({"chrom": pd.Categorical(self.chroms, categories=self.chrom_names),
                           "start": self.starts, "end": self.ends})
        df.index = pd.Index(self.region_names(), dtype=str)
        return df

    def _content_hash(self, special_tokens) -> str:
        h = hashlib.sha256()
        h.update("\n".join(map(str, self.chroms)).encode())
        h.update(self.starts.astype("<i8").tobytes())
        h.update(self.ends.astype("<i8").tobytes())
        h.update(json.dumps(list(special_tokens)).encode())
        return h.hexdigest()

    @property
    def hash(self) -> str:
        """Stable content hash (sha256 of regions and special tokens, hex)."""
        if self._hash is None:
            self._hash = self._content_hash(self.special_tokens)
        return self._hash

    def region_hash(self) -> str:
        """Hash of the regions alone (the columns of a tokenized matrix): the :attr:`hash` of
        the same regions without special tokens."""
        if self._region_hash is None:
            self._region_hash = self.hash if not self.special_tokens else self._content_hash(())
        return self._region_hash

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.hash == other.hash

    def __hash__(self):
        return hash(self.hash)

    def __repr__(self) -> str:
        kind = f"{self.bin_size} bp bins" if self.bin_size else "regions"
        return (f"Vocabulary({self.n_regions:,} {kind}, {len(self.special_tokens)} special tokens, "
                f"genome={self.genome}, hash={self.hash[:12]})")

    def check_same(self, other: "Vocabulary", what: str = "input") -> None:
        """Raise :class:`VocabularyMismatchError` unless ``other`` has the same regions."""
        if self.region_hash() != other.region_hash():
            raise VocabularyMismatchError(
                f"{what} was tokenized with another vocabulary ({other!r}); expected {self!r}"
            )

    # -- overlap ------------------------------------------------------------------------
    def _chrom_offset(self) -> dict[str, int]:
        if self._chrom_offsets is None:
            codes, uniq = pd.factorize(self.chroms)  # hashing: linear, unlike a sort of strings
            _, first, counts = np.unique(codes, return_index=True, return_counts=True)
            self._chrom_offsets = {str(c): int(i) for c, i in zip(uniq, first)}
            self._chrom_count = {str(c): int(n) for c, n in zip(uniq, counts)}
        return self._chrom_offsets

    def _chrom_index(self, chrom: str):
        if self._index is None:
            self._index = {}
        if chrom not in self._index:
            ids = np.flatnonzero(self.chroms == chrom)
            self._index[chrom] = (ids, IntervalIndex(self.starts[ids], self.ends[ids]))
        return self._index[chrom]

    def overlap_pairs(self, chrom: str, starts, ends) -> tuple[np.ndarray, np.ndarray]:
        """Exact overlaps of intervals on one chromosome with this vocabulary's regions.

        Returns ``(query_index, token_id)`` pairs; a chromosome absent from the vocabulary
        gives no pairs.
        """
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if self.bin_size is not None and chrom in self._chrom_offset():
            off = self._chrom_offset()[chrom]
            nb = self._chrom_count[chrom]
            q, b = bin_span_pairs(starts, ends, self.bin_size)
            keep = b < nb  # past the chromosome end: no token
            return q[keep], b[keep] + off
        if chrom not in self._chrom_offset():
            e = np.empty(0, dtype=np.int64)
            return e, e.copy()
        ids, index = self._chrom_index(chrom)
        q, r = index.query(starts, ends)
        return q, ids[r]

    def chrom_region_counts(self) -> dict[str, int]:
        """Number of regions per chromosome."""
        self._chrom_offset()
        return dict(self._chrom_count)

    # -- persistence --------------------------------------------------------------------
    def save(self, directory) -> None:
        """Write ``universe.bed.gz`` (the regions, in id order) and ``vocab.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (VOCAB_BED + ".tmp")
        df = pd.DataFrame({"c": self.chroms, "s": self.starts, "e": self.ends})
        with gzip.open(tmp, "wt", compresslevel=3) as f:
            df.to_csv(f, sep="\t", header=False, index=False)
        os.replace(tmp, d / VOCAB_BED)
        meta = {"special_tokens": self.special_tokens, "genome": self.genome,
                "bin_size": self.bin_size, "n_regions": self.n_regions, "hash": self.hash}
        tmpj = d / (VOCAB_JSON + ".tmp")
        tmpj.write_text(json.dumps(meta, indent=2))
        os.replace(tmpj, d / VOCAB_JSON)

    @classmethod
    def load(cls, directory) -> "Vocabulary":
        """Read a vocabulary saved by :meth:`save`; a folder holding only a ``universe.bed(.gz)``
        (a geniml model folder) loads with the default special tokens."""
        d = Path(directory)
        meta = json.loads((d / VOCAB_JSON).read_text()) if (d / VOCAB_JSON).exists() else {}
        bed = next((d / n for n in (VOCAB_BED, "universe.bed", "vocab.bed") if (d / n).exists()), None)
        if bed is None:
            raise FileNotFoundError(f"{d}: no universe.bed.gz / universe.bed vocabulary found")
        df = _read_unique_regions(bed)
        v = cls(df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy(),
                special_tokens=meta.get("special_tokens", DEFAULT_SPECIAL_TOKENS),
                genome=meta.get("genome"), bin_size=meta.get("bin_size"))
        if "hash" in meta and meta["hash"] != v.hash:
            raise VocabularyMismatchError(f"{d}: vocabulary content does not match its recorded hash")
        return v
