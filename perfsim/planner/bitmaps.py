"""Decision-free array work for the vectorised planner: bitmaps of PTE tables as rows of
uint64 words, and sorted-index helpers. Nothing here knows a kernel rule."""

from __future__ import annotations

import numpy as np

from perfsim.mm.pagetable import PageTables, _int_to_words, _mask_pop, _words_to_int

_I64, _I32 = np.int64, np.int32


#: Up to this many ids :func:`bits_in_rows` counts on Python ints.
FEW_IDS = 8


class Declined(Exception):
    """The fast path does not apply; the message says why."""


# ---------------------------------------------------------------------------- bitmaps
def bits_in_rows(table: np.ndarray, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Set bits ``[lo, hi)`` of row ``ids[i]`` of ``table`` (little-endian uint64 rows), for
    each i: the difference of two prefix counts, each a cumulative word popcount plus one
    partial word, so the cost is two gathers per id whatever the range. The prefix counts
    are made once per distinct row (a sparse TiB has a handful of distinct bitmaps and a
    million extents), never per id: one running count over the table's words in order
    (a row's own prefix is that count's rise since the row's first word, and the row's
    start cancels in the difference)."""
    ids = np.asarray(ids, _I64)
    if not len(ids):
        return np.zeros(0, _I64)
    if len(ids) <= FEW_IDS:
        # a few: each row as a Python int (the definition), no prefix counts
        return np.array([(_words_to_int(table[i]) >> int(x) & ((1 << int(y - x)) - 1)).bit_count()
                         if y > x else 0
                         for i, x, y in zip(ids.tolist(), np.asarray(lo).tolist(),
                                            np.asarray(hi).tolist())], _I64)
    if len(table) > len(ids):
        uniq, ids = np.unique(ids, return_inverse=True)
        table = table[uniq]
    w = table.shape[1]
    words = table.reshape(-1)
    run = np.zeros(len(words) + 1, _I64)  # run[j]: set bits in words [0, j) of the table
    np.cumsum(np.bitwise_count(words), dtype=_I64, out=run[1:])
    first = ids * w  # each id's first word

    def below(k: np.ndarray) -> np.ndarray:
        """Set bits below bit ``k`` of each id's row, plus the bits of the rows before it."""
        q, r = k >> 6, (k & 63).astype(np.uint64)
        part = words[first + np.minimum(q, w - 1)] & ((np.uint64(1) << r) - np.uint64(1))
        return run[first + q] + np.where(q < w, np.bitwise_count(part), 0)

    return below(np.asarray(hi, _I64)) - below(np.asarray(lo, _I64))


def shift_right(rows: np.ndarray, k: int) -> np.ndarray:
    """Multiword logical right shift by ``k`` bits of little-endian uint64 rows."""
    n, w = rows.shape
    out = np.zeros_like(rows)
    q, r = divmod(k, 64)
    if q >= w:
        return out
    out[:, :w - q] = rows[:, q:] >> np.uint64(r)
    if r and q + 1 < w:
        out[:, :w - q - 1] |= rows[:, q + 1:] << np.uint64(64 - r)
    return out


def shift_left(rows: np.ndarray, k: int) -> np.ndarray:
    """Multiword left shift by ``k`` bits, truncated to the row width."""
    n, w = rows.shape
    out = np.zeros_like(rows)
    q, r = divmod(k, 64)
    if q >= w:
        return out
    out[:, q:] = rows[:, :w - q] << np.uint64(r)
    if r and q + 1 < w:
        out[:, q + 1:] |= rows[:, :w - q - 1] >> np.uint64(64 - r)
    return out


def pair_window(table: np.ndarray, lo_ids: np.ndarray, hi_ids: np.ndarray, off: int) -> np.ndarray:
    """Bits ``[off, off + 64 w)`` of each two-row bitmap whose low half is row
    ``lo_ids[i]`` and high half row ``hi_ids[i]`` of ``table`` (``w`` words a row,
    ``0 < off < 64 w``): ``shift_right(lo, off) | shift_left(hi, 64 w - off)``, made from one
    gather of both rows side by side and two shifts of its word columns."""
    n, w = len(lo_ids), table.shape[1]
    pairs = table[np.stack([np.asarray(lo_ids, _I64), np.asarray(hi_ids, _I64)], axis=1)]
    pairs = pairs.reshape(n, 2 * w)
    q, r = divmod(off, 64)
    if not r:
        return np.ascontiguousarray(pairs[:, q:q + w])
    return (pairs[:, q:q + w] >> np.uint64(r)) | (pairs[:, q + 1:q + 1 + w] << np.uint64(64 - r))


class MaskTable:
    """The ``masks``/``mask_pop`` of a state plus rows appended while planning."""

    def __init__(self, pt: PageTables):
        self.words = pt.masks.shape[1]
        self.base = pt.masks
        self.base_pop = pt.mask_pop
        self.extra: list[np.ndarray] = []
        self.n = len(pt.masks)
        self.ptrs = pt.arch.ptrs_per_pte
        if not len(self.base) or self.base_pop[0] != 0:
            raise Declined("mask row 0 is not the empty bitmap")
        self._base_n = self.n  # the state's own rows: where a full row is looked for
        self._full: int | None = None
        self._ints: dict[int, int] = {}  # row id -> its bitmap as an int, once read or added

    def add_rows(self, rows: np.ndarray) -> np.ndarray:
        """Append bitmap rows; return their ids."""
        rows = np.ascontiguousarray(rows, dtype=np.uint64).reshape(-1, self.words)
        ids = np.arange(self.n, self.n + len(rows), dtype=_I32)
        if len(rows):
            self.extra.append(rows)
            self.n += len(rows)
        return ids

    def add_int(self, mask: int) -> int:
        """Append one bitmap given as an int (the empty one is row 0); return its id."""
        if mask == 0:
            return 0
        i = self.n
        self.extra.append(_int_to_words(mask, self.words)[None, :])
        self.n += 1
        self._ints[i] = mask
        return i

    @property
    def full(self) -> int:
        """Id of the all-present bitmap: the state's first full row, else one added (looked
        for when first asked)."""
        if self._full is None:
            have = np.flatnonzero(self.base_pop[:self._base_n] == self.ptrs)
            self._full = int(have[0]) if len(have) else self.add_int((1 << self.ptrs) - 1)
        return self._full

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Bitmap words of rows ``ids``."""
        ids = np.asarray(ids, dtype=_I64)
        if not self.extra:
            return self.base[ids]
        allm = self.materialise()[0]
        return allm[ids]

    def row_int(self, i: int) -> int:
        """Row ``i`` as an int (``_words_to_int`` of its words; kept), read where it is
        without joining the appended rows to the table."""
        m = self._ints.get(i)
        if m is None:
            if not 0 <= i < self.n:  # as numpy indexes the joined table (or raises)
                return _words_to_int(self.rows(np.array([i]))[0])
            at = i - len(self.base)
            if at < 0:
                m = _words_to_int(self.base[i])
            else:
                for block in self.extra:
                    if at < len(block):
                        m = _words_to_int(block[at])
                        break
                    at -= len(block)
            self._ints[i] = m
        return m

    def materialise(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.extra:
            return self.base, self.base_pop
        extra = np.concatenate(self.extra)
        pop = _mask_pop(extra)
        self.base = np.concatenate([self.base, extra])
        self.base_pop = np.concatenate([self.base_pop, pop])
        self.extra = []
        return self.base, self.base_pop


def dense(idx: np.ndarray, vals: np.ndarray, lo: int, hi: int, default, dtype) -> np.ndarray:
    """Dense array over slots ``[lo, hi]`` of the sorted sparse ``idx``/``vals``."""
    i0, i1 = idx.searchsorted((lo, hi + 1)).tolist()
    n = hi - lo + 1
    if i1 - i0 == n:  # every slot present: the slice is the dense array
        return vals[i0:i1].astype(dtype, copy=False)
    out = filled(n, default, dtype)
    out[idx[i0:i1] - lo] = vals[i0:i1]
    return out


def firsts(keys: np.ndarray) -> np.ndarray:
    """Boolean: where a non-decreasing ``keys`` array takes a new value."""
    out = np.empty(len(keys), bool)
    if len(keys):
        out[0] = True
        np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def interleave(a0: int, b0: int, stop: int, step: int) -> np.ndarray:
    """Sorted union of ``range(a0, stop, step)`` and ``range(b0, stop, step)``."""
    a = np.arange(a0, stop, step, dtype=_I64)
    if (a0 - b0) % step == 0:
        return a
    b = np.arange(b0, stop, step, dtype=_I64)
    if b0 < a0:
        a, b = b, a
    out = np.empty(len(a) + len(b), _I64)
    out[0::2] = a
    out[1::2] = b
    return out




def insert_sorted(bases: tuple[np.ndarray, ...], pos: np.ndarray,
                  values: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """``np.insert(base, pos, vals)`` of each pair of ``bases`` and ``values``, for a
    non-decreasing ``pos`` (values at equal positions keep their order; each result has
    its base's dtype): the result positions are computed once for all the arrays, and
    without ``np.insert``'s own sort and checks."""
    pos = np.asarray(pos, _I64)
    n, m = len(bases[0]), len(pos)
    at = pos + np.arange(m, dtype=_I64)
    keep = filled(n + m, True, bool)
    keep[at] = False
    out = []
    for base, vals in zip(bases, values, strict=True):
        r = np.empty(n + m, base.dtype)
        r[at] = vals
        r[keep] = base
        out.append(r)
    return out


# ---------------------------------------------------------------------------- reductions
# On short arrays ``x.any()``, ``x.all()``, ``np.flatnonzero(x)``, ``np.full`` and ``np.clip``
# cost about a microsecond a call whatever the length (Python-level dispatch), and
# ``np.count_nonzero``, ``ndarray.nonzero``, ``empty``/``fill`` and two ufuncs a quarter of
# that; the vectorised planner calls them dozens of times per move. On long arrays ``any``
# and ``all`` stop early and ``np.clip`` is one pass, so those keep them.
SHORT = 1024


def any_set(x: np.ndarray) -> bool:
    """``bool(x.any())``."""
    if x.size > SHORT:
        return bool(x.any())
    return bool(np.count_nonzero(x))


def all_set(x: np.ndarray) -> bool:
    """``bool(x.all())``."""
    if x.size > SHORT:
        return bool(x.all())
    return bool(np.count_nonzero(x) == x.size)


def where_set(x: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(x)`` of a one-dimensional array."""
    return x.nonzero()[0]


def filled(n: int, value, dtype) -> np.ndarray:
    """``np.full(n, value, dtype)`` (also ``np.ones``), as ``empty`` and ``fill``: two C
    calls instead of numpy's Python-level wrapper."""
    out = np.empty(n, dtype)
    out.fill(value)
    return out


def clipped(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``np.clip(x, lo, hi)`` of an integer array; a short one as two ufunc calls
    (``np.clip`` goes through several Python-level wrappers)."""
    if x.size > SHORT:
        return np.clip(x, lo, hi)
    return np.minimum(np.maximum(x, lo), hi)
