"""The parser's word-at-a-time pieces against plain Python (hypothesis): decimal fields of
any length and content, separator search, and whole lines near a buffer's end."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from atacformer._core.parse import OK, KeyTable, _find_sep, _uint_field, parse_fragments


@njit(cache=False)
def _field(buf, i):
    return _uint_field(buf, i, len(buf))


@njit(cache=False)
def _sep(buf, i, cr):
    return _find_sep(buf, i, len(buf), cr)


FIELD = st.text(alphabet="0123456789-+ax:\x00/\t", min_size=0, max_size=22)


@settings(max_examples=500, deadline=None)
@given(FIELD, st.text(alphabet="0123456789\tx\n", max_size=12), st.booleans())
def test_uint_field_equals_python(field, tail, terminate):
    text = ("ab\t" + field + ("\t" if terminate else "") + tail).encode()
    v, t = _field(np.frombuffer(text, np.uint8), 3)
    rest = text[3:].decode()
    stop = min([i for i in (rest.find("\t"), rest.find("\n")) if i >= 0], default=-1)
    digits = rest[:stop] if stop >= 0 else rest
    ok = stop >= 0 and rest[stop] == "\t" and 0 < len(digits) <= 18 and all(c in "0123456789" for c in digits)
    assert (v, t) == ((int(digits), 3 + len(digits)) if ok else (0, -1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 40), st.booleans())
def test_find_sep_equals_python(data, start, cr):
    start = min(start, len(data))
    stops = (9, 10, 13) if cr else (9, 10)
    want = next((i for i in range(start, len(data)) if data[i] in stops), len(data))
    assert _sep(np.frombuffer(data, np.uint8), start, cr) == want


LINE = st.tuples(st.sampled_from(["chr1", "chrX", "2", "chrUn_KI270302v1"]), st.integers(0, 10**12),
                 st.integers(0, 10**6), st.text(alphabet="ACGT-0123456789", min_size=1, max_size=30),
                 st.sampled_from(["", "\t1", "\t17\textra"]), st.sampled_from(["\n", "\r\n", "\n\n"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=30))
def test_lines_parse_like_split(lines):
    text = "".join(f"{c}\t{s}\t{s + d}\t{b}{rest}{end}" for c, s, d, b, rest, end in lines).encode()
    buf = np.frombuffer(text, np.uint8)  # the last line ends at the buffer's end
    n = len(lines)
    out = (np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
           np.empty(n, np.int64))
    chroms = KeyTable(capacity=64, arena_bytes=1 << 12)
    status, pos, row, nl = parse_fragments(buf, 0, 0, 0, *out, *chroms.arrays())
    assert (status, pos, row) == (OK, len(buf), n)
    assert nl == text.count(b"\n")
    names = chroms.keys()
    for r, (c, s, d, b, _, _) in enumerate(lines):
        assert names[out[0][r]] == c and out[1][r] == s and out[2][r] == s + d
        assert text[out[3][r]:out[4][r]].decode() == b
