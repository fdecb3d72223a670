"""The closed-form cost model: a plan's ``Steps`` → nanoseconds, per row and per category.

Every parameter of a :class:`~perfsim.cost.profile.CostProfile` is charged a whole number of
times per row (:func:`param_counts`, pure and vectorised over the columns); a row's cost is
the sum of count × per-op cost. :func:`row_costs` keeps the per-row, per-category integers
the engine replays; :func:`predict` adds them up: the duration of the plan with nothing
contending (no lock waits). The engine is held to equal it exactly in that case.

Which parameter a row pays (docs/kernel-rules.md):

=========================  ===============================================================
parameter                  charged
=========================  ===============================================================
syscall_ns                 once per ``syscall`` row (whole-call fixed work, R22)
unmap_ns                   once per ``do_vmi_munmap`` row (the VMA work of unmapping a range
                           that holds a mapping: a move's source, a mapped destination, a
                           shrink's tail; R22.3)
zap_pte_ns                 per batch of a ``zap`` row (``batches``: one per PTE, or per run
                           of a large folio's PTEs from 6.9, R24a)
zap_huge_pmd_ns            per huge PMD a ``zap`` row zapped whole (``slots``, R24)
extent_ns                  per move/revert loop row (extents and skips; not the notifier)
move_ptes_call_ns          per ``move_ptes`` row
pte_present_ns             per set_ptes batch of a ``move_ptes`` row (= per PTE on x86)
contpte_pte_ns             per PTE beyond the first of each batch (arm64 contpte)
pte_empty_ns               per none slot walked (``slots - ptes``)
hugetlb_entry_ns           per entry of a ``move_hugetlb_page_tables`` row
pmd_move_ns                per ``move_normal_pmd``
pud_move_ns                per ``move_normal_pud`` / ``move_huge_pud``
thp_move_ns / split_ns     per ``move_huge_pmd`` / ``split_huge_pmd``
table_alloc_ns             per page-table page allocated (any level)
table_free_ns              per page-table page freed
tlb_flush_call_ns          per flush call (``flushes`` column)
tlb_full_flush_ns          per full flush
tlb_invlpg_ns              per page invalidated (``flush_pages``)
ipi_round_trip_ns          per flush that IPIs at least one CPU
ipi_extra_target_ns        per IPI target beyond the first
ipi_wakeup_ns              once per plan, on its first flush that sends IPIs
tlb_first_flush_ns         once per plan, on its first flush
rmap_acquire/release_ns    per rmap rwsem taken (``rmap`` column)
ptl_ns                     per page-table spinlock (``ptl`` column)
notifier_pair_ns           per notifier pair (``notifier`` column)
folio_lookup_ns            per batch whose folio ``mremap_folio_pte_batch`` looks up
contpte_unfold_ns          per whole contiguous block unfolded at the source (pre-6.17 arm64)
contpte_fold_ns            per whole contiguous block re-folded at the destination (same)
=========================  ===============================================================

The last three need to know the source VMA's folios and the kernel's batch gate, which the
``Steps`` table does not carry: pass ``folio=`` a :class:`~perfsim.cost.batching.FolioBatching`
(from :func:`~perfsim.cost.batching.folio_batching`); without it they are never charged.

Each IPI target additionally loses ``ipi_receiver_ns`` plus its own invalidation work (a full
flush, or ``flush_pages`` INVLPGs); that is not on the caller's clock and is reported as
``stolen_ns`` per target.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate, compress, count, islice, repeat
from operator import gt, itemgetter, mul, sub

import numpy as np

from perfsim.cost import lanes as _lanes
from perfsim.cost.batching import FolioBatching
from perfsim.cost.counts import (
    ARRAY_OPS,
    FIRST_ROW_RULES,
    ROW_COLUMNS,
    ROW_PARAMS,
    SCALAR_OPS,
    folio_terms,
    ipi_targets_of,
    row_counts,
    stolen_of,
)
from perfsim.cost.profile import PARAM_NAMES, CostProfile
from perfsim.cost.sampling import draw
from perfsim.planner import steps as S

#: Cost categories of a breakdown, in report order.
CATEGORIES: tuple[str, ...] = (
    "pte_copies", "pmd_moves", "pud_moves", "thp", "tlb_flush", "ipi", "rmap_locks", "ptl",
    "table_alloc_free", "notifier", "fixed",
)

#: Which category each parameter's cost is booked under.
PARAM_CATEGORY: dict[str, str] = {
    "syscall_ns": "fixed", "unmap_ns": "fixed", "zap_pte_ns": "fixed",
    "zap_huge_pmd_ns": "fixed", "extent_ns": "fixed",
    "move_ptes_call_ns": "pte_copies", "pte_present_ns": "pte_copies",
    "pte_empty_ns": "pte_copies", "contpte_pte_ns": "pte_copies",
    "hugetlb_entry_ns": "pte_copies",
    "pmd_move_ns": "pmd_moves", "pud_move_ns": "pud_moves",
    "thp_move_ns": "thp", "thp_split_ns": "thp",
    "table_alloc_ns": "table_alloc_free", "table_free_ns": "table_alloc_free",
    "tlb_flush_call_ns": "tlb_flush", "tlb_invlpg_ns": "tlb_flush",
    "tlb_full_flush_ns": "tlb_flush",
    "ipi_round_trip_ns": "ipi", "ipi_extra_target_ns": "ipi", "ipi_receiver_ns": "ipi",
    "ipi_wakeup_ns": "ipi",
    "tlb_first_flush_ns": "tlb_flush",
    "rmap_acquire_ns": "rmap_locks", "rmap_release_ns": "rmap_locks",
    "ptl_ns": "ptl", "notifier_pair_ns": "notifier",
    "folio_lookup_ns": "pte_copies",
    # a contpte_convert is dominated by its range invalidation and barrier
    "contpte_unfold_ns": "tlb_flush", "contpte_fold_ns": "tlb_flush",
}
assert set(PARAM_CATEGORY) == set(PARAM_NAMES)

_I64 = np.int64


def steps_of(plan_or_steps) -> S.Steps:
    """The :class:`Steps` of a ``MovePlan`` (or the table itself)."""
    return plan_or_steps if isinstance(plan_or_steps, S.Steps) else plan_or_steps.steps


def ipi_targets(steps: S.Steps, profile: CostProfile, cpus: int | None) -> np.ndarray:
    """CPUs each row's flush interrupts. ``cpus=None``: as planned (the ``ipis`` column, which
    the planner derived from the mm's CPUs). ``cpus=k``: every flush IPIs the other ``k-1``
    CPUs of the mm when the profile's architecture shoots down by IPI (x86: ``freed_tables``
    makes lazy CPUs count too, T3), none otherwise."""
    if cpus is not None and cpus < 1:
        raise ValueError("cpus must be >= 1")
    return np.asarray(ipi_targets_of(steps.ipis.astype(_I64), steps.flushes.astype(_I64), cpus,
                                     profile.ipi_shootdown), _I64)


def param_counts(steps: S.Steps, ipis: np.ndarray, folio: FolioBatching | None = None
                 ) -> dict[str, np.ndarray]:
    """How many times each row pays each parameter (pure; int64 arrays, one per parameter
    except ``ipi_receiver_ns``, which is paid by the targets, not the caller). ``folio``: the
    source VMA's large-folio mechanisms (``None``: none charged). The arrays are the rows of
    :func:`_count_matrix`."""
    m = _count_matrix(steps, ipis, folio)
    return {name: m[_ROW[name]] for name in _COUNT_ORDER}


#: :func:`param_counts`' keys, in the order it lists them.
_COUNT_ORDER = (
    "syscall_ns", "unmap_ns", "zap_pte_ns", "zap_huge_pmd_ns", "extent_ns", "move_ptes_call_ns",
    "pte_present_ns", "contpte_pte_ns", "pte_empty_ns", "hugetlb_entry_ns", "pmd_move_ns",
    "pud_move_ns", "thp_move_ns", "thp_split_ns", "table_alloc_ns", "table_free_ns", "tlb_flush_call_ns",
    "tlb_invlpg_ns", "tlb_full_flush_ns", "ipi_round_trip_ns", "ipi_extra_target_ns",
    "ipi_wakeup_ns", "tlb_first_flush_ns", "rmap_acquire_ns", "rmap_release_ns", "ptl_ns",
    "notifier_pair_ns", "folio_lookup_ns", "contpte_unfold_ns", "contpte_fold_ns",
)
#: The count columns :func:`row_counts` reads after ``kind`` and ``phase``, gathered into
#: one int64 block by :func:`_count_matrix`.
_COUNT_COLUMNS = ROW_COLUMNS[2:]
#: The columns a plan of a few rows is read as (Python lists, :func:`column_lists`).
LIST_COLUMNS = ROW_COLUMNS + ("ipis",)
#: Plans of at most this many rows are priced on Python ints (:func:`scalar_row_costs`) when
#: nothing is drawn: below it a numpy call costs more than the arithmetic it does.
SCALAR_ROWS = 48


#: Positions of :data:`LIST_COLUMNS` in a plan's row tuples (``steps.ROW_FIELDS``).
_LIST_OF_ROW = itemgetter(*(S.ROW_FIELDS.index(c) for c in LIST_COLUMNS))


def column_sequences(steps: S.Steps) -> list:
    """The plan's :data:`LIST_COLUMNS` as Python sequences of ints: tuples read from its row
    tuples when it keeps them (``Steps.row_tuples``: a walked plan; its columns are then
    never made), else one ``tolist`` per column. The same values either way."""
    rows = steps.row_tuples
    if rows is not None and rows[0]:
        return list(_LIST_OF_ROW(list(zip(*rows[0]))))
    cols = steps.cols
    return [cols[c].tolist() for c in LIST_COLUMNS]


def row_sequences(steps: S.Steps) -> list[tuple]:
    """The plan's :data:`LIST_COLUMNS` per row, as tuples of ints (the rows of
    :func:`column_sequences`): read from its row tuples when it keeps them, else from one
    ``tolist`` per column."""
    rows = steps.row_tuples
    if rows is not None:
        return list(map(_LIST_OF_ROW, rows[0]))
    cols = steps.cols
    return list(zip(*[cols[c].tolist() for c in LIST_COLUMNS]))


def column_lists(steps: S.Steps) -> list[list[int]]:
    """:func:`column_sequences` with every column a list (for a reader that extends them)."""
    cols = column_sequences(steps)
    return cols if type(cols[0]) is list else list(map(list, cols))


def _count_matrix(steps: S.Steps, ipis: np.ndarray, folio: FolioBatching | None
                  ) -> np.ndarray:
    """:func:`param_counts` as one (parameters x rows) int64 array, parameter ``p`` on row
    ``_ROW[p]`` (:data:`_BY_CATEGORY` order): :func:`~perfsim.cost.counts.row_counts`
    evaluated on whole columns, then :data:`~perfsim.cost.counts.FIRST_ROW_RULES`."""
    cols = steps.cols
    n = len(steps)
    out = np.zeros((len(_BY_CATEGORY), n), _I64)
    if n == 0:
        return out
    phase = cols["phase"]
    c = np.array([cols[name] for name in _COUNT_COLUMNS], _I64)
    counts = row_counts((cols["kind"], phase, *c), ipis, ARRAY_OPS, folio_terms(folio))
    for r, v in zip(_ROW_OF, counts, strict=True):
        if isinstance(v, np.ndarray):
            out[r] = v
    for (name, trigger) in FIRST_ROW_RULES:
        mask = out[_ROW[trigger]] > 0
        i = int(mask.argmax())  # the first True row, if any
        if mask[i]:
            out[_ROW[name], i] = 1
    return out


class RowCosts:
    """Per-row integer costs of one plan under one profile (and one draw of its jitter).

    ``total[i]`` is row *i*'s duration on the calling CPU; ``by_category[c][i]`` its part in
    category ``c``; ``ipis[i]`` the CPUs its flush interrupts and ``stolen[i]`` the time taken
    from *each* of them; ``matrix`` the plan's :func:`_count_matrix` (:attr:`counts` names
    its rows); ``per_category`` ``by_category`` as one (categories x rows) array, when it was
    computed as one (always for a jitter-free pricing).

    A plan priced on Python ints (:func:`scalar_row_costs`) keeps its per-row lists
    (:attr:`total_list`, :attr:`ipis_list`, :attr:`stolen_list`) and its category totals, and
    makes each array the first time it is read, from the same integers.
    """

    __slots__ = ("_total", "_by_category", "_ipis", "_stolen", "_matrix", "_per_category",
                 "_sums", "_scalar", "_later", "_arrays")

    def __init__(self, total: np.ndarray, by_category: dict[str, np.ndarray],
                 ipis: np.ndarray, stolen: np.ndarray, matrix: np.ndarray,
                 per_category: np.ndarray | None = None) -> None:
        self._total, self._by_category, self._ipis = total, by_category, ipis
        self._stolen, self._matrix, self._per_category = stolen, matrix, per_category
        self._sums = None
        self._scalar = None
        self._later = None
        self._arrays = None

    @classmethod
    def of_lists(cls, total: list, ipis: list, stolen: list, rows: list, firsts: list,
                 medians: tuple, sums: list) -> RowCosts:
        """Costs priced on Python ints: per-row ``total``/``ipis``/``stolen``, the per-row
        :func:`row_counts` tuples ``rows``, the row of each :data:`FIRST_ROW_RULES`
        charge (or None), the profile's medians and the per-category totals."""
        rc = cls.__new__(cls)
        rc._total = rc._by_category = rc._ipis = rc._stolen = None
        rc._matrix = rc._per_category = None
        rc._scalar = (total, ipis, stolen, rows, firsts, medians)
        rc._sums = sums
        rc._later = None
        rc._arrays = None
        return rc

    @classmethod
    def of_parts(cls, total: np.ndarray, ipis: np.ndarray, stolen: np.ndarray, sums: list,
                 medians: tuple, matrix_of, extra: list = ()) -> RowCosts:
        """Costs priced part by part (:func:`periodic_row_costs`): the per-row arrays and
        per-category totals; ``matrix_of()`` computes the count matrix when it is first
        read (``matrix_of(row_costs)``: the RowCosts it is for, whose per-row arrays it may
        read), ``medians`` price it, and ``extra`` ``(category index, per-row ns)`` adds
        the drawn parameters' costs to that."""
        rc = cls.__new__(cls)
        rc._total, rc._ipis, rc._stolen = total, ipis, stolen
        rc._by_category = rc._matrix = rc._per_category = rc._scalar = None
        rc._sums = sums
        rc._later = (matrix_of, tuple(extra), medians)
        rc._arrays = None
        return rc

    @classmethod
    def of_periodic(cls, steps: S.Steps, pieces: list, prices: tuple, medians: tuple,
                    folio: FolioBatching | None) -> RowCosts:
        """Costs of a plan priced part by part at ``medians`` (:func:`periodic_prices` of
        its :func:`periodic_layout` ``pieces``): the per-category totals now, the per-row
        arrays laid out when one is first read (what :func:`periodic_row_costs` gives)."""
        costs, sums, firsts = prices[0], prices[2], prices[3]

        def arrays():
            total, ipis, stolen = lay_out(pieces, len(steps), costs)
            for _name, row, ns in firsts:
                total[row] += ns
            return total, ipis, stolen

        # the count matrix is given the RowCosts it is for (no closure over ``rc``: a
        # reference cycle would leave every template to the garbage collector)
        rc = cls.of_parts(None, None, None, sums, medians,
                          lambda costs: _count_matrix(steps, costs.ipis, folio))
        rc._arrays = arrays
        return rc

    def _made(self) -> None:
        """Make the per-row arrays of costs priced on Python ints or laid out lazily."""
        if self._arrays is not None:
            self._total, self._ipis, self._stolen = self._arrays()
            self._arrays = None
        else:
            self._total, self._ipis, self._stolen = (np.array(v, _I64)
                                                     for v in self._scalar[:3])

    @property
    def total(self) -> np.ndarray:
        if self._total is None:
            self._made()
        return self._total

    @property
    def ipis(self) -> np.ndarray:
        if self._ipis is None:
            self._made()
        return self._ipis

    @property
    def stolen(self) -> np.ndarray:
        if self._stolen is None:
            self._made()
        return self._stolen

    @property
    def total_list(self) -> list[int]:
        return self._scalar[0] if self._scalar is not None else self.total.tolist()

    @property
    def ipis_list(self) -> list[int]:
        return self._scalar[1] if self._scalar is not None else self.ipis.tolist()

    @property
    def stolen_list(self) -> list[int]:
        return self._scalar[2] if self._scalar is not None else self.stolen.tolist()

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None and self._later is not None:
            self._matrix = self._later[0](self)
        if self._matrix is None:
            rows, firsts = self._scalar[3], self._scalar[4]
            m = np.zeros((len(_BY_CATEGORY), len(rows)), _I64)
            if len(rows):
                m[_ROW_OF_ARRAY] = np.array(rows, _I64).T
            for (name, _trigger), i in zip(FIRST_ROW_RULES, firsts, strict=True):
                if i is not None:
                    m[_ROW[name], i] = 1
            self._matrix = m
        return self._matrix

    @property
    def per_category(self) -> np.ndarray | None:
        if self._per_category is None and (self._scalar or self._later) is not None:
            medians = (self._scalar or self._later)[-1]
            self._per_category = _per_category(self.matrix, medians)
            for cat, product in (self._later[1] if self._later else ()):
                self._per_category[cat] += product
        return self._per_category

    @property
    def by_category(self) -> dict[str, np.ndarray]:
        if self._by_category is None:
            self._by_category = dict(zip(CATEGORIES, self.per_category, strict=True))
        return self._by_category

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """:func:`param_counts` of the plan (views of :attr:`matrix`)."""
        m = self.matrix
        return {name: m[_ROW[name]] for name in _COUNT_ORDER}

    def category_totals(self) -> list[int]:
        """The plan's cost per category (:data:`CATEGORIES` order), as a list of ints."""
        if self._sums is not None:
            return list(self._sums)
        return list(self.category_sums().values())

    def category_sums(self, lo: int = 0, hi: int | None = None) -> dict[str, int]:
        if lo == 0 and hi is None:
            if self._sums is not None:
                return dict(zip(CATEGORIES, self._sums, strict=True))
            if self._per_category is not None:
                # one reduction instead of one per category; the same integers
                return dict(zip(CATEGORIES, self._per_category.sum(axis=1).tolist(),
                                strict=True))
        return {c: int(a[lo:hi].sum()) for c, a in self.by_category.items()}


