from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from atacformer.errors import GenomeMismatchError, InputFormatError

BUILTIN_GENOMES = ("hg38", "hg19", "mm10", "mm39")
_ALIASES = {"grch38": "hg38", "grch37": "hg19", "grcm38": "mm10", "grcm39": "mm39"}
_MITO = {"m", "mt", "chrm", "chrmt"}
_PLAIN = re.compile(r"^(\d+|[XYxy]|[XYxy]_.*|\d+_.*|Un_.*)$")


def normalize_chrom(name: str) -> str:
    """Return the UCSC-style name of a chromosome.

    ``1`` -> ``chr1``, ``X`` -> ``chrX``, ``MT``/``M``/``chrMT`` -> ``chrM``; names that
    already start with ``chr`` (or are not plain Ensembl numbers/letters) are kept.

    Examples
    --------
    >>> normalize_chrom("1"), normalize_chrom("MT"), normalize_chrom("chrX")
    ('chr1', 'chrM', 'chrX')
    """
    if name.lower() in _MITO:
        return "chrM"
    if name.startswith("chr"):
        return name
    if _PLAIN.match(name):
        return "chr" + (name.upper() if len(name) == 1 else name)
    return name


def normalize_chroms(names) -> np.ndarray:
    """Vectorised :func:`normalize_chrom` over unique names (fast for categorical data)."""
    import pandas as pd

    codes, uniq = pd.factorize(np.asarray(names, dtype=object))
    mapped = np.array([str(normalize_chrom(str(u))) for u in uniq], dtype=object)
    return mapped[codes]


def is_contig(chrom: str) -> bool:
    """Unplaced/alternative contigs and decoys that a primary-assembly genome leaves out."""
    c = chrom.removeprefix("chr")
    return ("_" in c or c.startswith(("Un", "GL", "KI", "JH", "GK", "EBV", "hs37d5"))
            or c.endswith(("random", "alt", "decoy")) or c in ("EBV", "M"))


@dataclass(frozen=True)
class Genome:
    """Chromosome names and lengths of one assembly.

    Parameters
    ----------
    name
        Assembly name (``hg38``...) or the path it was read from.
    chrom_sizes
        Ordered mapping ``chromosome -> length``; names are normalised on construction.

    Examples
    --------
    >>> g = get_genome("hg38")
    >>> g.length("1")
    248956422
    """

    name: str
    chrom_sizes: dict[str, int] = field(repr=False)

    def __post_init__(self):
        norm = {}
        for k, v in self.chrom_sizes.items():
            nk = normalize_chrom(str(k))
            if nk in norm:
                raise ValueError(f"genome {self.name}: chromosome {k!r} given twice")
            norm[nk] = int(v)
        object.__setattr__(self, "chrom_sizes", norm)

    @property
    def chroms(self) -> list[str]:
        return list(self.chrom_sizes)

    def length(self, chrom: str) -> int:
        c = normalize_chrom(chrom)
        if c not in self.chrom_sizes:
            raise GenomeMismatchError(
                None, f"chromosome {chrom!r} is not in genome {self.name} "
                f"(it has {', '.join(self.chroms[:5])}, ...)"
            )
        return self.chrom_sizes[c]

    def primary_chroms(self, include_y: bool = True, include_mito: bool = False) -> list[str]:
        """Autosomes and sex chromosomes in karyotype order (``chr1..chrN, chrX[, chrY][, chrM]``)."""
        out = []
        for c in self.chroms:
            s = c[3:]
            if s.isdigit() or s == "X" or (s == "Y" and include_y) or (s == "M" and include_mito):
                out.append(c)
        return out

    def check_intervals(self, chroms, ends, source=None) -> None:
        """Raise :class:`GenomeMismatchError` if a chromosome is unknown or an end lies past it.

        ``chroms`` are normalised names (array), ``ends`` the matching end coordinates.
        """
        chroms = np.asarray(chroms)
        ends = np.asarray(ends)
        uniq = np.unique(chroms)
        unknown = [c for c in uniq if c not in self.chrom_sizes]
        if unknown:
            hint = _guess_genome(uniq)
            raise GenomeMismatchError(
                source, f"chromosome(s) {', '.join(map(repr, unknown[:5]))} are not in genome "
                f"{self.name}" + (f"; the input looks like {hint}" if hint else "")
            )
        for c in uniq:
            m = chroms == c
            mx = int(ends[m].max())
            if mx > self.chrom_sizes[c]:
                hint = _guess_genome(uniq, ends, chroms)
                raise GenomeMismatchError(
                    source, f"coordinate {mx} on {c} lies past its end ({self.chrom_sizes[c]}) in "
                    f"genome {self.name}" + (f"; the input looks like {hint}" if hint else "")
                )

    def write(self, path) -> None:
        with open(path, "w") as f:
            for c, n in self.chrom_sizes.items():
                f.write(f"{c}\t{n}\n")


def _guess_genome(uniq_chroms, ends=None, chroms=None) -> str | None:
    """Name the built-in genomes the data fit, to make a mismatch error actionable."""
    fits = []
    for g in BUILTIN_GENOMES:
        G = get_genome(g)
        if not all(c in G.chrom_sizes for c in uniq_chroms):
            continue
        if ends is not None:
            ok = all(int(ends[chroms == c].max()) <= G.chrom_sizes[c] for c in uniq_chroms)
            if not ok:
                continue
        fits.append(g)
    return " or ".join(fits) if fits else None


_CACHE: dict[str, Genome] = {}


def read_chrom_sizes(path) -> Genome:
    """Read a ``.chrom.sizes`` file (``name<TAB>length``; ``#`` lines ignored)."""
    sizes = {}
    p = os.fspath(path)
    with open(p) as f:
        for i, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise InputFormatError(p, "expected 'chrom<TAB>length'", line=i, value=line.rstrip())
            try:
                n = int(parts[1])
            except ValueError:
                raise InputFormatError(p, "chromosome length is not an integer", line=i, value=parts[1]) from None
            if n <= 0:
                raise InputFormatError(p, "chromosome length must be positive", line=i, value=n)
            sizes[parts[0]] = n
    if not sizes:
        raise InputFormatError(p, "no chromosome sizes found (empty file)")
    return Genome(name=p, chrom_sizes=sizes)


def get_genome(genome: "str | os.PathLike | Genome") -> Genome:
    """Return a :class:`Genome` by built-in name (``hg38``, ``hg19``, ``mm10``, ``mm39``,
    or GRCh38/GRCh37/GRCm38/GRCm39) or from a ``.chrom.sizes`` file path."""
    if isinstance(genome, Genome):
        return genome
    key = os.fspath(genome)
    name = _ALIASES.get(key.lower(), key)
    if name in _CACHE:
        return _CACHE[name]
    if name in BUILTIN_GENOMES:
        text = resources.files("atacformer.genome").joinpath(f"{name}.chrom.sizes").read_text()
        sizes = {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in text.splitlines() if ln}
        g = Genome(name=name, chrom_sizes=sizes)
    elif Path(name).exists():
        g = read_chrom_sizes(name)
    else:
        raise ValueError(
            f"unknown genome {genome!r}: use one of {', '.join(BUILTIN_GENOMES)} "
            "or the path of a .chrom.sizes file"
        )
    _CACHE[name] = g
    return g
