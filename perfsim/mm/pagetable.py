"""Compact, mm-wide page-table state.

One :class:`PageTables` describes which page tables of an mm exist and what their entries
hold, at the granularity mremap's decisions need (docs/kernel-rules.md):

* top level: which PGD/P4D slots have a PUD table (``pud_tables``; always present when the
  PUD level is folded);
* PUD level: entries that are a PMD table or a huge leaf (sorted ``pud_idx``/``pud_kind``);
* PMD level: entries that are a PTE table or a huge leaf (THP or 2 MiB hugetlb), sorted
  ``pmd_idx``/``pmd_kind``; each PTE table refers to a row of ``masks``, a bitmap of its
  present PTEs. Bitmaps are deduplicated, so a fully populated terabyte shares one row.

Nothing is stored per page: a fully populated 1 TiB region on x86-64 is 512 Ki PMD entries
held in three numpy arrays (about 7 MiB). Instances are immutable values; every change
returns a new one. Planners that walk entry by entry take a :class:`Window` (dicts over the
slots they can touch) and write it back with :meth:`PageTables.replace_window`.

A small state (at most :data:`SMALL_SLOTS` PMD and PUD entries: a synthetic call's layout,
the states of a walked plan) is populated and windowed on Python ints and lists, and built
by this module as lists, its numpy arrays made the first time one is read. The arrays are
the ones the array paths make (``tests/test_t13_mm_populate.py``,
``tests/test_t13_mm_window.py``).
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

from perfsim.profiles import ArchProfile

PUD_NONE, PUD_TABLE, PUD_LEAF = 0, 1, 2
PMD_NONE, PMD_TABLE, PMD_LEAF = 0, 1, 2

_I64 = np.int64
_ARRAYS = frozenset(("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask", "masks",
                     "mask_pop"))
_NO_I64, _NO_I8, _NO_I32 = np.zeros(0, _I64), np.zeros(0, np.int8), np.zeros(0, np.int32)


def _mask_words(arch: ArchProfile) -> int:
    return arch.ptrs_per_pte // 64


def range_mask(lo: int, hi: int) -> int:
    """Bitmap (Python int) with bits ``[lo, hi)`` set."""
    return ((1 << hi) - 1) ^ ((1 << lo) - 1) if hi > lo else 0


def _int_to_words(mask: int, words: int) -> np.ndarray:
    return np.frombuffer(mask.to_bytes(words * 8, "little"), dtype="<u8").astype(np.uint64)


def _mask_pop(masks: np.ndarray) -> np.ndarray:
    """Population (present PTEs) of each bitmap row."""
    # summed in int32 as it goes (the same sums as an int64 sum cast after, at half the cost)
    return (np.add.reduce(np.bitwise_count(masks), axis=1, dtype=np.int32) if len(masks)
            else np.zeros(0, np.int32))


def _splice(columns: tuple, i0: int, i1: int, values: tuple, dtypes: tuple) -> list[np.ndarray]:
    """Each of ``columns`` (arrays) with rows ``[i0, i1)`` replaced by the list in ``values``
    (as ``dtypes``; the result has the dtype concatenating the two would give)."""
    out = []
    for col, vals, dt in zip(columns, values, dtypes, strict=True):
        dt = np.promote_types(col.dtype, dt)
        if i0 == 0 and i1 == len(col):
            out.append(np.array(vals, dt))
        elif len(col) <= _SPLICE_AS_LIST:
            # a short column: one list splice and one conversion (the same values and
            # dtype as the concatenation, in half the numpy calls)
            rows = col.tolist()
            rows[i0:i1] = vals
            out.append(np.array(rows, dt))
        else:
            out.append(np.concatenate([col[:i0], np.array(vals, dt), col[i1:]]))
    return out


#: A state's cache of bitmap ints (:meth:`PageTables._row_ints`) is handed on to the states
#: :meth:`PageTables.replace_window` derives from it while it holds at most this many rows.
_CARRY_INTS = 256
#: The lists of a small state with no entries (:meth:`PageTables.empty`'s).
_EMPTY_LISTS = ([], [], [], [], [])
#: :meth:`PageTables.populate` keywords :meth:`PageTables._populate_fresh` may be given
#: (``thp`` and ``pud_leaf`` false).
_FRESH_KW = frozenset(("fraction", "seed", "thp", "pud_leaf"))

#: Longest column :func:`_splice` splices as a Python list (beyond it, concatenation is
#: cheaper than converting every row).
_SPLICE_AS_LIST = 32


def _words_to_int(row: np.ndarray) -> int:
    return int.from_bytes(np.ascontiguousarray(row, dtype="<u8").tobytes(), "little")


_POPULATE_KW = frozenset(("every", "fraction", "seed", "thp", "pud_leaf"))
#: :meth:`PageTables.populate`'s keyword defaults, in its parameter order (what
#: :meth:`PageTables.populate_each` passes for a keyword not given).
_POPULATE_DEFAULTS = {"every": 1, "fraction": 1.0, "seed": 0, "thp": False, "pud_leaf": False}
_EVERY_0, _FRACTION_0, _SEED_0, _THP_0, _PUD_LEAF_0 = _POPULATE_DEFAULTS.values()

#: :meth:`PageTables.populate` of at most this many PMD slots, on a state of at most this
#: many PMD and PUD entries, runs on Python integers (:meth:`PageTables._populate_small`).
SMALL_SLOTS = 64


def _drawn_rows(seed: int, n_slots: int, drawn: list[int], ptrs: int,
                fraction: float) -> np.ndarray:
    """The present-PTE booleans of a seeded random population, one row per slot of
    ``drawn`` (increasing indices among ``n_slots``): slot j's row is the j-th run of
    ``ptrs`` doubles of ``default_rng(seed)``, each below ``fraction``. The runs of slots
    left out are skipped (the generator advanced past them), not drawn."""
    if len(drawn) == n_slots:
        # (default_rng(seed) is this generator; made directly, without its argument checks)
        return np.random.Generator(np.random.PCG64(seed)).random((n_slots, ptrs)) < fraction
    rows = np.empty((len(drawn), ptrs), bool)
    bits = np.random.PCG64(seed)  # what default_rng(seed) draws from
    gen, at = np.random.Generator(bits), 0
    for i, j in enumerate(drawn):
        if j > at:
            bits.advance((j - at) * ptrs)  # one 64-bit output per double
        rows[i] = gen.random(ptrs) < fraction
        at = j + 1
    return rows


def _edge_mask(start: int, end: int, base: int, ps: int, ptrs: int) -> int | None:
    """The bitmap of the PTE indices of the table at ``base`` (``ptrs`` pages of ``1 << ps``
    bytes) that ``[start, end)`` covers, or None when it covers the whole table."""
    lo = (start - base) >> ps if start > base else 0
    hi = (end - base) >> ps if end < base + (ptrs << ps) else ptrs
    if lo == 0 and hi == ptrs:
        return None
    return ((1 << hi) - 1) ^ ((1 << lo) - 1)


def _check_range(page_shift: int, start: int, end: int) -> None:
    """What :meth:`PageTables.populate` accepts: a non-empty, page-aligned range (pages of
    ``1 << page_shift`` bytes)."""
    if (start | end) & ((1 << page_shift) - 1) or end <= start:
        raise ValueError("populate: range must be non-empty and page aligned")


def _every_pattern(ptrs: int, every: int, phase: int) -> int:
    """Bitmap of table indices ``phase, phase + every, ...`` below ``ptrs`` (a geometric
    series: bits 0, every, 2 every, ... shifted up by ``phase``)."""
    count = -(-ptrs // every)
    comb = ((1 << (every * count)) - 1) // ((1 << every) - 1)
    return (comb << phase) & ((1 << ptrs) - 1)


def _rows_to_ints(rows: np.ndarray) -> list[int]:
    """Each row of a 2-D bitmap array as a Python int: rows of 64-bit words as
    :func:`_words_to_int` reads them, rows of bytes (``np.packbits(..., bitorder="little")``)
    byte 0 lowest."""
    if not len(rows):
        return []
    if rows.dtype.itemsize == 1:  # bytes: no byte order (tobytes copies in C order)
        b = rows.tobytes()
    else:
        b = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<")).tobytes()
    n = len(b) // len(rows)
    return [int.from_bytes(b[i:i + n], "little") for i in range(0, len(b), n)]


@dataclass(frozen=True, eq=False, init=False)
class PageTables:
    """Immutable page-table state of one mm. Build with :meth:`empty` and :meth:`populate`."""

    arch: ArchProfile
    pud_tables: frozenset[int]
    pud_idx: np.ndarray
    pud_kind: np.ndarray
    pmd_idx: np.ndarray
    pmd_kind: np.ndarray
    pmd_mask: np.ndarray
    masks: np.ndarray
    mask_pop: np.ndarray = field(repr=False)

    def __init__(self, arch: ArchProfile, pud_tables: frozenset[int], pud_idx: np.ndarray,
                 pud_kind: np.ndarray, pmd_idx: np.ndarray, pmd_kind: np.ndarray,
                 pmd_mask: np.ndarray, masks: np.ndarray, mask_pop: np.ndarray) -> None:
        # the dataclass's own __init__ (the same parameters), the fields set in one step
        self.__dict__.update(arch=arch, pud_tables=pud_tables, pud_idx=pud_idx,
                             pud_kind=pud_kind, pmd_idx=pmd_idx, pmd_kind=pmd_kind,
                             pmd_mask=pmd_mask, masks=masks, mask_pop=mask_pop)

    # ------------------------------------------------------------------ small states
    # A small state made by this module (a synthetic call's layout, a walked plan's
    # write-backs) is held as Python lists, its arrays built the first time one is read:
    # ``_lists`` = (pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask) as lists and ``_rows``
    # = (base masks array, its populations, bitmaps appended after it as ints, their
    # populations). The arrays built (:meth:`_materialize`) are the ones the eager paths
    # build; reading a field of such a state is indistinguishable from reading an eager one.

    def __getattr__(self, name: str):
        # only called for an attribute the instance lacks: a small state's arrays
        d = self.__dict__
        if name in _ARRAYS and "_rows" in d:
            self._materialize()
            return d[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _materialize(self) -> None:
        d = self.__dict__
        pud_l, pudk_l, pmd_l, pmdk_l, row_l = d["_lists"]
        base, base_pop, extra, extra_pop = d["_rows"]
        if extra:
            nbytes = self._geo()[1] // 8
            buf = bytearray(base.tobytes())  # native order is little-endian (_SmallState.takes)
            buf += b"".join([m.to_bytes(nbytes, "little") for m in extra])
            masks = np.frombuffer(buf, np.uint64).reshape(-1, base.shape[1])
            pop = np.array(base_pop.tolist() + extra_pop, np.int32) if len(base_pop) <= 256 \
                else np.concatenate([base_pop, np.array(extra_pop, np.int32)])
        else:
            masks, pop = base, base_pop
        d.update(pud_idx=np.array(pud_l, _I64), pud_kind=np.array(pudk_l, np.int8),
                 pmd_idx=np.array(pmd_l, _I64), pmd_kind=np.array(pmdk_l, np.int8),
                 pmd_mask=np.array(row_l, np.int32), masks=masks, mask_pop=pop)

    def _lists_of(self) -> tuple[list, list, list, list, list]:
        """``(pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask)`` as lists (kept; never changed)."""
        d = self.__dict__
        li = d.get("_lists")
        if li is None:
            li = d["_lists"] = (self.pud_idx.tolist(), self.pud_kind.tolist(),
                                self.pmd_idx.tolist(), self.pmd_kind.tolist(),
                                self.pmd_mask.tolist())
        return li

    def _rows_of(self) -> tuple:
        """``_rows`` of this state: its own, or (masks, mask_pop, [], []) of an eager one."""
        r = self.__dict__.get("_rows")
        return r if r is not None else (self.masks, self.mask_pop, [], [])

    def _row_int(self, r: int) -> int:
        """Bitmap row ``r`` as an int (cached)."""
        ints = self._row_ints()
        m = ints.get(r)
        if m is None:
            base, _, extra, _ = self._rows_of()
            m = ints[r] = extra[r - len(base)] if r >= len(base) else _words_to_int(base[r])
        return m

    def _row_pop(self, r: int) -> int:
        base, base_pop, _, extra_pop = self._rows_of()
        return extra_pop[r - len(base)] if r >= len(base) else int(base_pop[r])

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, arch: ArchProfile) -> PageTables:
        w = _mask_words(arch)
        masks = np.zeros((1, w), dtype=np.uint64)  # row 0: the empty table
        pop = np.zeros(1, np.int32)
        # the entry arrays hold nothing, so every empty state may share them
        out = cls(arch, frozenset(), _NO_I64, _NO_I8, _NO_I64, _NO_I8, _NO_I32, masks, pop)
        # ... and it is a small state already: its lists and rows (what _lists_of and
        # _rows_of read from the arrays), so populating it starts without reading them
        if sys.byteorder == "little":  # what _SmallState.takes asks of an array state
            out.__dict__.update(_lists=([], [], [], [], []), _rows=(masks, pop, [], []))
        return out

    def top_slot(self, addr: int) -> int:
        """Index of the top-level entry whose PUD table maps ``addr`` (PGD, or P4D if 5-level)."""
        return addr >> self.arch.p4d_shift

    # ------------------------------------------------------------------ queries
    def has_pud_table(self, addr: int) -> bool:
        return self.arch.pud_folded or self.top_slot(addr) in self.pud_tables

    def pud_entry(self, slot: int) -> int:
        i = np.searchsorted(self.pud_idx, slot)
        if i < len(self.pud_idx) and self.pud_idx[i] == slot:
            return int(self.pud_kind[i])
        return PUD_NONE

    def pmd_entry(self, slot: int) -> tuple[int, int]:
        """``(kind, present-PTE bitmap as int)`` of PMD slot ``slot``."""
        i = np.searchsorted(self.pmd_idx, slot)
        if i < len(self.pmd_idx) and self.pmd_idx[i] == slot:
            kind = int(self.pmd_kind[i])
            if kind == PMD_TABLE:
                return kind, _words_to_int(self.masks[self.pmd_mask[i]])
            return kind, 0
        return PMD_NONE, 0

    def present_ptes(self, start: int, end: int) -> int:
        """Number of mapped base pages in ``[start, end)``, counting a PMD leaf as
        ``ptrs_per_pte`` pages and a PUD leaf as a PUD's worth."""
        a = self.arch
        total = 0
        lo, hi = start >> a.pmd_shift, (end - 1) >> a.pmd_shift
        i0, i1 = np.searchsorted(self.pmd_idx, [lo, hi + 1])
        for i in range(i0, i1):
            slot = int(self.pmd_idx[i])
            base = slot << a.pmd_shift
            s = max(start, base) - base >> a.page_shift
            e = (min(end, base + a.pmd_size) - base + a.page_size - 1) >> a.page_shift
            if self.pmd_kind[i] == PMD_LEAF:
                total += e - s
            else:
                total += (_words_to_int(self.masks[self.pmd_mask[i]]) & range_mask(s, e)).bit_count()
        j0, j1 = np.searchsorted(self.pud_idx, [start >> a.pud_shift, ((end - 1) >> a.pud_shift) + 1])
        for j in range(j0, j1):
            if self.pud_kind[j] == PUD_LEAF:
                base = int(self.pud_idx[j]) << a.pud_shift
                total += (min(end, base + a.pud_size) - max(start, base)) >> a.page_shift
        return total

    def mapping(self, start: int, end: int) -> np.ndarray:
        """Sorted page indices (relative to ``start``) mapped in ``[start, end)``.

        Meant for tests and small ranges: it materialises one integer per mapped page.
        """
        a = self.arch
        out = []
        for slot_start in range(start - start % a.pmd_size, end, a.pmd_size):
            slot = slot_start >> a.pmd_shift
            kind, mask = self.pmd_entry(slot)
            pud = self.pud_entry(slot_start >> a.pud_shift)
            if pud == PUD_LEAF or kind == PMD_LEAF:
                mask = (1 << a.ptrs_per_pte) - 1
            if not mask:
                continue
            pages = np.flatnonzero(np.unpackbits(
                np.frombuffer(mask.to_bytes(a.ptrs_per_pte // 8, "little"), dtype=np.uint8),
                bitorder="little"))
            addrs = slot_start + (pages.astype(np.int64) << a.page_shift)
            addrs = addrs[(addrs >= start) & (addrs < end)]
            out.append((addrs - start) >> a.page_shift)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ windows
    def window(self, start: int, end: int) -> Window:
        """Dict view of every entry in ``[start, end)`` rounded out to PUD boundaries.

        The window remembers what it was read from (the state, its bounds in the state's
        arrays, the entries as read), so :meth:`replace_window` does no work for what did
        not change."""
        d = self.__dict__
        ps_, ptrs, pmd_shift, pud_shift, shift, _ = d.get("_g") or self._geo()
        lo = start >> pud_shift
        hi = ((end - 1) >> pud_shift) + 1
        li = d.get("_lists")
        rows_ = d.get("_rows")
        # (_is_small: a small state made here is taken on its list lengths, as takes() does)
        if (len(li[2]) <= SMALL_SLOTS and len(li[0]) <= SMALL_SLOTS
                if li is not None and rows_ is not None else _SmallState.takes(self)):
            # a few entries: Python lists and bisect (cheaper than numpy calls)
            pud_l, pudk_l, pmd_l, pmdk_l, row_l = li or self._lists_of()
            j0, j1 = bisect_left(pud_l, lo), bisect_left(pud_l, hi)
            pud = dict(zip(pud_l[j0:j1], pudk_l[j0:j1]))
            i0, i1 = bisect_left(pmd_l, lo << shift), bisect_left(pmd_l, hi << shift)
            slots, kinds, rows = pmd_l[i0:i1], pmdk_l[i0:i1], row_l[i0:i1]
        else:
            j0, j1 = self.pud_idx.searchsorted((lo, hi)).tolist()
            pud = dict(zip(self.pud_idx[j0:j1].tolist(), self.pud_kind[j0:j1].tolist()))
            i0, i1 = self.pmd_idx.searchsorted((lo << shift, hi << shift)).tolist()
            slots = self.pmd_idx[i0:i1].tolist()
            kinds = self.pmd_kind[i0:i1].tolist()
            rows = self.pmd_mask[i0:i1].tolist()
        full = (1 << ptrs) - 1
        ints = d.get("_ints")
        if ints is None:
            ints = self._row_ints()
        # (_row_int, inline for a row appended to a small state: its int as appended)
        n_base = len(rows_[0]) if rows_ is not None else None
        pmd = {}
        for slot, kind, row in zip(slots, kinds, rows):
            if kind == PMD_TABLE:
                m = ints.get(row)
                if m is None:
                    if n_base is not None and row >= n_base:
                        m = ints[row] = rows_[2][row - n_base]
                    else:
                        m = self._row_int(row)
                pmd[slot] = (kind, m)
            else:
                pmd[slot] = (kind, full)
        return Window(lo, hi, set(self.pud_tables), pud, pmd,
                      (self, lo, hi, pud.copy(), pmd.copy(), j0, j1, i0, i1))

    def _geo(self) -> tuple:
        """Page shift, PTEs per table, PMD shift, PUD shift, PMD slots per PUD slot (as a
        shift), PUD slots per top-level slot (as a shift; None with the PUD level folded)
        of this state's arch, read once per state."""
        g = self.__dict__.get("_g")
        if g is None:
            a = self.arch
            g = self.__dict__["_g"] = (a.page_shift, a.ptrs_per_pte, a.pmd_shift, a.pud_shift,
                                       a.pud_shift - a.pmd_shift,
                                       None if a.pud_folded else a.p4d_shift - a.pud_shift)
        return g

    def _is_small(self) -> bool:
        """At most :data:`SMALL_SLOTS` PMD and PUD entries, with the canonical dtypes: the
        windows of such a state are read and written on Python lists."""
        return _SmallState.takes(self)

    def _row_ints(self) -> dict[int, int]:
        """This state's cache of bitmap rows read as ints (``row -> int``; rows never
        change, so the cache is filled as rows are read and handed to derived states that
        keep the rows)."""
        c = self.__dict__.get("_ints")
        if c is None:
            c = self.__dict__["_ints"] = {}
        return c

    def replace_window(self, win: Window) -> PageTables:
        """A new state equal to this one with ``win``'s PUD slots replaced by its contents.

        Writing back a window read from this state (:meth:`window`) does no work for what
        did not change: unchanged PUD entries, or unchanged PMD entries, keep their arrays
        (and bitmap rows), and a window with nothing changed gives this state back. When
        the PMD entries changed, each distinct bitmap of the window is appended once and
        the window's entries are spliced in by position."""
        d = self.__dict__
        lo, hi = win.lo, win.hi
        geo = d.get("_g") or self._geo()
        shift = geo[4]
        lo_pmd, hi_pmd = lo << shift, hi << shift
        pud, pmd = win.pud, win.pmd
        read = win._read
        if read is not None and (read[0] is not self or read[1] != lo or read[2] != hi):
            read = None  # read from another state or span: nothing of it can be kept
        if read is not None:
            pud_same, pmd_same = pud == read[3], pmd == read[4]
        else:
            pud_same = pmd_same = False
        pkeys = None if pud_same else sorted(pud)
        mkeys = None if pmd_same else sorted(pmd)
        if (pkeys and not lo <= pkeys[0] <= pkeys[-1] < hi) or \
                (mkeys and not lo_pmd <= mkeys[0] <= mkeys[-1] < hi_pmd):
            raise ValueError("replace_window: an entry lies outside the window's PUD slots")
        tops = self.pud_tables
        if win.pud_tables != tops or type(tops) is not frozenset:
            tops = frozenset(win.pud_tables)
        if pud_same and pmd_same and tops is self.pud_tables:
            return self
        li = d.get("_lists")
        small = self._is_small()
        if small and li is None:
            li = self._lists_of()
        if read is not None:
            p0, p1, m0, m1 = read[5:]
        elif small:
            p0, p1 = bisect_left(li[0], lo), bisect_left(li[0], hi)
            m0, m1 = bisect_left(li[2], lo_pmd), bisect_left(li[2], hi_pmd)
        else:
            p0, p1 = self.pud_idx.searchsorted((lo, hi)).tolist()
            m0, m1 = self.pmd_idx.searchsorted((lo_pmd, hi_pmd)).tolist()
        ints = d.get("_ints")
        new_ints = {} if ints is None or len(ints) > _CARRY_INTS else ints.copy()
        rows_ = d.get("_rows")
        base_rows = len(rows_[0]) + len(rows_[2]) if rows_ is not None else len(self.masks)
        kinds, new_rows, added = [], [], []
        if not pmd_same:
            row_of: dict[int, int] = {}
            # each distinct bitmap of the window, appended after the state's rows
            for k in mkeys:
                kind, m = pmd[k]
                kinds.append(kind)
                if kind != PMD_TABLE:
                    new_rows.append(-1)
                    continue
                r = row_of.get(m)
                if r is None:
                    r = row_of[m] = base_rows + len(added)
                    new_ints[r] = m
                    added.append(m)
                new_rows.append(r)
        if small:
            pud_l, pudk_l, pmd_l, pmdk_l, row_l = li
            if not pud_same:
                pud_l = pud_l[:p0] + pkeys + pud_l[p1:]
                pudk_l = pudk_l[:p0] + [pud[k] for k in pkeys] + pudk_l[p1:]
            if not pmd_same:
                pmd_l = pmd_l[:m0] + mkeys + pmd_l[m1:]
                pmdk_l = pmdk_l[:m0] + kinds + pmdk_l[m1:]
                row_l = row_l[:m0] + new_rows + row_l[m1:]
            base, base_pop, extra, extra_pop = rows_ if rows_ is not None \
                else (self.masks, self.mask_pop, [], [])
            if added:
                extra = extra + added
                extra_pop = extra_pop + [m.bit_count() for m in added]
            out = object.__new__(PageTables)
            out.__dict__.update(arch=self.arch, pud_tables=tops,
                                _lists=(pud_l, pudk_l, pmd_l, pmdk_l, row_l),
                                _rows=(base, base_pop, extra, extra_pop), _ints=new_ints,
                                _g=geo)
            return out
        if pud_same:
            pud_idx, pud_kind = self.pud_idx, self.pud_kind
        else:
            pud_idx, pud_kind = _splice((self.pud_idx, self.pud_kind), p0, p1,
                                        (pkeys, [pud[k] for k in pkeys]), (_I64, np.int8))
        masks_arr, pop = self.masks, self.mask_pop
        if pmd_same:
            pmd_idx, pmd_kind, pmd_mask = self.pmd_idx, self.pmd_kind, self.pmd_mask
        else:
            if added:
                # every added bitmap's words from one buffer (what _int_to_words gives
                # each), its population from the int (what _mask_pop counts from the words)
                nbytes = self._geo()[1] // 8
                rows = np.frombuffer(b"".join([m.to_bytes(nbytes, "little") for m in added]),
                                     dtype="<u8").astype(np.uint64).reshape(-1, nbytes // 8)
                masks_arr = np.concatenate([masks_arr, rows])
                pop = np.concatenate([pop, np.array([m.bit_count() for m in added], np.int32)])
            pmd_idx, pmd_kind, pmd_mask = _splice(
                (self.pmd_idx, self.pmd_kind, self.pmd_mask), m0, m1,
                (mkeys, kinds, new_rows), (_I64, np.int8, np.int32))
        out = PageTables(self.arch, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask,
                               masks_arr, pop)
        out.__dict__.update(_ints=new_ints, _g=geo)
        return out

    @classmethod
    def _build(cls, arch, pud_tables, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, masks,
               pop=None):
        """A state from its arrays; ``pop`` (each bitmap's population) is counted unless given."""
        if pop is None:
            pop = _mask_pop(masks)
        return cls(arch, pud_tables, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, masks, pop)

    # ------------------------------------------------------------------ population
    def populate(self, start: int, end: int, *, every: int = 1, fraction: float = 1.0,
                 seed: int = 0, thp: bool = False, pud_leaf: bool = False) -> PageTables:
        """Map pages of ``[start, end)`` (fault them in), returning the new state.

        ``every=k`` maps the pages whose address is a multiple of k pages; ``fraction`` maps a
        seeded random subset (of those);
        ``thp=True`` maps every PMD slot the range covers completely as a huge leaf (a THP,
        or a 2 MiB hugetlb page) and the rest with base pages; ``pud_leaf`` likewise at PUD
        level (1 GiB hugetlb). Work is per PMD slot, vectorised, never per page.

        A range of at most :data:`SMALL_SLOTS` PMD slots on a state of at most as many
        entries (every synthetic call's layout) is populated by :meth:`_populate_small` on
        Python integers; it gives the arrays :meth:`_populate_arrays` gives, field for field
        (``tests/test_t13_mm_populate.py``).
        """
        a = self.arch
        _check_range(a.page_shift, start, end)
        if _SmallState.takes(self) and (((end - 1) >> a.pmd_shift) - (start >> a.pmd_shift)
                                          < SMALL_SLOTS):
            if every == 1 and not thp and not pud_leaf and self._is_fresh():
                return self._populate_fresh(start, end, self.__dict__.get("_g") or self._geo(),
                                            fraction, seed)
            return self._populate_small(start, end, every, fraction, seed, thp, pud_leaf)
        return self._populate_arrays(start, end, every, fraction, seed, thp, pud_leaf)

    def _populate_arrays(self, start: int, end: int, every: int, fraction: float, seed: int,
                         thp: bool, pud_leaf: bool) -> PageTables:
        """:meth:`populate` on numpy arrays, per PMD slot (any number of slots)."""
        a = self.arch
        ps, ptrs = a.page_shift, a.ptrs_per_pte
        w = _mask_words(a)
        pud_shift = a.pud_shift - a.pmd_shift
        slots = np.arange(start >> a.pmd_shift, ((end - 1) >> a.pmd_shift) + 1, dtype=_I64)
        first, last = int(slots[0]), int(slots[-1])
        leaf_puds = np.zeros(0, _I64)
        if pud_leaf:
            lo = -(-start >> a.pud_shift)
            hi = end >> a.pud_shift
            leaf_puds = np.arange(lo, hi, dtype=_I64)
        kinds = np.full(len(slots), PMD_TABLE, np.int8)
        if thp:
            full_slot = ((slots << a.pmd_shift) >= start) & (((slots + 1) << a.pmd_shift) <= end)
            kinds[full_slot] = PMD_LEAF
        # Bitmaps: interior slots share one pattern; edge slots get their own.
        # A page is mapped iff its address is a multiple of ``every`` pages (absolute, so the
        # pattern does not depend on where the range starts): slot j's first mapped index is
        # its phase, one of at most every / gcd(every, ptrs) values.
        idx = np.arange(ptrs) if every > 1 else None  # page index in a table, for the phases
        row_ids = np.empty(len(slots), np.int32)
        base_rows = len(self.masks)
        # bitmap rows appended after self.masks, in order: the drawn rows as one block
        # (``drawn_block``), then the rows of ``new_rows``
        drawn_block = np.zeros((0, w), np.uint64)
        new_rows: list[np.ndarray] = []
        if fraction >= 1.0 and every == 1:
            # one phase, 0: every page, the all-ones bitmap (what the pattern below packs
            # for phase 0 and every 1)
            new_rows.append(_int_to_words((1 << ptrs) - 1, w))
            row_ids[:] = base_rows
        elif fraction >= 1.0:
            phase = (-(slots << (a.pmd_shift - ps))) % every
            phases, inv = np.unique(phase, return_inverse=True)
            for ph in phases.tolist():
                pattern = (idx >= ph) & ((idx - ph) % every == 0)
                new_rows.append(np.packbits(pattern, bitorder="little").view("<u8").astype(np.uint64))
            row_ids[:] = base_rows + inv
        else:
            # Slot j's bitmap comes from the j-th run of ``ptrs`` draws of one generator
            # seeded with ``seed``. A slot that becomes a huge leaf keeps no bitmap, so its
            # draws are skipped (the generator advanced past them), not made.
            drawn = np.flatnonzero(~full_slot) if thp else None
            if drawn is None or len(drawn) == len(slots):
                drawn = np.arange(len(slots))
            rows = _drawn_rows(seed, len(slots), drawn.tolist(), ptrs, fraction)
            if every > 1:
                phase = (-(slots[drawn] << (a.pmd_shift - ps))) % every
                rows &= (idx[None, :] % every) == phase[:, None]
            drawn_block = np.packbits(rows, axis=1, bitorder="little").view("<u8").astype(np.uint64)
            row_ids[:] = 0  # the empty table; a huge leaf's row is dropped below
            row_ids[drawn] = np.arange(base_rows, base_rows + len(drawn))
        n_drawn = len(drawn_block)

        def row_words(r: int) -> np.ndarray:
            if r < base_rows:
                return self.masks[r]
            r -= base_rows
            return drawn_block[r] if r < n_drawn else new_rows[r - n_drawn]

        # Clip the first and last slot to the range.
        for k, slot in ((0, first), (len(slots) - 1, last)):
            base = slot << a.pmd_shift
            lo = (max(start, base) - base) >> ps
            hi = (min(end, base + a.pmd_size) - base) >> ps
            if lo == 0 and hi == ptrs:
                continue
            m = _words_to_int(row_words(int(row_ids[k]))) & range_mask(lo, hi)
            new_rows.append(_int_to_words(m, w))
            row_ids[k] = base_rows + n_drawn + len(new_rows) - 1
            kinds[k] = PMD_TABLE
        added = np.array(new_rows, np.uint64).reshape(-1, w)
        if n_drawn:
            added = np.concatenate([drawn_block, added]) if len(added) else drawn_block
        all_masks = np.concatenate([self.masks, added]) if base_rows else added
        pop = np.concatenate([self.mask_pop, _mask_pop(added)]) if base_rows else _mask_pop(added)
        # A slot where no page is touched gets no page table: faulting creates tables only
        # on the way to a page it maps (seen on the real kernel: a sparse source's empty
        # slot costs no flush when moved).
        keep = (kinds == PMD_LEAF) | (pop[row_ids] > 0)
        if len(leaf_puds):
            keep &= ~np.isin(slots >> pud_shift, leaf_puds)
        slots, kinds, row_ids = slots[keep], kinds[keep], row_ids[keep]
        if thp:  # without it every kept slot is a PTE table
            row_ids[kinds == PMD_LEAF] = -1
        pud_of = slots >> pud_shift  # sorted, as slots are
        if len(pud_of) <= 64:
            pud_slots = list(dict.fromkeys(pud_of.tolist()))  # np.unique's values, in order
        else:  # np.unique of a sorted array: where it takes a new value
            new_at = np.empty(len(pud_of), bool)
            new_at[0] = True
            np.not_equal(pud_of[1:], pud_of[:-1], out=new_at[1:])
            pud_slots = pud_of[new_at].tolist()
        new = PageTables._build(a, self.pud_tables, self.pud_idx, self.pud_kind, self.pmd_idx,
                                self.pmd_kind, self.pmd_mask, all_masks, pop)
        return new._merge_pmds(slots, kinds, row_ids)._with_puds(pud_slots, leaf_puds)

    def _populate_small(self, start: int, end: int, every: int, fraction: float, seed: int,
                        thp: bool, pud_leaf: bool) -> PageTables:
        """:meth:`populate` of a few PMD slots on a small state, on Python ints and lists
        (:class:`_SmallState`): the same decisions as :meth:`_populate_arrays` in the same
        order (bitmap rows appended in the same order, the same dtypes)."""
        st = _SmallState(self)
        st.populate(start, end, every, fraction, seed, thp, pud_leaf)
        return st.freeze()

    def populate_each(self, ranges) -> PageTables:
        """``self.populate(start, end, **kw)`` for each ``(start, end, kw)`` of ``ranges`` in
        turn; the state in between is kept as Python lists while it stays small (one array
        built per field at the end, the arrays the chained calls build)."""
        pt, st = self, None
        d = self.__dict__
        g = d.get("_g") or self._geo()
        page_shift, pmd_shift = g[0], g[2]
        if type(ranges) is list and len(ranges) == 1 and self._is_fresh():
            # one range on an empty small state (a synthetic call's source), no stride or
            # huge leaves: _populate_fresh (held to the general steps in
            # tests/test_t13e_calls_layout.py)
            start, end, kw = ranges[0]
            if not kw.keys() - _FRESH_KW and not kw.get("thp") and not kw.get("pud_leaf") \
                    and ((end - 1) >> pmd_shift) - (start >> pmd_shift) < SMALL_SLOTS:
                _check_range(page_shift, start, end)
                return self._populate_fresh(start, end, g, kw.get("fraction", _FRACTION_0),
                                            kw.get("seed", _SEED_0))
        for start, end, kw in ranges:
            _check_range(page_shift, start, end)
            few = ((end - 1) >> pmd_shift) - (start >> pmd_shift) < SMALL_SLOTS
            if st is None:
                if few and _SmallState.takes(pt):
                    # (a range of more slots goes the array way at once, from the state as
                    # is; a state takes() accepts is one _SmallState.small accepts)
                    st = _SmallState(pt)
                    small = True
                else:
                    small = False
            else:
                small = st.small(start, end)
            if kw and not _POPULATE_KW.issuperset(kw):
                raise TypeError(f"populate() got unexpected keyword arguments "
                                f"{sorted(kw.keys() - _POPULATE_KW)}")
            if small:
                # (every, fraction, seed, thp, pud_leaf: kw's values, else populate's
                # defaults; by position: a star call of a merged dict binds slower)
                got = kw.get
                st.populate(start, end, got("every", _EVERY_0), got("fraction", _FRACTION_0),
                            got("seed", _SEED_0), got("thp", _THP_0), got("pud_leaf", _PUD_LEAF_0))
                continue
            if st is not None:
                pt, st = st.freeze(), None
            pt = pt.populate(start, end, **kw)
        return st.freeze() if st is not None else pt

    def _is_fresh(self) -> bool:
        """Whether this is an empty small state made here (no entries, one bitmap row: the
        empty table), which :meth:`_populate_fresh` populates directly."""
        d = self.__dict__
        if d.get("_lists") != _EMPTY_LISTS:
            return False
        rows = d.get("_rows")
        return rows is not None and len(rows[0]) == 1 and not rows[2]

    def _populate_fresh(self, start: int, end: int, g: tuple, fraction: float = 1.0,
                        seed: int = 0) -> PageTables:
        """``populate(start, end, fraction=fraction, seed=seed)`` (a non-empty, page-aligned
        range of fewer than :data:`SMALL_SLOTS` PMD slots; no stride, no huge leaves) on an
        empty small state (no entries, one bitmap row: the empty table): what
        :class:`_SmallState`'s ``populate`` and ``freeze`` make of it, built directly.
        Appended: the all-ones row (``fraction`` >= 1) or each slot's drawn row
        (:func:`_drawn_rows`), then each edge slot's clipped row (the first slot, then the
        last: one slot clipped twice when it is both), in that order; a slot whose row maps
        a page is a PTE table, and each PUD slot above one a PMD table."""
        d = self.__dict__
        ps, ptrs, pmd_shift, _, sub, top_shift = g
        first, last = start >> pmd_shift, (end - 1) >> pmd_shift
        n = last - first + 1
        if fraction >= 1.0:
            new, new_pop = [(1 << ptrs) - 1], [ptrs]  # row 1 (row 0 is the empty table)
            row_l = [1] * n
        else:  # slot j's row: the j-th run of draws, row 1 + j
            new = _rows_to_ints(np.packbits(_drawn_rows(seed, n, list(range(n)), ptrs,
                                                        fraction), axis=1, bitorder="little"))
            new_pop = [m.bit_count() for m in new]
            row_l = list(range(1, n + 1))
        for k in (0, n - 1):
            clip = _edge_mask(start, end, (first + k) << pmd_shift, ps, ptrs)
            if clip is None:
                continue
            m = new[row_l[k] - 1] & clip
            new.append(m)
            new_pop.append(m.bit_count())
            row_l[k] = len(new)
        pmd_l = list(range(first, last + 1))
        if fraction < 1.0 and 0 in new_pop:  # a slot that maps no page gets no table
            kept = [j for j in range(n) if new_pop[row_l[j] - 1] > 0]
            if not kept:  # nothing mapped: the state as it was, with the rows appended
                return self._with_rows(new, new_pop, g)
            pmd_l = [first + j for j in kept]
            row_l = [row_l[j] for j in kept]
            pud_l = list(dict.fromkeys([sl >> sub for sl in pmd_l]))
        else:
            pud_l = list(range(first >> sub, (last >> sub) + 1))
        top = self.pud_tables
        if type(top) is not frozenset:
            top = frozenset(top)
        if top_shift is not None:
            tops = set(map(top_shift.__rrshift__, pud_l))
            if not tops <= top:
                top = frozenset(top | tops)
        base_rows, base_pop, extra, extra_pop = d["_rows"]
        ints = d.get("_ints")
        out = object.__new__(PageTables)
        out.__dict__.update(arch=self.arch, pud_tables=top,
                            _lists=(pud_l, [PUD_TABLE] * len(pud_l), pmd_l,
                                    [PMD_TABLE] * len(pmd_l), row_l),
                            _rows=(base_rows, base_pop, extra + new, extra_pop + new_pop),
                            _ints={} if ints is None or len(ints) > _CARRY_INTS else ints.copy(),
                            _g=g)
        return out

    def _with_rows(self, new: list[int], new_pop: list[int], g: tuple) -> PageTables:
        """This small state with bitmap rows ``new`` (populations ``new_pop``) appended and
        no entry changed: :class:`_SmallState`'s ``freeze`` of a population that mapped
        nothing."""
        d = self.__dict__
        top = self.pud_tables
        if type(top) is not frozenset:
            top = frozenset(top)
        base_rows, base_pop, extra, extra_pop = d["_rows"]
        ints = d.get("_ints")
        out = object.__new__(PageTables)
        out.__dict__.update(arch=self.arch, pud_tables=top, _lists=d["_lists"],
                            _rows=(base_rows, base_pop, extra + new, extra_pop + new_pop),
                            _ints={} if ints is None or len(ints) > _CARRY_INTS else ints.copy(),
                            _g=g)
        return out

    def _merge_pmds(self, slots, kinds, row_ids) -> PageTables:
        """Union new PMD entries into the state (OR-ing bitmaps of existing PTE tables)."""
        a = self.arch
        w = _mask_words(a)
        if not len(self.pmd_idx):  # nothing to merge with: the new entries, already sorted
            return PageTables._build(a, self.pud_tables, self.pud_idx, self.pud_kind, slots,
                                     kinds, row_ids, self.masks, self.mask_pop)
        pos = np.searchsorted(self.pmd_idx, slots)
        exists = (pos < len(self.pmd_idx)) & (self.pmd_idx[np.minimum(pos, len(self.pmd_idx) - 1)] == slots)
        if len(slots) and pos[0] == pos[-1] and not exists.any():
            # every new entry falls between the same two existing ones (a range away from
            # what is mapped): the sorted union is the existing entries with the new ones
            # spliced in at that position, what the stable sort below gives
            p = int(pos[0])
            return PageTables._build(
                a, self.pud_tables, self.pud_idx, self.pud_kind,
                np.concatenate([self.pmd_idx[:p], slots, self.pmd_idx[p:]]),
                np.concatenate([self.pmd_kind[:p], kinds, self.pmd_kind[p:]]),
                np.concatenate([self.pmd_mask[:p], row_ids, self.pmd_mask[p:]]),
                self.masks, self.mask_pop)
        masks = self.masks
        merged: list[np.ndarray] = []  # the ORed bitmaps, appended after ``masks`` in order
        old_kind = self.pmd_kind.copy()
        old_rows = self.pmd_mask.copy()
        for k in np.flatnonzero(exists):
            i = pos[k]
            if old_kind[i] == PMD_LEAF or kinds[k] == PMD_LEAF:
                old_kind[i], old_rows[i] = PMD_LEAF, -1
                continue
            m = _words_to_int(masks[old_rows[i]]) | _words_to_int(masks[row_ids[k]])
            merged.append(_int_to_words(m, w))
            old_rows[i] = len(masks) + len(merged) - 1
        add = ~exists
        pmd_idx = np.concatenate([self.pmd_idx, slots[add]])
        pmd_kind = np.concatenate([old_kind, kinds[add]])
        pmd_mask = np.concatenate([old_rows, row_ids[add]])
        order = np.argsort(pmd_idx, kind="stable")
        if not merged:
            all_masks, pop = self.masks, self.mask_pop
        else:
            added = np.array(merged, np.uint64).reshape(-1, w)
            # the state's rows keep their populations; the ORed rows are counted
            all_masks = np.concatenate([masks, added])
            pop = np.concatenate([self.mask_pop, _mask_pop(added)])
        return PageTables._build(a, self.pud_tables, self.pud_idx, self.pud_kind, pmd_idx[order],
                                 pmd_kind[order], pmd_mask[order], all_masks, pop)

    def _with_puds(self, table_slots: list[int], leaf_slots: np.ndarray) -> PageTables:
        a = self.arch
        kinds = dict(zip(self.pud_idx.tolist(), self.pud_kind.tolist(), strict=True))
        for s in table_slots:
            kinds.setdefault(s, PUD_TABLE)
        for s in leaf_slots.tolist():
            kinds[s] = PUD_LEAF
        items = sorted(kinds.items())
        top = set(self.pud_tables)
        if not a.pud_folded:
            shift = a.p4d_shift - a.pud_shift
            top.update(int(s) >> shift for s, _ in items)
        return PageTables._build(a, frozenset(top), np.array([k for k, _ in items], _I64),
                                 np.array([v for _, v in items], np.int8), self.pmd_idx,
                                 self.pmd_kind, self.pmd_mask, self.masks, self.mask_pop)


@dataclass
class Window:
    """Mutable dict view of PUD slots ``[lo, hi)`` (and all PMD entries under them)."""

    lo: int
    hi: int
    pud_tables: set[int]
    pud: dict[int, int]
    pmd: dict[int, tuple[int, int]]
    #: What :meth:`PageTables.window` read: ``(state, lo, hi, its PUD entries, its PMD
    #: entries, j0, j1, i0, i1)``, the window's entries as read and its bounds in the
    #: state's arrays (``pud_idx[j0:j1]``, ``pmd_idx[i0:i1]``); None for a window made by hand.
    _read: tuple | None = field(default=None, repr=False, compare=False)


class _SmallState:
    """A small :class:`PageTables` being populated, held as Python values: PMD entries
    ``slot -> (kind, row)`` and PUD entries ``slot -> kind`` (dicts, sorted when frozen),
    the bitmap rows appended after the base state's as ints with their populations.

    :meth:`populate` is :meth:`PageTables._populate_arrays` step for step: the same slots
    kept, the same rows appended in the same order (new bitmaps, the clipped edges, then
    the OR of each slot already mapped, in slot order), so :meth:`freeze` builds the arrays
    the chained array calls build. Only states with the canonical dtypes are taken (the
    arrays' dtypes then stay those)."""

    __slots__ = ("pt", "arch", "geo", "full", "top_shift", "pmd", "pud", "new", "new_pop",
                 "base_rows", "pmd_changed", "pud_changed")

    @staticmethod
    def takes(pt: PageTables) -> bool:
        d = pt.__dict__
        li = d.get("_lists")
        if li is not None and "_rows" in d:  # a small state: canonical by construction
            return len(li[2]) <= SMALL_SLOTS and len(li[0]) <= SMALL_SLOTS
        return (len(pt.pmd_idx) <= SMALL_SLOTS and len(pt.pud_idx) <= SMALL_SLOTS
                and pt.pmd_idx.dtype == _I64 and pt.pmd_kind.dtype == np.int8
                and pt.pmd_mask.dtype == np.int32 and pt.pud_idx.dtype == _I64
                and pt.pud_kind.dtype == np.int8 and pt.masks.dtype == np.uint64
                and pt.mask_pop.dtype == np.int32 and len(pt.masks) > 0
                and sys.byteorder == "little")  # rows are joined as little-endian bytes

    def __init__(self, pt: PageTables):
        d = pt.__dict__
        self.pt, self.arch = pt, pt.arch
        g = self.geo = d.get("_g") or pt._geo()
        self.full = (1 << g[1]) - 1
        self.top_shift = g[5]
        pud_l, pudk_l, pmd_l, pmdk_l, row_l = d.get("_lists") or pt._lists_of()
        self.pmd = dict(zip(pmd_l, zip(pmdk_l, row_l))) if pmd_l else {}
        self.pud = dict(zip(pud_l, pudk_l)) if pud_l else {}
        self.new: list[int] = []
        self.new_pop: list[int] = []
        rows = d.get("_rows")
        self.base_rows = len(rows[0]) + len(rows[2]) if rows is not None else len(pt.masks)
        self.pmd_changed = self.pud_changed = False

    def small(self, start: int, end: int) -> bool:
        pmd_shift = self.geo[2]
        return (((end - 1) >> pmd_shift) - (start >> pmd_shift) < SMALL_SLOTS
                and len(self.pmd) <= SMALL_SLOTS and len(self.pud) <= SMALL_SLOTS)

    def row_int(self, r: int) -> int:
        b = self.base_rows
        return self.new[r - b] if r >= b else self.pt._row_int(r)

    def populate(self, start: int, end: int, every: int, fraction: float, seed: int,
                 thp: bool, pud_leaf: bool) -> None:
        ps, ptrs, pmd_shift, a_pud_shift, pud_shift, _ = self.geo
        full = self.full
        first, last = start >> pmd_shift, (end - 1) >> pmd_shift
        slots = range(first, last + 1)
        n = last - first + 1
        leaf_puds = range(-(-start >> a_pud_shift), end >> a_pud_shift) if pud_leaf else ()
        kinds = [PMD_TABLE] * n
        if thp:
            full_slot = [(sl << pmd_shift) >= start and ((sl + 1) << pmd_shift) <= end
                         for sl in slots]
            kinds = [PMD_LEAF if f else PMD_TABLE for f in full_slot]
        new, new_pop, b = self.new, self.new_pop, self.base_rows
        rows0 = b + len(new)  # the first row this call appends
        if fraction >= 1.0 and every == 1:
            new.append(full)
            new_pop.append(ptrs)
            row_ids = [rows0] * n
        else:
            if fraction >= 1.0:
                phase = [(-(sl << (pmd_shift - ps))) % every for sl in slots]
                phases = sorted(set(phase))
                added = [_every_pattern(ptrs, every, ph) for ph in phases]
                at = {ph: rows0 + i for i, ph in enumerate(phases)}
                row_ids = [at[ph] for ph in phase]
            else:
                drawn = [j for j in range(n) if not full_slot[j]] if thp else list(range(n))
                rows = _drawn_rows(seed, n, drawn, ptrs, fraction)
                added = _rows_to_ints(np.packbits(rows, axis=1, bitorder="little"))
                if every > 1:
                    added = [m & _every_pattern(ptrs, every,
                                                (-(slots[j] << (pmd_shift - ps))) % every)
                             for m, j in zip(added, drawn, strict=True)]
                row_ids = [0] * n  # the empty table; a huge leaf's row is dropped below
                for i, j in enumerate(drawn):
                    row_ids[j] = rows0 + i
            new += added
            new_pop += [m.bit_count() for m in added]
        # Clip the first and last slot to the range.
        for k in (0, n - 1):
            clip = _edge_mask(start, end, (first + k) << pmd_shift, ps, ptrs)
            if clip is None:
                continue
            r = row_ids[k]
            m = (new[r - b] if r >= b else self.pt._row_int(r)) & clip
            new.append(m)
            new_pop.append(m.bit_count())
            row_ids[k] = b + len(new) - 1
            kinds[k] = PMD_TABLE
        # A slot where no page is touched gets no page table (see _populate_arrays); the
        # rest merge into the entries, in slot order.
        pmd, pud = self.pmd, self.pud
        merged = []
        for j, sl in enumerate(slots):
            kind, r = kinds[j], row_ids[j]
            if kind != PMD_LEAF and (new_pop[r - b] if r >= b else self.pt._row_pop(r)) <= 0:
                continue
            if leaf_puds and (sl >> pud_shift) in leaf_puds:
                continue
            if thp and kind == PMD_LEAF:
                r = -1
            old = pmd.get(sl)
            if old is None:
                pmd[sl] = (kind, r)
            elif old[0] == PMD_LEAF or kind == PMD_LEAF:
                pmd[sl] = (PMD_LEAF, -1)
            else:
                merged.append((sl, self.row_int(old[1]) | self.row_int(r)))
            self.pmd_changed = True
            q = sl >> pud_shift
            if q not in pud:
                pud[q] = PUD_TABLE
                self.pud_changed = True
        for sl, m in merged:
            new.append(m)
            new_pop.append(m.bit_count())
            pmd[sl] = (pmd[sl][0], b + len(new) - 1)
        for q in leaf_puds:
            pud[q] = PUD_LEAF
            self.pud_changed = True

    def freeze(self) -> PageTables:
        """The state populated, as a small :class:`PageTables` (its arrays built when read)."""
        pt = self.pt
        d = pt.__dict__
        pud_l, pudk_l, pmd_l, pmdk_l, row_l = d["_lists"]  # read by __init__
        if self.pmd_changed:  # (not empty then: an entry was set)
            pmd = self.pmd
            pmd_l = sorted(pmd)
            # the (kind, row) pairs in slot order, as two lists (no comprehension frames)
            pmdk_l, row_l = map(list, zip(*map(pmd.__getitem__, pmd_l)))
        if self.pud_changed:
            pud = self.pud
            pud_l = sorted(pud)
            pudk_l = list(map(pud.__getitem__, pud_l))
        top = pt.pud_tables
        if type(top) is not frozenset:
            top = frozenset(top)
        shift = self.top_shift
        if shift is not None:
            tops = set(map(shift.__rrshift__, pud_l))  # {q >> shift for q in pud_l}
            if not tops <= top:
                top = frozenset(top | tops)
        rows = d.get("_rows")
        base, base_pop, extra, extra_pop = rows if rows is not None \
            else (pt.masks, pt.mask_pop, [], [])
        if self.new:  # (their ints are read from ``extra`` when asked for)
            extra = extra + self.new
            extra_pop = extra_pop + self.new_pop
        ints = d.get("_ints")
        out = object.__new__(PageTables)
        out.__dict__.update(arch=self.arch, pud_tables=top,
                            _lists=(pud_l, pudk_l, pmd_l, pmdk_l, row_l),
                            _rows=(base, base_pop, extra, extra_pop),
                            _ints={} if ints is None or len(ints) > _CARRY_INTS else ints.copy(),
                            _g=self.geo)
        return out