def row_costs(plan_or_steps, profile: CostProfile, *, cpus: int | None = None,
              rng: np.random.Generator | None = None,
              folio: FolioBatching | None = None) -> RowCosts:
    """Per-row costs of a plan. Vectorised over the columns; ``rng`` (from the run's
    SeedSequence) draws the jitter, ``None`` uses each parameter's ``ns``. Parameters are
    drawn in :data:`PARAM_NAMES` order, only for the rows that use them, so the same plan,
    profile and generator state always give the same integers. ``folio``: the source VMA's
    large-folio mechanisms (:func:`perfsim.cost.batching.folio_batching`; ``None``: none).
    Nothing drawn and at most :data:`SCALAR_ROWS` rows: priced on Python ints
    (:func:`scalar_row_costs`); periodic blocks: priced part by part
    (:func:`periodic_row_costs`, :func:`periodic_jittered_row_costs`). The same integers (and
    draws) either way."""
    steps = steps_of(plan_or_steps)
    if rng is None or profile.is_fixed:
        if 0 < len(steps) <= SCALAR_ROWS:
            return scalar_row_costs(column_lists(steps), profile, cpus, folio)
        got = periodic_row_costs(steps, profile, cpus=cpus, folio=folio)
    else:
        got = periodic_jittered_row_costs(steps, profile, cpus, rng, folio)
    if got is not None:
        return got
    return vector_row_costs(steps, profile, cpus=cpus, rng=rng, folio=folio)


