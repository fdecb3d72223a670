"""Call templates: everything about replaying one plan that does not depend on the clock.

For every call the caller needs the plan's row costs (:func:`perfsim.cost.model.row_costs`),
which rows are contended, the coalesced segments and their durations, the holds and flushes
each uncontended segment records (relative to the segment's start), and the call's totals
(PTEs moved, flushes, cost per category...). A :class:`CallTemplate` holds all of it, built
once with numpy; replaying it costs a few Python operations per segment.

**Reuse.** Within one run, calls whose plans have the same *signature* share one template
(:class:`TemplateCache`, one per :class:`~perfsim.engine.machine.Machine`, so runs share
no template; what they share is the priced rows of a profile, :func:`profile_row_memo`, a
table of per-profile constants). The signature is every column the template is computed from: the plan's
length, every column of its ``Steps`` the template is computed from (:data:`SIGNATURE_COLUMNS`:
the non-address columns but ``length``: kind, phase, counts, flushes, IPIs, rmap and PTL
counts) with its dtype, the per-row lock-set ids and the lock-set names, and the mm's CPU
count. Calls in an mm whose
page-table spinlocks a walker takes are never reused (which of their rows are contended
depends on their addresses and that mm's walkers). Templates are reused only when the cost of a plan is a pure
function of the plan, i.e. the cost profile has no jitter: :func:`row_costs` then draws
nothing from the run's generator, so skipping it leaves every later draw unchanged. With
jitter a template is built per call from that call's draws, exactly as before.

The cost model reads no address column (its counts come from the columns above), which is
what makes the signature sufficient; ``tests/test_plan_cache.py`` holds cached and fresh
templates to the same values over many random plans and translated copies of them.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import accumulate, compress, repeat
from operator import add, eq, gt, itemgetter, sub

import numpy as np

from perfsim.cost.counts import ROW_PARAMS
from perfsim.cost.model import (
    CATEGORIES,
    LIST_COLUMNS,
    SCALAR_ROWS,
    RowCosts,
    column_sequences,
    lay_out,
    periodic_jittered_row_costs,
    periodic_layout,
    periodic_prices,
    periodic_row_costs,
    scalar_row_costs,
    vector_row_costs,
)
from perfsim.engine.coalesce import contended_rows, segments
from perfsim.engine.records import CallStats, DeferredColumn
from perfsim.engine.records import ColumnList as _L
from perfsim.planner import steps as S

_I64 = np.int64
_PUD_MOVES = (S.K_PUD_MOVE, S.K_HUGE_PUD_MOVE)
#: Columns whose whole-plan totals a call record carries (:func:`build_template`).
_STAT_SUM_COLUMNS = ("flushes", "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte", "freed")

#: The columns a call template is computed from: every non-address column except
#: ``length`` (a row's byte length is priced through its counts, never directly: the
#: syscall row's length is the request's, which differs from call to call).
#: ``tests/test_plan_cache.py`` holds templates of plans differing only in the other
#: columns to equal ones.
SIGNATURE_COLUMNS = tuple(c for c in S.INT_COLUMNS if c != "length")
#: Positions in :data:`~perfsim.cost.model.LIST_COLUMNS` of the columns a template reads.
(_C_KIND, _C_PTES, _C_FLUSHES, _C_FLUSH_PAGES, _C_FLUSH_FULL, _C_FREED, _C_RMAP) = (
    LIST_COLUMNS.index(c) for c in ("kind", "ptes", "flushes", "flush_pages", "flush_full",
                                    "freed", "rmap"))
_COST_FIELDS = tuple(f"cost_{c}_ns" for c in CATEGORIES)
_C_ALLOCS = tuple(LIST_COLUMNS.index(c) for c in ("alloc_p4d", "alloc_pud", "alloc_pmd",
                                                  "alloc_pte"))


class SegmentRecords:
    """What one uncontended segment records, relative to its start time ``t0``.

    ``holds``: one entry per (lock set, lock name), in the order the engine writes them:
    ``(name, steps, offsets_ns, holds_ns)``; a hold starts (is requested and acquired) at
    ``t0 + offset``. ``flush``: ``(steps, offsets_ns, full, pages, targets, stolen_ns)`` or
    None; a flush happens at ``t0 + offset``. ``credits``: for the *j*-th other CPU of the
    mm (in cpumask order), the ``(offset_ns, stolen_ns)`` of every flush that interrupts it
    (a flush with ``targets = t`` interrupts the first ``t``). The steps, offsets and the
    rest are numpy arrays, or Python lists in a small template (the engine only hands them
    to its record blocks, which make them arrays of ``records.SEGMENT_DTYPES`` when the
    tables are read). Built once, never changed
    (a plain slotted class: one is made per template miss)."""

    __slots__ = ("holds", "flush", "credits")

    def __init__(self, holds: tuple, flush: tuple | None, credits: tuple) -> None:
        self.holds, self.flush, self.credits = holds, flush, credits


class CallTemplate:
    """One plan, priced and segmented (module docstring).

    ``segments``: ``(first row, end row, contended, duration_ns)`` per segment; ``records``:
    a :class:`SegmentRecords` per uncontended segment (None for contended ones); ``row_*``:
    per-row Python lists the contended rows need; ``stats``: the call record's columns from
    ``steps`` to the last cost category. Built once, never changed."""

    __slots__ = ("rc", "segments", "records", "any_contended", "row_total", "row_lock_set",
                 "row_rmap", "row_flush", "stats")

    def __init__(self, rc, segments: tuple, records: tuple, any_contended: bool,
                 row_total: list, row_lock_set: list, row_rmap: list, row_flush: list,
                 stats: tuple) -> None:
        self.rc, self.segments, self.records = rc, segments, records
        self.any_contended = any_contended
        self.row_total, self.row_lock_set = row_total, row_lock_set
        self.row_rmap, self.row_flush, self.stats = row_rmap, row_flush, stats


def _credits(offsets: list, targets: list, stolen: list) -> tuple:
    """:attr:`SegmentRecords.credits` of a segment's flushes (their offsets, IPI targets and
    stolen times, in row order)."""
    first = targets[0] if targets else 0
    if targets.count(first) == len(targets):
        # every flush interrupts the same CPUs (a shootdown reaching the mm's other CPUs):
        # each of them is reached by every flush, one tuple shared, as the loop below gives
        return (tuple(zip(offsets, stolen, strict=True)),) * first
    cr = []
    counts = set(targets)
    for j in range(max(targets, default=0)):
        if j and j not in counts:
            # no flush interrupts exactly j CPUs: the flushes that reach the j-th CPU
            # (those with more than j targets) are the ones that reached the previous
            cr.append(cr[-1])
            continue
        cr.append(tuple(compress(zip(offsets, stolen, strict=True), map(gt, targets, repeat(j)))))
    return tuple(cr)


def _segment_records(steps, cols, rc, cum, a: int, b: int) -> SegmentRecords:
    rm = np.flatnonzero(cols["rmap"][a:b] > 0) + a
    fl = np.flatnonzero(cols["flushes"][a:b]) + a
    sets = steps.lock_set[rm] if len(rm) else rm  # (reading lock_set materialises a plan)
    return _records_of(steps.lock_sets, rm, sets, fl,
                       cols["flush_full"][fl].astype(bool), cols["flush_pages"][fl].astype(_I64),
                       rc, cum, cum[a])


def _records_of(lock_sets, rm, sets, fl, full, pages, rc, cum, base) -> SegmentRecords:
    """A segment's :class:`SegmentRecords` from its rows that take rmap locks (``rm``, their
    lock-set ids ``sets``) and its rows that flush (``fl``, their ``full`` and ``pages``),
    as int64 row arrays; ``cum``: the plan's cumulative row costs, ``base`` the segment's
    start in it."""
    holds = []
    if len(rm):
        off = cum[rm] - base
        hold = rc.total[rm]
        for sid in np.unique(sets).tolist():
            sel = sets == sid
            rows, o, h = rm[sel].astype(_I64), off[sel], hold[sel]
            for name in lock_sets[sid]:
                holds.append((name, rows, o, h))
    flush = None
    credits = ()
    if len(fl):
        off = cum[fl + 1]  # a new array: shifted in place, kept as int64 (no copy)
        if base:
            off -= base
        off = off.astype(_I64, copy=False)
        targets = rc.ipis[fl]
        stolen = rc.stolen[fl]
        flush = (fl.astype(_I64, copy=False), off, full, pages, targets, stolen)
        if targets.any():  # else no other CPU is interrupted: no credit (_credits gives ())
            credits = _credits(off.tolist(), targets.tolist(), stolen.tolist())
    return SegmentRecords(tuple(holds), flush, credits)


def _segment_records_of_lists(lock_sets, lock_set, c, total, ipis, stolen, cum, a: int,
                              b: int) -> SegmentRecords:
    """:func:`_segment_records` from Python lists (``c``: the plan's
    :func:`~perfsim.cost.model.column_lists`; ``lock_set``: its per-row lock-set ids, or
    None when no row takes an rmap lock): the same values, as Python lists
    (:class:`~perfsim.engine.records.ColumnList`: ints; bools for ``full``), which the
    engine only hands to its record blocks (``records.SEGMENT_DTYPES`` makes them the
    arrays' dtypes when the tables are read)."""
    base = cum[a]
    holds = []
    rows = range(a, b)
    rmap = c[_C_RMAP][a:b]
    rm = list(compress(rows, map(gt, rmap, repeat(0)))) if any(rmap) else ()
    if rm:
        for sid in sorted({lock_set[i] for i in rm}):
            sel = _L([i for i in rm if lock_set[i] == sid])
            o = _L([cum[i] - base for i in sel])
            h = _L([total[i] for i in sel])
            for name in lock_sets[sid]:
                holds.append((name, sel, o, h))
    flush = None
    credits = ()
    fl = list(compress(rows, c[_C_FLUSHES][a:b]))
    if fl:
        ends = map(cum.__getitem__, map(add, fl, repeat(1)))  # each flush's row's end
        ol = _L(map(sub, ends, repeat(base)) if base else ends)
        tl = _L(map(ipis.__getitem__, fl))
        sl = _L(map(stolen.__getitem__, fl))
        full, pages = c[_C_FLUSH_FULL], c[_C_FLUSH_PAGES]
        flush = (_L(fl), ol, _L(map(bool, map(full.__getitem__, fl))),
                 _L(map(pages.__getitem__, fl)), tl, sl)
        credits = _credits(ol, tl, sl)
    return SegmentRecords(tuple(holds), flush, credits)


def lock_ids(steps) -> list[int]:
    """``steps.lock_set`` as a Python list; from its row tuples when the table keeps them
    (``Steps.row_tuples``), numbered as the table numbers them (``steps.lock_sets``), so its
    columns are not made for it."""
    rows = steps.row_tuples
    if rows is None:
        return steps.lock_set.tolist()
    if len(steps.lock_sets) <= 1:
        return [0] * len(steps)
    ids = {k: i for i, k in enumerate(steps.lock_sets)}
    return [ids[k] for k in rows[1]]


def _bounds(steps, n: int, hot_locks, ptl_hot) -> list:
    """``(first row, end row, contended)`` of each segment of the plan."""
    if n and ptl_hot is None and not hot_locks:
        return [(0, n, False)]  # what segments() gives when no row is contended
    hot_sets = [any(nm in hot_locks for nm in ls) for ls in steps.lock_sets]
    if n and ptl_hot is None and not any(hot_sets):
        return [(0, n, False)]
    starts, ends, hots = segments(contended_rows(steps, np.array(hot_sets, bool), ptl_hot))
    return list(zip(starts.tolist(), ends.tolist(), hots.tolist(), strict=True))


_HOT = itemgetter(2)  # a bound's contended flag


def _small_template(steps, profile, cpus: int, hot_locks, ptl_hot, folio,
                    memo=None) -> CallTemplate:
    """:func:`build_template` of a plan of a few rows at the medians, from its columns as
    Python lists (:func:`~perfsim.cost.model.scalar_row_costs`, with its ``memo``): no
    numpy call but the arrays a segment records."""
    n = len(steps)
    c = column_sequences(steps)
    rc = scalar_row_costs(c, profile, cpus, folio, memo)
    bounds = _bounds(steps, n, hot_locks, ptl_hot)
    total, ipis, stolen = rc.total_list, rc.ipis_list, rc.stolen_list
    cum = list(accumulate(total, initial=0))
    rmap, flushes = c[_C_RMAP], c[_C_FLUSHES]
    any_hot = any(map(_HOT, bounds))
    lock_set = lock_ids(steps) if any_hot or any(rmap) else None
    lock_sets = steps.lock_sets
    segs, recs = [], []
    for a, b, h in bounds:
        segs.append((a, b, h, cum[b] - cum[a]))
        recs.append(None if h else _segment_records_of_lists(lock_sets, lock_set, c, total,
                                                             ipis, stolen, cum, a, b))
    # CallStats' fields in their order (CALL_STAT_COLUMNS; a test holds this tuple to the
    # keyword-built record of _array_template), then the cost categories
    summed = _row_stats(c)
    stats = (n, len(bounds), *summed[:5], sum(ipis), *summed[5:], *rc.category_totals())
    if any_hot:
        row_flush = [None] * n
        full, pages = c[_C_FLUSH_FULL], c[_C_FLUSH_PAGES]
        for i in compress(range(n), flushes):
            row_flush[i] = (bool(full[i]), pages[i], ipis[i], stolen[i])
        lists = (total, lock_set, list(rmap), row_flush)
    else:
        lists = ([], [], [], [])
    return CallTemplate(rc, tuple(segs), tuple(recs), any_hot, *lists, stats)


def build_template(steps, profile, cpus: int, rng, hot_locks, ptl_hot,
                   folio=None, memo=None) -> CallTemplate:
    """Price and segment one plan (``ptl_hot``: rows a walker's spinlock may hit, or None;
    ``folio``: the source VMA's large-folio mechanisms, :func:`row_costs`'s ``folio``).
    A plan of at most :data:`~perfsim.cost.model.SCALAR_ROWS` rows priced at the medians is
    built from Python lists (:func:`_small_template`): the same template. ``memo``: a
    dict kept for one profile and one ``folio`` (:func:`~perfsim.cost.model.scalar_row_costs`)."""
    n = len(steps)
    if 0 < n <= SCALAR_ROWS and (rng is None or profile.is_fixed):
        return _small_template(steps, profile, cpus, hot_locks, ptl_hot, folio, memo)
    if ptl_hot is None:
        pieces = periodic_layout(steps)
        if pieces is not None and _bounds(steps, n, hot_locks, None) == [(0, n, False)]:
            return _periodic_template(steps, pieces, profile, cpus, rng, folio, memo)
    return _array_template(steps, profile, cpus, rng, hot_locks, ptl_hot, folio,
                           _template_costs)


class _PlanColumns:
    """A plan's columns read one at a time: those of a plan made of parts and not
    materialised yet are concatenated part by part (a periodic block's as
    ``PeriodicBlock.dense`` makes them: its template's column repeated, the overrides
    written in), so a template built from a few columns does not materialise them all."""

    __slots__ = ("steps", "parts", "got")

    def __init__(self, steps) -> None:
        self.steps = steps
        parts = steps.parts()
        lazy = getattr(steps, "_cols", None) is None and not (len(parts) == 1
                                                               and parts[0] is steps)
        self.parts = parts if lazy and all(isinstance(p, S.PeriodicBlock) or p.parts() == [p]
                                           for p in parts) else None
        self.got: dict = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if self.parts is None:
            return self.steps.cols[name]
        col = self.got.get(name)
        if col is None:
            col = self.got[name] = np.concatenate([_part_column(p, name) for p in self.parts])
        return col


def _part_column(part, name: str) -> np.ndarray:
    if not isinstance(part, S.PeriodicBlock):
        return part.cols[name]
    col = np.tile(part.template.cols[name], part.reps)
    if name in part.overrides:
        pos, val = part.overrides[name]
        col[pos] = val
    return col


def _template_costs(steps, profile, cpus: int, rng, folio, layout=None):
    """The row costs of a plan too long for :func:`_small_template` (or priced with
    jitter): part by part when it is made of periodic blocks
    (:func:`~perfsim.cost.model.periodic_row_costs`,
    :func:`~perfsim.cost.model.periodic_jittered_row_costs`; ``layout``: its
    :func:`~perfsim.cost.model.periodic_layout` when made), else on whole columns."""
    if rng is None or profile.is_fixed:
        rc = periodic_row_costs(steps, profile, cpus=cpus, folio=folio, layout=layout)
    else:
        rc = periodic_jittered_row_costs(steps, profile, cpus, rng, folio, layout)
    return rc if rc is not None else vector_row_costs(steps, profile, cpus=cpus, rng=rng,
                                                      folio=folio)


#: Positions in :data:`~perfsim.cost.model.LIST_COLUMNS` of the columns a periodic
#: template lays out whole (:func:`_periodic_template`), in the order of its rows.
_FILL = (_C_FLUSHES, _C_FLUSH_FULL, _C_FLUSH_PAGES, _C_RMAP)


#: Positions in :data:`~perfsim.cost.counts.ROW_PARAMS` of the counts whose sums over a
#: plan's rows are a call record's sums (:func:`_stats_of_counts`).
_N_PRESENT, _N_CONTPTE, _N_PMD, _N_PUD, _N_THP, _N_FLUSH, _N_ALLOC, _N_FREE = (
    ROW_PARAMS.index(p) for p in ("pte_present_ns", "contpte_pte_ns", "pmd_move_ns",
                                  "pud_move_ns", "thp_move_ns", "tlb_flush_call_ns",
                                  "table_alloc_ns", "table_free_ns"))


_STAT_COUNTS = itemgetter(_N_PRESENT, _N_CONTPTE, _N_PMD, _N_PUD, _N_THP, _N_FLUSH, _N_ALLOC,
                          _N_FREE)


def _stats_of_counts(summed: list, rmap_rows: int) -> list[int]:
    """:func:`_row_stats` of a plan from its rows' summed
    :func:`~perfsim.cost.counts.row_counts` of :data:`_STAT_COUNTS` (``summed``: of the
    plan's summed counts, :class:`~perfsim.cost.model.PeriodicTotals`) and its number of
    rows that take an rmap lock: a PTE-moving
    row's PTEs are its set_ptes batches' and contpte PTEs' counts; a PMD / PUD / THP move
    pays its move parameter once; a row's flushes, tables allocated and freed are the
    counts of the flush call, allocation and free parameters
    (``tests/test_t13c_run_templates.py`` holds the two to each other on random tables)."""
    present, contpte, pmd, pud, thp, flushes, allocated, freed = summed
    return [present + contpte, pmd, pud, thp, flushes, rmap_rows, allocated, freed]


def _row_stats(lists) -> list[int]:
    """The summed fields of a call record (``CallStats`` from ``ptes_moved`` to
    ``tables_freed``, but ``ipis``) over rows given as their
    :data:`~perfsim.cost.model.LIST_COLUMNS` values (a sequence per column), as
    :func:`_small_template` sums them."""
    kind = lists[_C_KIND]
    return [sum(compress(lists[_C_PTES], map(eq, kind, repeat(S.K_PTE_MOVE)))),
            kind.count(S.K_PMD_MOVE), kind.count(S.K_PUD_MOVE) + kind.count(S.K_HUGE_PUD_MOVE),
            kind.count(S.K_THP_MOVE), sum(lists[_C_FLUSHES]),
            sum(map(gt, lists[_C_RMAP], repeat(0))),
            sum(map(sum, itemgetter(*_C_ALLOCS)(lists))), sum(lists[_C_FREED])]


class _PeriodicFlushes:
    """The flushes of a periodic template's one segment when they interrupt no other CPU
    (no IPI credits to queue): their six record columns (:class:`SegmentRecords`'
    ``flush``, what :func:`_records_of` makes) made when a table reads them
    (:class:`~perfsim.engine.records.DeferredColumn`); the two it aggregates, the IPI
    targets and the time stolen from each, are 0 on every such row (``stolen_of``: nothing
    is stolen without a target), so their sums and maxima are known now. Made once per
    template (``n_rows``: the plan's rows), read by every call that replays it."""

    __slots__ = ("pieces", "rc", "n_rows", "_cols")

    def __init__(self, pieces, rc, n_rows: int) -> None:
        self.pieces, self.rc, self.n_rows = pieces, rc, n_rows
        self._cols = None

    def columns(self) -> tuple:
        if self._cols is None:
            values = [([pc.lists[c] for c in _FILL[:3]],
                       {q: [row[c] for c in _FILL[:3]] for q, row in pc.patched.items()})
                      for pc in self.pieces]
            fill = lay_out(self.pieces, self.n_rows, values)
            cum = np.zeros(self.n_rows + 1, _I64)
            np.cumsum(self.rc.total, out=cum[1:])
            fl = np.flatnonzero(fill[0])
            self._cols = _records_of((), fl[:0], fl[:0], fl, fill[1][fl].astype(bool),
                                     fill[2][fl], self.rc, cum, 0).flush
        return self._cols

    def sum_max(self, index: int) -> tuple[int, int]:
        if index not in (4, 5):  # the targets and stolen_ns columns
            raise ValueError(f"flush column {index} is not aggregated")
        return 0, 0


def _periodic_template(steps, pieces, profile, cpus: int, rng, folio,
                       memo=None) -> CallTemplate:
    """:func:`build_template` of a plan made of periodic blocks and small dense parts
    (``pieces``: its :func:`~perfsim.cost.model.periodic_layout`) when no row is contended
    (one segment): the same template as :func:`_array_template`, without materialising
    the plan. The row costs are priced part by part (at the medians:
    :func:`~perfsim.cost.model.periodic_prices`, their arrays laid out when first read;
    with jitter: :func:`_template_costs`; ``memo``: :func:`build_template`'s row memo, for
    the profile's medians and ``folio``). The call record's sums are the plan's summed
    counts (:class:`~perfsim.cost.model.PeriodicTotals`: each priced row's times the rows
    it prices) read as :func:`_row_stats` sums columns (:func:`_stats_of_counts`). When its
    flushes interrupt no other CPU and no row takes an rmap lock, the segment's flush
    records are kept for when a table reads them (:class:`_PeriodicFlushes`); else the
    four columns the records read (flushes, flush_full, flush_pages, rmap; with the
    lock-set ids when a row takes an rmap lock) are laid out as one (columns x rows) array
    (:func:`~perfsim.cost.model.lay_out`) and the records made from it."""
    n = len(steps)
    if rng is None or profile.is_fixed:
        med = profile.medians_ns
        prices = periodic_prices(pieces, profile, cpus, folio, med, memo)
        rc = RowCosts.of_periodic(steps, pieces, prices, med, folio)
        jittered = False
    else:
        rc = _template_costs(steps, profile, cpus, rng, folio, pieces)
        # the rows' counts: priced at the medians for them (counts draw nothing)
        prices = periodic_prices(pieces, profile, cpus, folio, profile.medians_ns)
        jittered = True
    totals = prices[4]
    with_locks = totals.any_rmap
    sums = _stats_of_counts(_STAT_COUNTS(totals.counts), totals.rmap_rows)
    deferred = None
    if not jittered and not with_locks:
        n_flush, ipis = totals.flush_rows, totals.ipis
        if totals.top == 0:  # no flush interrupts another CPU: no credits, and nothing stolen
            deferred = _PeriodicFlushes(pieces, rc, n)
    cost = rc.category_totals()
    if deferred is not None:
        flush = tuple(map(DeferredColumn, repeat(deferred, 6), range(6), repeat(n_flush, 6))) \
            if n_flush else None
        recs = SegmentRecords((), flush, ())
        duration = sum(cost)  # every row's cost is the sum of its categories'
    else:
        recs, duration = _periodic_records(steps, pieces, rc, with_locks)
        ipis = int(rc.ipis.sum())
    ptes, pmd, pud, thp, flushes, rmap_holds, allocated, freed = sums
    stats = (n, 1, ptes, pmd, pud, thp, flushes, ipis, rmap_holds, allocated, freed, *cost)
    return CallTemplate(rc, ((0, n, False, duration),), (recs,), False, [], [], [], [], stats)


def _periodic_records(steps, pieces, rc, with_locks: bool) -> tuple:
    """``(SegmentRecords, duration)`` of a periodic template's one segment, made now: the
    columns its records read laid out as one array (:func:`_periodic_template`)."""
    n = len(steps)
    merged = {ls: i for i, ls in enumerate(steps.lock_sets)} if with_locks else None
    values = []
    for pc in pieces:
        lists, k = pc.lists, pc.k
        rows = [lists[c] for c in _FILL]
        if with_locks:
            ids = []
            for part in pc.parts:
                src = part.template if pc.block else part
                # its lock-set ids in the plan's numbering, as Steps._materialise maps them
                remap = [merged[ls] for ls in src.lock_sets]
                own = lock_ids(src)
                ids += ([remap[i] for i in own] if len(remap) > 1 else
                        [remap[0]] * len(own) if remap else own)
            rows.append(ids)
        patched = {q: [row[c] for c in _FILL] + ([rows[-1][q % k]] if with_locks else [])
                   for q, row in pc.patched.items()}
        values.append((rows, patched))
    fill = lay_out(pieces, n, values)
    cum = np.zeros(n + 1, _I64)
    np.cumsum(rc.total, out=cum[1:])
    fl = np.flatnonzero(fill[0])
    if with_locks:
        rm = np.flatnonzero(fill[3] > 0)
        sets = fill[4][rm]
    else:
        rm = sets = fl[:0]
    recs = _records_of(steps.lock_sets, rm, sets, fl, fill[1][fl].astype(bool), fill[2][fl],
                       rc, cum, 0)
    return recs, int(cum[n])


def _array_template(steps, profile, cpus: int, rng, hot_locks, ptl_hot, folio,
                    costs=vector_row_costs) -> CallTemplate:
    """:func:`build_template` on whole columns, whatever the plan's length; ``costs``
    prices it (:func:`~perfsim.cost.model.vector_row_costs`, or :func:`_template_costs`
    as :func:`build_template` does: the same integers). Columns are read through
    :class:`_PlanColumns`."""
    n = len(steps)
    if costs is vector_row_costs:
        rc = vector_row_costs(steps, profile, cpus=cpus, rng=rng, folio=folio)
    else:
        rc = costs(steps, profile, cpus, rng, folio)
    bounds = _bounds(steps, n, hot_locks, ptl_hot)
    cum = np.zeros(n + 1, _I64)
    np.cumsum(rc.total, out=cum[1:])
    segs, recs = [], []
    cols = _PlanColumns(steps)
    cum_l = cum.tolist()
    for a, b, h in bounds:
        segs.append((a, b, h, cum_l[b] - cum_l[a]))
        recs.append(None if h else _segment_records(steps, cols, rc, cum, a, b))
    any_hot = any(map(_HOT, bounds))
    kind = cols["kind"]
    kinds = np.bincount(kind, minlength=len(S.KIND_NAMES)).tolist()
    cost = rc.category_sums()
    # the column totals the record needs, in one reduction (int64: the same integers)
    flushes, p4d, pud, pmd, pte, freed = np.array(
        [cols[c] for c in _STAT_SUM_COLUMNS], _I64).sum(axis=1).tolist()
    stats = tuple(CallStats(
        steps=n, segments=len(bounds),
        ptes_moved=int(cols["ptes"][kind == S.K_PTE_MOVE].sum()),
        pmd_moves=kinds[S.K_PMD_MOVE],
        pud_moves=sum(kinds[k] for k in _PUD_MOVES),
        thp_moves=kinds[S.K_THP_MOVE],
        tlb_flushes=flushes, ipis=int(rc.ipis.sum()),
        rmap_holds=int(np.count_nonzero(cols["rmap"] > 0)),
        tables_allocated=p4d + pud + pmd + pte,
        tables_freed=freed,
        **{f"cost_{c}_ns": cost[c] for c in CATEGORIES},
    ))
    if any_hot:
        row_flush = [None] * n
        fl = np.flatnonzero(cols["flushes"])
        for i, full, pages, ipis, stolen in zip(
                fl.tolist(), cols["flush_full"][fl].tolist(), cols["flush_pages"][fl].tolist(),
                rc.ipis[fl].tolist(), rc.stolen[fl].tolist(), strict=True):
            row_flush[i] = (bool(full), int(pages), int(ipis), int(stolen))
        lists = (rc.total.tolist(), steps.lock_set.tolist(), cols["rmap"].tolist(), row_flush)
    else:
        lists = ([], [], [], [])
    return CallTemplate(rc, tuple(segs), tuple(recs), any_hot, *lists, stats)


_SIGNATURE_OF = itemgetter(*SIGNATURE_COLUMNS)


#: The dtypes of a table frozen from row tuples: its lock-set ids', then its
#: :data:`SIGNATURE_COLUMNS`' (what ``Steps`` makes its columns with).
ROW_DTYPES = (np.dtype(np.int32), *(np.dtype(S._DTYPES.get(c, np.int32))
                                    for c in SIGNATURE_COLUMNS))
_SIGNATURE_OF_ROW = itemgetter(*(S.ROW_FIELDS.index(c) for c in SIGNATURE_COLUMNS))


def _dense_key(part) -> tuple:
    """A dense part's key. A part of at most :data:`~perfsim.cost.model.SCALAR_ROWS` rows
    with the dtypes of :data:`ROW_DTYPES` (every walked plan): ``(lock-set names, those
    dtypes, lock-set ids, rows)``, its ids and its rows' :data:`SIGNATURE_COLUMNS` as tuples
    of Python ints, read from its row tuples when it keeps them (its columns are then never
    made), else from its columns. Any other part: ``(lock-set names, dtypes of its lock-set
    ids and of its signature columns, all their bytes joined)`` (C order whatever the
    strides; with the plan's length and each dtype's size, every column's bytes are
    delimited). Which form a part gets depends only on its length and dtypes, and either
    form is equal exactly when the lock sets, dtypes and values are: two keys are equal
    exactly when the columns and dtypes are (``tests/test_t13_price2_rows.py``)."""
    n = len(part)
    rows = part.row_tuples
    if rows is not None and n <= SCALAR_ROWS:
        return (part.lock_sets, ROW_DTYPES, tuple(lock_ids(part)),
                tuple(map(_SIGNATURE_OF_ROW, rows[0])))
    arrays = (part.lock_set, *_SIGNATURE_OF(part.cols))
    dtypes = tuple([a.dtype for a in arrays])
    if n <= SCALAR_ROWS and dtypes == ROW_DTYPES:
        return (part.lock_sets, ROW_DTYPES, tuple(part.lock_set.tolist()),
                tuple(zip(*[a.tolist() for a in arrays[1:]])))
    return (part.lock_sets, dtypes, b"".join([a.tobytes() for a in arrays]))


def signature(steps, cpus: int) -> tuple | None:
    """Everything :func:`build_template` reads from a plan, as a hashable key; None for a
    plan that is not worth keying.

    Computed part by part (``Steps.parts()``: the dense tables and periodic blocks the
    planner assembled the plan from), so a plan whose template is reused is never
    materialised. A dense part contributes its non-address columns with dtypes, lock-set
    ids and names (:func:`_dense_key`). A plan with a periodic block
    (a large regular move, thousands of rows) gets None: such plans practically never
    repeat within a run, and keying one would cost more than the reuse could save. The
    same rows split into parts differently give different keys: a miss, never a wrong hit.
    """
    parts = steps.parts()
    if len(parts) == 1 and parts[0] is steps:  # a dense plan
        return (len(steps), cpus, _dense_key(steps))
    for part in parts:  # before any key is made: a plan with a block gets None
        if not (isinstance(part, S.Steps) and part.parts() == [part]):
            return None
    return (len(steps), cpus, *map(_dense_key, parts))


#: Row memos kept by the process, one per (cost profile digest, folio mechanisms), at most
#: :data:`PROFILE_MEMOS` of them, least recently used dropped (:func:`profile_row_memo`).
_PROFILE_ROW_MEMOS: OrderedDict = OrderedDict()
PROFILE_MEMOS = 8


def profile_row_memo(digest: str, folio) -> dict:
    """The process's row memo for the cost profile of content digest ``digest`` and the
    folio mechanisms ``folio`` (:func:`~perfsim.cost.model.scalar_row_costs`'s ``memo``):
    a row's price is a pure function of its columns and IPI targets under one
    profile and folio (the memo's key and value), i.e. a per-profile table of constants,
    so runs share it whatever else they are given; the rows the next run prices are still
    looked up and assembled into its template (no run's template or result is kept)."""
    key = (digest, folio)
    memo = _PROFILE_ROW_MEMOS.get(key)
    if memo is None:
        memo = _PROFILE_ROW_MEMOS[key] = {}
        if len(_PROFILE_ROW_MEMOS) > PROFILE_MEMOS:
            _PROFILE_ROW_MEMOS.popitem(last=False)
    elif next(reversed(_PROFILE_ROW_MEMOS)) != key:
        _PROFILE_ROW_MEMOS.move_to_end(key)
    return memo


class TemplateCache:
    """Templates of one run, keyed by :func:`signature` (LRU, at most ``max_entries``;
    plans of more than ``max_rows`` rows are not kept).

    ``enabled`` only for a jitter-free cost profile (module docstring). ``store``: a
    :class:`~perfsim.engine.reuse.TemplateStore` shared with other runs, used instead of
    this run's own entries; its keys add what a template depends on besides the plan (the
    profile's content digest and the contended lock names; the CPU count is in the
    signature). A template it builds (a miss) prices its rows through the process's row
    memo of its profile (:func:`profile_row_memo`), or the ``store``'s (:meth:`row_memo`, at
    most ``memo_rows`` rows per folio mechanism set): rows repeat far more than whole plans
    do, across a run's calls and across runs. ``single``: the run makes one call
    (:func:`~perfsim.engine.machine._one_call`): its template is built, not keyed or kept."""

    hits = 0  # (counters every cache starts from: set on the instance when they change)
    misses = 0

    def __init__(self, profile, hot_locks, max_entries: int = 1024, enabled: bool = True,
                 max_rows: int = 65536, store=None, memo_rows: int = 8192,
                 single: bool = False) -> None:
        self.profile = profile
        # ``single``: the run makes one call and shares no store, so no template can be
        # looked up again: none is keyed or kept (the same template is built either way)
        self.single = single and store is None
        self.max_rows = max_rows
        self.hot_locks = hot_locks
        # A jitter-free profile draws nothing from a generator (row_costs prices it at its
        # medians either way): decided once here instead of per call.
        self.fixed = bool(profile.is_fixed)
        self.enabled = enabled and self.fixed
        self.max_entries = max_entries
        self.entries: OrderedDict = OrderedDict()
        self.store = store if self.enabled else None
        self.scope = (profile.digest, tuple(sorted(hot_locks))) if self.store is not None else None
        self.memo_rows = memo_rows

    def row_memo(self, folio) -> dict | None:
        """The row memo of :func:`~perfsim.cost.model.scalar_row_costs` for ``folio`` (one
        dict per folio mechanism set; emptied when it holds :attr:`memo_rows` rows): the
        ``store``'s when there is one, else the process's for this profile
        (:func:`profile_row_memo`); None when reuse is off or the profile has jitter."""
        if not self.enabled:
            return None
        if self.store is None:
            memo = profile_row_memo(self.profile.digest, folio)
        else:
            memos, key = self.store.row_memos, (self.scope[0], folio)
            memo = memos.get(key)
            if memo is None:
                memo = memos[key] = {}
        if len(memo) > self.memo_rows:
            memo.clear()
        return memo

    def get(self, steps, cpus: int, rng, ptl_hot_of=None, folio=None) -> CallTemplate:
        """The template of ``steps`` in an mm of ``cpus`` CPUs. ``ptl_hot_of(steps)`` gives
        the rows a walker's spinlock may hit; None when no walker takes the mm's PTLs.
        Calls in an mm whose PTLs a walker takes are never reused: which of their rows are
        contended depends on their addresses and on that mm's walkers. ``folio``: the
        source VMA's large-folio mechanisms (part of the key: the same rows cost more when
        the kernel looks up or unfolds large folios). A template that is built prices its
        rows through :meth:`row_memo` (looked up only then: a hit needs none)."""
        if self.fixed:
            rng = None
        if ptl_hot_of is not None:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks,
                                  ptl_hot_of(steps), folio, self.row_memo(folio))
        if not self.enabled or len(steps) > self.max_rows or self.single:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio,
                                  self.row_memo(folio))
        key = signature(steps, cpus)
        if key is None:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio,
                                  self.row_memo(folio))
        if folio is not None:
            key = (key, folio)
        if self.store is not None:
            key = (self.scope, key)
            t = self.store.get(key)
            if t is not None:
                self.hits += 1
                return t
            self.misses += 1
            t = build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio,
                               self.row_memo(folio))
            self.store.put(key, t, len(steps))
            return t
        t = self.entries.get(key)
        if t is not None:
            self.hits += 1
            self.entries.move_to_end(key)
            return t
        self.misses += 1
        t = build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio,
                           self.row_memo(folio))
        self.entries[key] = t
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return t
