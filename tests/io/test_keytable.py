"""The exact barcode hash table against a dict (hypothesis): ids in first-appearance order,
never merging two keys, across growth, long keys, shared prefixes and keys at a buffer's end."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atacformer._core.parse import INLINE, KeyTable, find_keys, insert_keys
from atacformer.io.fragments import FragmentReader

# bytes a barcode may hold: anything but tab, newline and carriage return (NUL included)
_BYTE = st.integers(0, 255).filter(lambda b: b not in (9, 10, 13))
_KEY = st.lists(_BYTE, min_size=1, max_size=40).map(bytes)


def _ids(keys: list[bytes], table: KeyTable) -> list[int]:
    """Run find_keys/insert_keys over ``keys`` laid end to end in one buffer (no separator,
    so the last key ends at the buffer's end)."""
    buf = np.frombuffer(b"".join(keys), dtype=np.uint8)
    ends = np.cumsum([len(k) for k in keys])
    a, b = (ends - [len(k) for k in keys]).astype(np.int64), ends.astype(np.int64)
    ids = np.empty(len(keys), np.int64)
    r = 0 if find_keys(buf, a, b, len(keys), table.rows, table.off, table.arena, ids) else -1
    while r >= 0:
        r = insert_keys(buf, a, b, len(keys), *table.arrays(), ids, r)
        if r >= 0:
            table.grow()
    return ids.tolist()


def _expected(keys, seen):
    out = []
    for k in keys:
        out.append(seen.setdefault(k, len(seen)))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_KEY, min_size=1, max_size=60), min_size=1, max_size=4))
def test_ids_equal_a_dict(batches):
    table = KeyTable(capacity=2, arena_bytes=8)  # tiny, so every batch grows it
    seen: dict[bytes, int] = {}
    for keys in batches:  # several blocks share one table
        assert _ids(keys, table) == _expected(keys, seen)
    assert table.keys() == [k.decode("utf-8", "replace") for k in seen]
    assert len(table) == len(seen)


def test_keys_that_share_inline_bytes_stay_apart():
    base = b"ACGT" * 6  # exactly INLINE bytes
    assert len(base) == INLINE
    keys = [base, base + b"A", base + b"C", base + b"AA", base[:-1], base[:-1] + b"\x00", b"A", b"A\x00", b"A\x00\x00"]
    table = KeyTable(capacity=2, arena_bytes=8)
    assert _ids(keys * 3, table) == list(range(len(keys))) * 3


def test_many_barcodes_across_blocks(tmp_path):
    """100,000 barcodes over 40 blocks: each keeps one id, in first-appearance order."""
    rng = np.random.default_rng(0)
    bcs = ["".join(rng.choice(list("ACGT"), 16)) + f"-{i % 3 + 1}" for i in range(100_000)]
    order = rng.integers(0, len(bcs), 400_000)
    p = tmp_path / "f.tsv"
    p.write_text("".join(f"chr1\t{i}\t{i + 50}\t{bcs[j]}\t1\n" for i, j in enumerate(order.tolist())))
    reader = FragmentReader(p, block_bytes=1 << 18)
    got = np.concatenate([b.barcode_codes for b in reader])
    names = np.asarray(reader.barcodes())
    assert (names[got] == np.asarray(bcs)[order]).all()
    first = list(dict.fromkeys(np.asarray(bcs)[order].tolist()))
    assert names.tolist() == first