def vector_row_costs(plan_or_steps, profile: CostProfile, *, cpus: int | None = None,
                     rng: np.random.Generator | None = None,
                     folio: FolioBatching | None = None) -> RowCosts:
    """:func:`row_costs` on whole columns, whatever the plan's length (what it does for
    plans of more than :data:`SCALAR_ROWS` rows, and whenever it draws jitter)."""
    steps = steps_of(plan_or_steps)
    n = len(steps)
    ipis = ipi_targets(steps, profile, cpus)
    matrix = _count_matrix(steps, ipis, folio)
    if rng is None or profile.is_fixed:
        return _fixed_row_costs(steps, profile, ipis, matrix)
    # The parameters without jitter at their medians, in one product (a jittered one at 0);
    # then each jittered parameter, in PARAM_NAMES order, drawn for the rows that use it
    # (the fixed ones take nothing from rng: the same draws as pricing them one by one).
    med = profile.medians_ns
    jittered = [i for i, name in enumerate(PARAM_NAMES) if not profile.param(name).is_fixed]
    fixed_med = list(med)
    for i in jittered:
        fixed_med[i] = 0
    per_cat = _per_category(matrix, tuple(fixed_med))
    values: dict[str, np.ndarray | int] = {name: med[_PARAM_POS[name]] for name in
                                           ("ipi_receiver_ns", "tlb_full_flush_ns",
                                            "tlb_invlpg_ns")}
    for i in jittered:
        name = PARAM_NAMES[i]
        receiver = name == "ipi_receiver_ns"
        used = ipis > 0 if receiver else matrix[_ROW[name]] != 0
        idx = np.flatnonzero(used)
        v = draw(profile.param(name), len(idx), rng)
        if isinstance(v, int):  # no row uses it: nothing drawn, nothing charged
            values[name] = v
            continue
        full = np.zeros(n, _I64)
        full[idx] = v
        values[name] = full
        if not receiver:
            per_cat[_CATEGORY_INDEX[PARAM_CATEGORY[name]]] += matrix[_ROW[name]] * full
    total = _row_totals(per_cat)
    # What each IPI target loses: the interrupt, plus the flush it performs itself.
    stolen = stolen_of(ipis, steps.flush_full.astype(_I64), steps.flush_pages.astype(_I64),
                       values["ipi_receiver_ns"], values["tlb_full_flush_ns"],
                       values["tlb_invlpg_ns"], ARRAY_OPS).astype(_I64)
    return RowCosts(total, dict(zip(CATEGORIES, per_cat, strict=True)), ipis, stolen, matrix,
                    per_cat)


def scalar_row_costs(lists: list[list[int]], profile: CostProfile, cpus: int | None,
                     folio: FolioBatching | None, memo: dict | None = None) -> RowCosts:
    """:func:`row_costs` at the medians, on Python ints: ``lists`` is the plan's
    :func:`column_lists`. Each row's counts are :func:`~perfsim.cost.counts.row_counts`
    evaluated on its ints (the rules the vectorised path evaluates on arrays), the
    first-row charges are :data:`~perfsim.cost.counts.FIRST_ROW_RULES`, a row's total is
    its counts times the medians, a category's the sum of its parameters' products: the
    same integers as the vectorised path.

    ``memo``: a dict kept by the caller for one profile and one ``folio`` (one per
    :class:`~perfsim.engine.pricing.TemplateCache`), mapping a row's columns and
    IPI targets to its priced counts (:func:`_price_row`, a pure function of them): most
    rows repeat across the calls of a run (the syscall row, notifier pairs, table frees,
    whole-table extents)."""
    if cpus is not None and cpus < 1:
        raise ValueError("cpus must be >= 1")
    ipis = list(map(ipi_targets_of, lists[-1], lists[5], repeat(cpus),
                    repeat(profile.ipi_shootdown)))
    med = profile.medians_ns
    rows, totals, stolen, sums = _price_dense(lists, ipis, profile, folio, memo)
    firsts = []
    for at, wpos, cat in _FIRST_ROW_TERMS:
        first = _first_paying(rows, at)
        if first is not None:
            totals[first] += med[wpos]
            sums[cat] += med[wpos]
        firsts.append(first)
    return RowCosts.of_lists(totals, ipis, stolen, rows, firsts, med, sums)


def _price_dense(lists: list[list[int]], ipis: list, profile: CostProfile,
                 folio: FolioBatching | None, memo: dict | None) -> tuple:
    """``(counts, totals, stolen, category sums)`` of rows given as :func:`column_lists`
    with their IPI targets, at the profile's medians, without the first-row
    charges: per row its :func:`~perfsim.cost.counts.row_counts` and their product with the
    medians; per category the column sums of its parameters times theirs (or, through
    ``memo``, the sum of each row's kept per-category costs: the same integers). With a
    ``memo`` the weights and folio terms are read only when a row is not in it."""
    keys = zip(zip(*lists[:-1]), ipis)
    medians = profile.medians_ns
    if memo is not None:
        keys = list(keys)
        priced = list(map(memo.get, keys))
        if None in priced:
            weights, terms = _ROW_WEIGHTS(medians), folio_terms(folio)
            priced = [p or _price_row(memo, k, weights, medians, terms)
                      for p, k in zip(priced, keys, strict=True)]
        # (an entry a periodic plan read has its lanes after these four, _row_lanes)
        if len(priced) == 1:
            c, total, cats, stolen = priced[0][:4]
            return [c], [total], [stolen], list(cats)
        rows, totals, cats, stolen = map(list, islice(zip(*priced), 4))
        return rows, totals, stolen, list(map(sum, zip(*cats)))
    weights, terms = _ROW_WEIGHTS(medians), folio_terms(folio)
    rows = [row_counts(r, ip, SCALAR_OPS, terms) for r, ip in keys]
    totals = [sum(map(mul, c, weights)) for c in rows]
    # each parameter's column sum times its median; ROW_PARAMS is grouped by category
    cum = list(accumulate(map(mul, map(sum, zip(*rows)), weights), initial=0))
    sums = [cum[b] - cum[a] for a, b in _ROW_CATEGORY_SLICES]
    stolen = list(map(stolen_of, ipis, lists[7], lists[6], repeat(medians[_RECEIVER]),
                      repeat(medians[_FULL_FLUSH]), repeat(medians[_INVLPG]),
                      repeat(SCALAR_OPS)))
    return rows, totals, stolen, sums


_ROW_KEY = itemgetter(slice(0, len(ROW_COLUMNS)))  # a LIST_COLUMNS row's ROW_COLUMNS
_L_PHASE, _L_FLUSHES, _L_IPIS = 1, 5, len(ROW_COLUMNS)  # positions in a LIST_COLUMNS row


def _first_paying(rows: list, at: int) -> int | None:
    """The first of ``rows`` (per-row count tuples) whose count at ``at`` is above 0 (the
    position of the first true ``count > 0``, in builtins: a few bytecodes whatever the
    row)."""
    return next(compress(count(), map(gt, map(itemgetter(at), rows), repeat(0))), None)


class PeriodicPiece:
    """A piece of a plan :func:`periodic_layout` covers, read as Python ints: ``k`` rows
    whose :data:`LIST_COLUMNS` values are ``rows`` (tuples, :func:`row_sequences`; the same
    as columns: :attr:`lists`), repeated ``reps`` times from row ``offset`` of the plan
    (consecutive dense parts: their rows once, ``block`` False). A block's ``patched``:
    ``{row in the block: its LIST_COLUMNS values}`` of its overridden rows, priced on their
    own. ``parts``: the dense
    tables, or the one :class:`~perfsim.planner.steps.PeriodicBlock`. Made once per plan,
    never changed after."""

    __slots__ = ("parts", "offset", "k", "reps", "rows", "patched", "block", "_lists")

    def __init__(self, parts: tuple, offset: int, k: int, reps: int, rows: list,
                 patched: dict, block: bool) -> None:
        self.parts, self.offset, self.k, self.reps = parts, offset, k, reps
        self.rows, self.patched, self.block = rows, patched, block
        self._lists = None

    @property
    def lists(self) -> list:
        """The ``k`` rows' :data:`LIST_COLUMNS` as one sequence per column (made once)."""
        if self._lists is None:
            self._lists = list(zip(*self.rows, strict=True))
        return self._lists


def periodic_layout(plan_or_steps) -> list[PeriodicPiece] | None:
    """The parts of a plan made of periodic blocks and small dense parts, as
    :class:`PeriodicPiece` rows in plan order (what :func:`periodic_row_costs` prices and
    the engine's periodic call templates read); None for a plan with no block, or with a
    part too large for this: a dense part or template of more than :data:`SCALAR_ROWS`
    rows, a block overriding ``phase`` or more than :data:`SCALAR_ROWS` of its rows."""
    parts = steps_of(plan_or_steps).parts()
    block_type = S.PeriodicBlock
    if not any(map(isinstance, parts, repeat(block_type))):
        return None
    pieces = []
    offset = 0
    dense = None  # the piece of the dense parts since the last block
    for p in parts:
        if isinstance(p, block_type):
            dense = None
            t = p.template
            k = len(t)
            if k > SCALAR_ROWS or "phase" in p.overrides or (t.row_tuples is None
                                                            and t.parts() != [t]):
                return None  # (a table of row tuples is one dense part)
            rows = row_sequences(t)
            changes: dict[int, dict[int, int]] = {}
            for col, (pos, val) in p.overrides.items():
                ci = _LIST_INDEX.get(col)
                if ci is None:  # an address or length: priced through no count
                    continue
                for q, v in zip(_ints(pos), _ints(val), strict=True):
                    changes.setdefault(q, {})[ci] = v
            if len(changes) > SCALAR_ROWS:
                return None
            patched = {}
            for q, ch in changes.items():
                row = list(rows[q % k])
                for ci, v in ch.items():
                    row[ci] = v
                patched[q] = tuple(row)
            pieces.append(PeriodicPiece((p,), offset, k, p.reps, rows, patched, True))
            n = k * p.reps
        else:
            n = len(p)
            if n > SCALAR_ROWS:
                return None
            tuples = p.row_tuples
            if tuples is not None:
                rows = list(map(_LIST_OF_ROW, tuples[0]))  # (row_sequences of such a part)
            elif p.parts() != [p]:
                return None
            else:
                rows = row_sequences(p)
            if dense is not None:
                # one piece for consecutive dense parts: the same rows in the same order
                dense.parts += (p,)
                dense.rows += rows  # (a list this function made)
                dense.k += n
            else:
                dense = PeriodicPiece((p,), offset, n, 1, rows, {}, False)
                pieces.append(dense)
        offset += n
    return pieces


def _ints(values) -> list:
    """An override's positions or values as Python ints."""
    return values.tolist() if isinstance(values, np.ndarray) else np.asarray(values).tolist()


def periodic_row_costs(plan_or_steps, profile: CostProfile, *, cpus: int | None = None,
                       folio: FolioBatching | None = None, medians: tuple | None = None,
                       counts_of: tuple[str, ...] = (), layout: list | None = None):
    """:func:`row_costs` at the medians of a plan made of periodic blocks
    (:class:`~perfsim.planner.steps.PeriodicBlock`: ``reps`` copies of a few template rows,
    a few rows overridden) and small dense parts, priced part by part without materialising
    the plan (:func:`periodic_layout`): the dense parts' rows on Python ints
    (:func:`_price_row`, as :func:`_price_dense` keys them); a block's template rows once,
    repeated, its patched rows on their own, its category totals ``reps`` times the
    template's corrected by those rows (:func:`periodic_prices`). The first-row charges go
    on the plan's first row that pays
    their trigger. The count matrix is computed on the materialised columns when first
    read. None for a plan :func:`periodic_layout` does not cover.

    ``medians``: prices to use instead of the profile's (:data:`PARAM_NAMES` order);
    ``counts_of``: parameters whose per-row counts to return too, as ``(costs, {name:
    int64 array})`` (what a jittered pricing draws for, :func:`periodic_jittered_row_costs`);
    ``layout``: the plan's :func:`periodic_layout`, when already made."""
    steps = steps_of(plan_or_steps)
    pieces = periodic_layout(steps) if layout is None else layout
    if pieces is None:
        return None
    med = profile.medians_ns if medians is None else medians
    costs, piece_counts, sums, firsts, _none = periodic_prices(pieces, profile, cpus, folio,
                                                               med, totals=False)
    n = len(steps)
    per_row = [ROW_PARAMS.index(name) for name in counts_of if name in ROW_PARAMS]
    total, ipis, stolen = lay_out(pieces, n, costs)
    counts = [([[c[j] for c in rows_t] for j in per_row],
               {q: [c[j] for j in per_row] for q, c in rows_p.items()})
              for rows_t, rows_p in piece_counts] if per_row else []
    counted = dict(zip([ROW_PARAMS[j] for j in per_row], lay_out(pieces, n, counts),
                       strict=True)) if per_row else {}
    for name in counts_of:
        if name not in counted:
            counted[name] = np.zeros(n, _I64)
    for name, row, ns in firsts:
        total[row] += ns
        if name in counted:
            counted[name][row] = 1
    rc = RowCosts.of_parts(total, ipis, stolen, sums, med,
                           lambda _costs: _count_matrix(steps, ipis, folio))
    return (rc, counted) if counts_of else rc


class PeriodicTotals:
    """Sums over every row of a plan priced by :func:`periodic_prices` that are not its
    per-category costs: ``counts``, its :data:`~perfsim.cost.counts.ROW_PARAMS` counts
    summed (without the first-row charges); ``flush_rows``, rows whose ``flushes`` is not
    0; ``top``, the largest IPI target count of those rows (0 if none); ``ipis``, the IPI
    targets summed over every row; ``rmap_rows``, rows that take an rmap lock;
    ``any_rmap``, whether a piece's row (a block's template row, even one whose every copy
    is patched, or a patched row) takes one."""

    __slots__ = ("counts", "flush_rows", "top", "ipis", "rmap_rows", "any_rmap")

    def __init__(self, counts: list, flush_rows: int, top: int, ipis: int,
                 rmap_rows: int, any_rmap: bool) -> None:
        self.counts, self.flush_rows, self.top = counts, flush_rows, top
        self.ipis, self.rmap_rows, self.any_rmap = ipis, rmap_rows, any_rmap


#: The lanes of a priced row (:func:`_row_lanes`): its per-category ns (:data:`CATEGORIES`
#: order), its counts (:data:`~perfsim.cost.counts.ROW_PARAMS` order), whether it
#: flushes, its IPI targets, whether it takes an rmap lock.
N_LANES = len(CATEGORIES) + len(ROW_PARAMS) + 3
_LANE_COUNTS = slice(len(CATEGORIES), len(CATEGORIES) + len(ROW_PARAMS))


def _row_lanes(memo: dict, key: tuple, entry: tuple) -> tuple:
    """``entry`` (a row memo's value for ``key``, :func:`_price_row`) with the row's lanes
    after its four values: ``(lanes, packed, flush_ipis)``, the lanes (:data:`N_LANES`
    ints), their :func:`~perfsim.cost.lanes.pack` (None when a lane cannot be packed), what
    a periodic plan's totals sum (:func:`periodic_prices`), and the row's IPI targets if it
    flushes (else 0). Made once per row: kept in ``memo``."""
    if len(entry) > 4:
        return entry
    r, ipis = key
    c, _total, cats, _stolen = entry
    flushes = r[_R_FLUSHES] != 0
    lanes = (*cats, *map(int, c), int(flushes), ipis, int(r[_R_RMAP] > 0))
    got = memo[key] = (*entry, lanes, _lanes.pack(lanes), ipis if flushes else 0)
    return got


def _periodic_entry(memo: dict, row: tuple, cpus: int | None, shootdown: bool,
                    medians: tuple, folio: FolioBatching | None) -> tuple:
    """The memo entry of a periodic plan's row (its :data:`LIST_COLUMNS` values ``row``,
    the mm's CPUs): :func:`_row_lanes` of the row priced under its key (``(ROW_COLUMNS
    values, IPI targets)``, :func:`_price_row`), then its IPI targets
    (:func:`~perfsim.cost.counts.ipi_targets_of`), kept in ``memo`` under that key and
    under ``(row, cpus)`` too: the same row of a later plan is
    then found without computing its IPI targets or its key first (``memo`` is kept for one
    profile, whose ``ipi_shootdown`` it is priced with; a key of the other form has a row of
    :data:`ROW_COLUMNS` alone as its first item, never equal to a :data:`LIST_COLUMNS`
    row)."""
    ipis = ipi_targets_of(row[_L_IPIS], row[_L_FLUSHES], cpus, shootdown)
    key = (_ROW_KEY(row), ipis)
    entry = memo.get(key)
    if entry is None:
        entry = _price_row(memo, key, _ROW_WEIGHTS(medians), medians, folio_terms(folio))
    got = memo[(row, cpus)] = (*_row_lanes(memo, key, entry), ipis)
    return got


def _priced_alone(memo: dict, rows, cpus: int | None, shootdown: bool,
                  medians: tuple, folio: FolioBatching | None) -> list:
    """The memo entries of a periodic plan's ``rows`` without their lanes (what
    :func:`_periodic_totals` looks up with them): each row's memo entry under its key
    (:func:`_price_row`: its first four values, what the per-category sums and the lay-out
    read), and their IPI targets."""
    ipis = [ipi_targets_of(r[_L_IPIS], r[_L_FLUSHES], cpus, shootdown) for r in rows]
    keys = list(zip(map(_ROW_KEY, rows), ipis))
    got = list(map(memo.get, keys))
    if None in got:
        weights, terms = _ROW_WEIGHTS(medians), folio_terms(folio)
        got = [e or _price_row(memo, key, weights, medians, terms)
               for e, key in zip(got, keys, strict=True)]
    return got, ipis


_LANES, _PACKED, _FLUSH_IPIS = itemgetter(4), itemgetter(5), itemgetter(6)
_CATS, _IPIS_E = itemgetter(2), itemgetter(7)
_RMAP_LANE = itemgetter(N_LANES - 1)


def periodic_prices(pieces: list[PeriodicPiece], profile: CostProfile, cpus: int | None,
                    folio: FolioBatching | None, medians: tuple,
                    memo: dict | None = None, totals: bool = True) -> tuple:
    """The prices :func:`periodic_row_costs` lays out, per piece of a plan's
    :func:`periodic_layout`: ``(costs, counts, sums, firsts, totals)``: per piece
    ``((totals, ipis, stolen) of its k rows, {row: (total, ipis, stolen)} of its patched
    rows)`` (without the first-row charges) and ``(its k rows' counts, {row: counts})``;
    the plan's per-category totals (with them); the first-row charges as ``(parameter,
    plan row, ns)``: each on the plan's first row that pays its trigger (in the first piece
    that has one); and the plan's other sums (:class:`PeriodicTotals`).

    Every sum is each priced row's values (:func:`_row_lanes`) times the number of the
    plan's rows it prices: a dense piece's rows once, a block's template row once per copy
    that is not patched, a patched row once (:func:`~perfsim.cost.lanes.weighted_sum`).
    ``memo``: a row memo of :func:`scalar_row_costs` kept for this profile (priced at these
    ``medians``) and ``folio``; else one for this call. ``totals=False``: only the
    per-category sums (of each row's costs times its weight, lane by lane) and None for the
    other sums: no row's lanes are made (:func:`periodic_row_costs`, whose rows are
    priced once, for this call)."""
    if cpus is not None and cpus < 1:
        raise ValueError("cpus must be >= 1")
    memo = {} if memo is None else memo
    shootdown = profile.ipi_shootdown
    if totals:
        return _periodic_totals(pieces, cpus, folio, medians, memo, shootdown)
    price = _priced_alone
    costs, counts = [], []
    times, entries = [], []  # per priced row: the rows it prices, its memo entry
    for pc in pieces:
        # Each row priced by _price_row under the key _price_dense gives it (its
        # ROW_COLUMNS, IPI targets).
        rows, k, reps = pc.rows, pc.k, int(pc.reps)
        steady, ipis = price(memo, rows, cpus, shootdown, medians, folio)
        rows_t, tot_t, _cats, st_t = islice(zip(*steady), 4)
        entries += steady
        # its patched rows priced on their own, in place of the template rows they hide
        patched, patched_counts = {}, {}
        if pc.patched:
            hidden = [0] * k
            extra = []
            for q, row in pc.patched.items():
                (e,), (ip,) = price(memo, (row,), cpus, shootdown, medians, folio)
                patched[q] = (e[1], ip, e[3])
                patched_counts[q] = e[0]
                hidden[q % k] += 1
                extra.append(e)
            times += [reps - h for h in hidden]
            times += [1] * len(extra)
            entries += extra
        else:
            times += [reps] * k
        costs.append(((tot_t, ipis, st_t), patched))
        counts.append((rows_t, patched_counts))
    # (per piece: its k rows, then its patched rows, in entries and times alike)
    sums = _lanes.lane_sums(times, list(map(_CATS, entries)))
    return costs, counts, sums, _firsts(pieces, counts, sums, medians, None, None), None


def _periodic_totals(pieces: list[PeriodicPiece], cpus: int | None,
                     folio: FolioBatching | None, medians: tuple, memo: dict,
                     shootdown: bool) -> tuple:
    """:func:`periodic_prices` with its totals (``totals=True``): every piece's rows' memo
    entries looked up at once under ``(row, cpus)``, priced by :func:`_periodic_entry`
    when missing, then the plan's sums in one :func:`~perfsim.cost.lanes.weighted_sum`.
    Mostly builtins over the rows: code run once per plan runs before the interpreter
    specialises it."""
    rows = []
    for pc in pieces:
        rows += pc.rows
    entries = list(map(memo.get, zip(rows, repeat(cpus))))
    if None in entries:
        entries = [e or _periodic_entry(memo, row, cpus, shootdown, medians, folio)
                   for e, row in zip(entries, rows, strict=True)]
    costs, counts, times, extra = [], [], [], []  # times: the rows each entry prices
    at = 0
    for pc in pieces:
        k, reps = pc.k, int(pc.reps)
        steady = entries[at:at + k]
        at += k
        rows_t, tot_t, _cats, st_t = islice(zip(*steady), 4)
        # its patched rows priced on their own, in place of the template rows they hide
        patched, patched_counts = {}, {}
        if pc.patched:
            hidden = [0] * k
            for q, row in pc.patched.items():
                e = memo.get((row, cpus))
                if e is None:
                    e = _periodic_entry(memo, row, cpus, shootdown, medians, folio)
                patched[q] = (e[1], e[7], e[3])
                patched_counts[q] = e[0]
                hidden[q % k] += 1
                extra.append(e)
            times += map(sub, repeat(reps), hidden)
        else:
            times += repeat(reps, k)
        costs.append(((tot_t, list(map(_IPIS_E, steady)), st_t), patched))
        counts.append((rows_t, patched_counts))
    # (the patched rows' entries after every piece's rows, each of weight 1)
    entries += extra
    times += repeat(1, len(extra))
    packed = list(map(_PACKED, entries))
    summed = _lanes.weighted_sum(times, list(map(_LANES, entries)), packed)
    sums = summed[:len(CATEGORIES)]
    totals = PeriodicTotals(summed[_LANE_COUNTS], summed[-3],
                            max(compress(map(_FLUSH_IPIS, entries), times), default=0),
                            summed[-2], summed[-1], any(map(_RMAP_LANE, map(_LANES, entries))))
    # every lane of a packed entry is >= 0, and so is every weight: a trigger whose count
    # sums to 0 over the plan is then paid by no row (no piece need be searched for it)
    searched = _LANE_COUNTS.start if None not in packed else None
    return costs, counts, sums, _firsts(pieces, counts, sums, medians, searched, summed), \
        totals


def _firsts(pieces: list, counts: list, sums: list, medians: tuple, searched: int | None,
            summed: list | None) -> list:
    """:func:`periodic_prices`' first-row charges (added to ``sums``): each rule's on the
    first row that pays its trigger; a rule whose trigger's count sums to 0 over the plan
    is skipped when ``searched`` gives where the counts begin in ``summed`` (the plan's
    lanes, every one >= 0)."""
    firsts = []
    for (name, _t), (trig, wpos, cat) in zip(FIRST_ROW_RULES, _FIRST_ROW_TERMS, strict=True):
        if searched is not None and summed[searched + trig] == 0:
            continue
        for pc, (rows_t, rows_p) in zip(pieces, counts, strict=True):
            if pc.reps == 1 and not rows_p:  # rows counted once: the first that pays
                f = _first_paying(rows_t, trig)
            else:
                trig_t = [c[trig] for c in rows_t]
                if not rows_p and max(trig_t) <= 0:
                    continue  # no row of the piece pays the trigger (_first_in_block's None)
                f = _first_in_block(pc.k, pc.reps, trig_t,
                                    {q: c[trig] for q, c in rows_p.items()})
            if f is not None:
                firsts.append((name, pc.offset + f, medians[wpos]))
                sums[cat] += medians[wpos]
                break
    return firsts


def periodic_jittered_row_costs(steps: S.Steps, profile: CostProfile, cpus: int | None,
                             rng: np.random.Generator, folio: FolioBatching | None,
                             layout: list | None = None) -> RowCosts | None:
    """:func:`row_costs` with jitter of a plan :func:`periodic_row_costs` covers: the fixed
    parameters at their medians part by part (a jittered one at 0), then each jittered
    parameter, in :data:`PARAM_NAMES` order, drawn for the rows that use it, exactly as
    :func:`vector_row_costs` draws. None when a parameter of the IPI targets' own work
    (``ipi_receiver_ns``, ``tlb_full_flush_ns``, ``tlb_invlpg_ns``) has jitter, or the plan
    is not covered. ``layout``: the plan's :func:`periodic_layout`, when already made."""
    jittered = [name for name in PARAM_NAMES if not profile.param(name).is_fixed]
    if {"ipi_receiver_ns", "tlb_full_flush_ns", "tlb_invlpg_ns"} & set(jittered):
        return None
    zeroed = tuple(0 if name in jittered else m
                   for name, m in zip(PARAM_NAMES, profile.medians_ns, strict=True))
    got = periodic_row_costs(steps, profile, cpus=cpus, folio=folio, medians=zeroed,
                             counts_of=tuple(jittered), layout=layout)
    if got is None:
        return None
    base, counts = got
    total, sums, extra = base.total, list(base._sums), []
    for name in jittered:
        idx = np.flatnonzero(counts[name] != 0)
        v = draw(profile.param(name), len(idx), rng)
        if isinstance(v, int):  # no row uses it: nothing drawn, nothing charged
            continue
        full = np.zeros(len(total), _I64)
        full[idx] = v
        product = counts[name] * full
        cat = _CATEGORY_INDEX[PARAM_CATEGORY[name]]
        total += product
        sums[cat] += int(product.sum())
        extra.append((cat, product))
    return RowCosts.of_parts(total, base.ipis, base.stolen, sums, zeroed, base._later[0],
                             extra)


def lay_out(pieces: list[PeriodicPiece], n: int, values: list) -> np.ndarray:
    """Per-row values of a plan of ``n`` rows given as its :func:`periodic_layout`, as one
    (m x n) int64 array: ``values`` has per piece ``(rows, patched)``: m sequences of the
    values of its ``k`` rows (written once for all its copies), and ``{row in the piece:
    its m values}`` written over them."""
    m = len(values[0][0]) if values else 0
    out = np.empty((m, n), _I64)
    for pc, (rows, patched) in zip(pieces, values, strict=True):
        off, k, reps = pc.offset, pc.k, pc.reps
        if reps == 1:
            out[:, off:off + k] = rows
        elif k <= 8:  # one strided write per template row (a broadcast over copies of a few
            # rows runs numpy's inner loop over those few values: several times slower)
            block = out[:, off:off + k * reps]
            rows = np.array(rows, _I64)
            for j in range(k):
                block[:, j::k] = rows[:, j:j + 1]
        else:
            out[:, off:off + k * reps].reshape(m, reps, k)[:] = np.array(rows, _I64)[:, None, :]
        for q, v in patched.items():
            out[:, off + q] = v
    return out


def _first_in_block(k: int, reps: int, trig: list, patched: dict) -> int | None:
    """The first row of a block of ``reps`` copies of ``k`` template rows whose trigger
    count is above 0: ``trig`` per template row, ``patched`` for the rows priced on their
    own."""
    best = min((q for q, v in patched.items() if v > 0), default=None)
    hits = [i for i, v in enumerate(trig) if v > 0]
    if not hits:
        return best
    for r in range(reps):
        for i in hits:
            q = r * k + i
            if best is not None and q >= best:
                return best
            if q not in patched:
                return q
    return best


def _price_row(memo: dict, key: tuple, weights: tuple, medians: tuple, terms: tuple) -> tuple:
    """``(counts, total_ns, per-category ns, stolen_ns)`` of one row, kept in ``memo`` under
    ``key`` = (its :data:`~perfsim.cost.counts.ROW_COLUMNS` values, IPI targets):
    what :func:`scalar_row_costs` computes for it without a memo (the first-row charges,
    which depend on the rows before it, are added by the caller)."""
    r, ipis = key
    c = row_counts(r, ipis, SCALAR_OPS, terms)
    cats = [0] * len(CATEGORIES)
    for i in compress(_ROW_POSITIONS, c):  # a row pays a few parameters: the others add 0
        cats[_ROW_CATEGORY[i]] += c[i] * weights[i]
    stolen = stolen_of(ipis, r[_R_FLUSH_FULL], r[_R_FLUSH_PAGES], medians[_RECEIVER],
                       medians[_FULL_FLUSH], medians[_INVLPG], SCALAR_OPS)
    got = memo[key] = (c, sum(cats), cats, stolen)
    return got


#: The caller-paid parameters grouped by category, in :data:`CATEGORIES` order.
_BY_CATEGORY = tuple(n for c in CATEGORIES for n in PARAM_NAMES
                     if PARAM_CATEGORY[n] == c and n != "ipi_receiver_ns")
_CATEGORY_STARTS = np.cumsum([0] + [sum(1 for n in PARAM_NAMES if PARAM_CATEGORY[n] == c
                                        and n != "ipi_receiver_ns")
                                    for c in CATEGORIES[:-1]])
assert all(np.diff(np.append(_CATEGORY_STARTS, len(_BY_CATEGORY))) > 0)
_CATEGORY_BOUNDS = tuple(zip(_CATEGORY_STARTS.tolist(),
                             [*_CATEGORY_STARTS.tolist()[1:], len(_BY_CATEGORY)], strict=True))
_ROW = {name: i for i, name in enumerate(_BY_CATEGORY)}
assert set(_ROW) == set(_COUNT_ORDER)
assert set(ROW_PARAMS) | {p for p, _t in FIRST_ROW_RULES} == set(_ROW)
_ROW_OF = tuple(_ROW[p] for p in ROW_PARAMS)
_ROW_OF_ARRAY = np.array(_ROW_OF)
_PARAM_POS = {name: i for i, name in enumerate(PARAM_NAMES)}
#: The medians of :data:`ROW_PARAMS` / of :data:`_BY_CATEGORY`, from ``profile.medians_ns``.
_ROW_WEIGHTS = itemgetter(*(_PARAM_POS[p] for p in ROW_PARAMS))
_BY_CATEGORY_WEIGHTS = itemgetter(*(_PARAM_POS[p] for p in _BY_CATEGORY))
_CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
_ROW_CATEGORY = [_CATEGORY_INDEX[PARAM_CATEGORY[p]] for p in ROW_PARAMS]
assert _ROW_CATEGORY == sorted(_ROW_CATEGORY), "ROW_PARAMS must be grouped by category"
#: ``(start, end)`` in ROW_PARAMS of each category's parameters (empty for none).
_ROW_CATEGORY_SLICES = tuple((_ROW_CATEGORY.index(k) if k in _ROW_CATEGORY else 0,
                              len(_ROW_CATEGORY) - _ROW_CATEGORY[::-1].index(k)
                              if k in _ROW_CATEGORY else 0) for k in range(len(CATEGORIES)))
#: Per first-row rule: (its trigger's position in ROW_PARAMS, its median's position in
#: PARAM_NAMES, its category's index).
_FIRST_ROW_TERMS = tuple((ROW_PARAMS.index(t), _PARAM_POS[p], _CATEGORY_INDEX[PARAM_CATEGORY[p]])
                         for p, t in FIRST_ROW_RULES)
_ROW_POSITIONS = range(len(ROW_PARAMS))
_LIST_INDEX = {c: i for i, c in enumerate(LIST_COLUMNS)}
_R_FLUSH_FULL = ROW_COLUMNS.index("flush_full")
_R_FLUSHES = ROW_COLUMNS.index("flushes")
_R_RMAP = ROW_COLUMNS.index("rmap")
_R_FLUSH_PAGES = ROW_COLUMNS.index("flush_pages")
_RECEIVER = _PARAM_POS["ipi_receiver_ns"]
_FULL_FLUSH = _PARAM_POS["tlb_full_flush_ns"]
_INVLPG = _PARAM_POS["tlb_invlpg_ns"]


def _per_category(matrix: np.ndarray, medians: tuple) -> np.ndarray:
    """(categories x rows) costs of a count matrix at the medians: one product, then each
    category's parameter rows added (``reduceat`` for a few rows; row by row for many,
    where ``reduceat`` along the parameters is several times slower): the same integers."""
    weights = np.array(_BY_CATEGORY_WEIGHTS(medians), _I64)
    weighted = matrix * weights[:, None]
    if matrix.shape[1] <= 256:
        return np.add.reduceat(weighted, _CATEGORY_STARTS, axis=0)
    out = np.empty((len(CATEGORIES), matrix.shape[1]), _I64)
    for k, (a, b) in enumerate(_CATEGORY_BOUNDS):
        row = out[k]
        row[:] = weighted[a]
        for r in range(a + 1, b):
            row += weighted[r]
    return out


def _row_totals(per_cat: np.ndarray) -> np.ndarray:
    """Each row's total over the categories: the category rows added one by one (summing
    a few long rows along axis 0 is several times slower): the same integers."""
    total = per_cat[0].copy()
    for row in per_cat[1:]:
        total += row
    return total


def _fixed_row_costs(steps: S.Steps, profile: CostProfile, ipis: np.ndarray,
                     matrix: np.ndarray) -> RowCosts:
    """:func:`row_costs` when every parameter takes its median (no jitter, or no
    generator): the same integers, from one (parameters x rows) product of ``matrix``
    (:func:`_count_matrix`) instead of a loop of per-parameter array operations (what a
    small plan's pricing was made of)."""
    n = len(steps)
    if n == 0:
        zero = np.zeros(0, _I64)
        return RowCosts(zero, {c: zero.copy() for c in CATEGORIES}, ipis, zero.copy(), matrix)
    med = profile.medians_ns
    per_cat = _per_category(matrix, med)
    by_cat = dict(zip(CATEGORIES, per_cat, strict=True))
    total = _row_totals(per_cat)
    cols = steps.cols
    stolen = stolen_of(ipis, cols["flush_full"].astype(_I64), cols["flush_pages"].astype(_I64),
                       med[_RECEIVER], med[_FULL_FLUSH], med[_INVLPG], ARRAY_OPS).astype(_I64)
    return RowCosts(total, by_cat, ipis, stolen, matrix, per_cat)


def total_ns_draws(plan_or_steps, profile: CostProfile, rngs, *, cpus: int | None = None,
                   folio: FolioBatching | None = None) -> np.ndarray:
    """The plan's whole cost (integer ns) once per generator in ``rngs``: the same numbers as
    ``row_costs(plan, profile, cpus=cpus, rng=g, folio=folio).total.sum()`` for each ``g``,
    drawn in the same order from each generator, with the operation counts computed once
    (a report prices every call of its grid for many replications)."""
    steps = steps_of(plan_or_steps)
    ipis = ipi_targets(steps, profile, cpus)
    counts = param_counts(steps, ipis, folio)
    plan_terms = []
    for name in PARAM_NAMES:
        param = profile.param(name)
        receiver = name == "ipi_receiver_ns"  # paid by the targets, not in the total
        if param.is_fixed:
            # draw() gives the median whatever the size, taking nothing from the generator
            plan_terms.append((param, 0, None,
                               None if receiver else int(counts[name].sum(dtype=_I64))))
            continue
        used = ipis > 0 if receiver else counts[name] != 0
        idx = np.flatnonzero(used)
        weights = None if receiver else np.asarray(counts[name], _I64)[idx]
        plan_terms.append((param, len(idx), weights,
                           None if weights is None else int(weights.sum())))
    out = []
    for rng in rngs:
        total = 0
        for param, k, weights, weight_sum in plan_terms:
            v = draw(param, k, rng)  # drawn even when it adds nothing: same generator state
            if weight_sum is None:
                continue
            total += weight_sum * v if isinstance(v, int) else int((weights * v).sum())
        out.append(total)
    return np.array(out, np.int64)


@dataclass(frozen=True)
class Prediction:
    """The closed-form, no-contention duration of a plan.

    ``predicted_ns`` is the caller's wall time (integer ns) and equals ``sum(cost_ns.values())``.
    ``stolen_ns`` is the total time taken from other CPUs by the call's IPIs (summed over
    targets), ``ipis`` the number of IPIs sent.
    """

    predicted_ns: int
    cost_ns: dict[str, int]
    stolen_ns: int
    ipis: int
    profile: str
    profile_digest: str

    def to_json(self) -> dict:
        return {"predicted_ns": self.predicted_ns, "cost_ns": dict(self.cost_ns),
                "stolen_ns": self.stolen_ns, "ipis": self.ipis,
                "cost_profile": self.profile, "cost_profile_digest": self.profile_digest}


def predict(plan_or_steps, cost_profile: CostProfile | str, *, cpus: int | None = None,
            rng: np.random.Generator | None = None,
            folio: FolioBatching | None = None, written_before_bytes: int = 0) -> Prediction:
    """Closed-form duration of a plan (``MovePlan`` or ``Steps``) under a cost profile (object,
    built-in name or TOML path). ``cpus``: CPUs in the mm (``None``: as planned). ``rng``:
    draw jitter (``None``: medians). ``folio``: the source VMA's large-folio mechanisms.
    ``written_before_bytes``: what the caller wrote just before the call; a profile with a
    ``[cold_cache]`` table charges it once (:meth:`CostProfile.cold_cache_ns`, category
    ``fixed``); 0 (the default) is a call made with the kernel's working set in cache."""
    from perfsim.cost.profile import load_cost_profile

    profile = load_cost_profile(cost_profile)
    rc = row_costs(plan_or_steps, profile, cpus=cpus, rng=rng, folio=folio)
    cost = rc.category_sums()
    cold = profile.cold_cache_ns(written_before_bytes)
    cost["fixed"] += cold
    return Prediction(
        predicted_ns=int(rc.total.sum()) + cold, cost_ns=cost,
        stolen_ns=int((rc.stolen * rc.ipis).sum()), ipis=int(rc.ipis.sum()),
        profile=profile.name, profile_digest=profile.digest,
    )
