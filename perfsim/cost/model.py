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
unmap_ns                   once per run of ``unmap_dst`` rows (``do_munmap`` of a mapped
                           destination, R22.3)
zap_pte_ns                 per PTE of a ``zap`` row
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

from dataclasses import dataclass, field

import numpy as np

from perfsim.cost.batching import FolioBatching
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
    "syscall_ns": "fixed", "unmap_ns": "fixed", "zap_pte_ns": "fixed", "extent_ns": "fixed",
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
    if cpus is None:
        return steps.ipis.astype(_I64)
    if cpus < 1:
        raise ValueError("cpus must be >= 1")
    if not profile.ipi_shootdown:
        return np.zeros(len(steps), _I64)
    return steps.flushes.astype(_I64) * (cpus - 1)


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
    "syscall_ns", "unmap_ns", "zap_pte_ns", "extent_ns", "move_ptes_call_ns", "pte_present_ns",
    "contpte_pte_ns", "pte_empty_ns", "hugetlb_entry_ns", "pmd_move_ns", "pud_move_ns",
    "thp_move_ns", "thp_split_ns", "table_alloc_ns", "table_free_ns", "tlb_flush_call_ns",
    "tlb_invlpg_ns", "tlb_full_flush_ns", "ipi_round_trip_ns", "ipi_extra_target_ns",
    "ipi_wakeup_ns", "tlb_first_flush_ns", "rmap_acquire_ns", "rmap_release_ns", "ptl_ns",
    "notifier_pair_ns", "folio_lookup_ns", "contpte_unfold_ns", "contpte_fold_ns",
)
#: Parameters that are one row of a kind: 1 on that kind's rows.
_ONE_PER_KIND = (("syscall_ns", S.K_SYSCALL), ("move_ptes_call_ns", S.K_PTE_MOVE),
                 ("pmd_move_ns", S.K_PMD_MOVE), ("thp_move_ns", S.K_THP_MOVE),
                 ("thp_split_ns", S.K_THP_SPLIT))
#: Parameters charged once per unit of one column: (parameter, column).
_ONE_PER_UNIT = (("table_free_ns", "freed"), ("tlb_flush_call_ns", "flushes"),
                 ("rmap_acquire_ns", "rmap"), ("rmap_release_ns", "rmap"), ("ptl_ns", "ptl"),
                 ("notifier_pair_ns", "notifier"))
#: The columns :func:`_count_matrix` reads, gathered into one int64 block.
_COUNT_COLUMNS = ("ptes", "batches", "slots", "flushes", "flush_pages", "flush_full",
                  "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte", "freed", "rmap", "ptl",
                  "notifier")
_COL = {c: i for i, c in enumerate(_COUNT_COLUMNS)}
_KIND_IDS = np.arange(len(S.KIND_NAMES))[:, None]


def _count_matrix(steps: S.Steps, ipis: np.ndarray, folio: FolioBatching | None
                  ) -> np.ndarray:
    """:func:`param_counts` as one (parameters x rows) int64 array, parameter ``p`` on row
    ``_ROW[p]`` (:data:`_BY_CATEGORY` order): the counts of a small plan are a few dozen
    whole-array operations, however many rows it has."""
    cols = steps.cols
    n = len(steps)
    kind, phase = cols["kind"], cols["phase"]
    out = np.zeros((len(_BY_CATEGORY), n), _I64)
    if n == 0:
        return out
    r = _ROW
    onehot = _KIND_IDS == kind  # (kinds, rows): row k is "this row is of kind k"
    out[_ONE_PER_KIND_ROWS] = onehot[_ONE_PER_KIND_KINDS]
    c = np.array([cols[name] for name in _COUNT_COLUMNS], _I64)
    ptes, batches, flushes = c[_COL["ptes"]], c[_COL["batches"]], c[_COL["flushes"]]
    out[_ONE_PER_UNIT_ROWS] = c[_ONE_PER_UNIT_COLS]
    pte_move = onehot[S.K_PTE_MOVE]
    nb = np.where(batches > 0, np.minimum(batches, ptes), ptes)  # set_ptes batches
    run_start = np.ones(n, bool)
    run_start[1:] = phase[1:] != phase[:-1]
    out[r["unmap_ns"]] = (phase == S.UNMAP_DST) & run_start
    np.multiply(onehot[S.K_ZAP], ptes, out=out[r["zap_pte_ns"]])
    out[r["extent_ns"]] = ((phase == S.MOVE) | (phase == S.REVERT)) & ~onehot[S.K_NOTIFIER]
    np.multiply(pte_move, nb, out=out[r["pte_present_ns"]])
    np.multiply(pte_move, ptes - nb, out=out[r["contpte_pte_ns"]])
    np.multiply(pte_move, np.maximum(c[_COL["slots"]] - ptes, 0), out=out[r["pte_empty_ns"]])
    np.multiply(onehot[S.K_HUGETLB_MOVE], ptes, out=out[r["hugetlb_entry_ns"]])
    np.add(onehot[S.K_PUD_MOVE], onehot[S.K_HUGE_PUD_MOVE], out=out[r["pud_move_ns"]],
           dtype=_I64)
    c[_COL["alloc_p4d"]:_COL["alloc_pte"] + 1].sum(axis=0, out=out[r["table_alloc_ns"]])
    np.multiply(c[_COL["flush_pages"]], flushes, out=out[r["tlb_invlpg_ns"]])
    np.multiply(c[_COL["flush_full"]], flushes, out=out[r["tlb_full_flush_ns"]])
    flushed = flushes > 0
    ipi_flush = (ipis > 0) & flushed
    out[r["ipi_round_trip_ns"]] = ipi_flush
    np.multiply(np.maximum(ipis - 1, 0), flushes, out=out[r["ipi_extra_target_ns"]])
    for name, mask in (("ipi_wakeup_ns", ipi_flush), ("tlb_first_flush_ns", flushed)):
        i = int(mask.argmax())  # the first True row, if any
        if mask[i]:
            out[r[name], i] = 1
    fb = folio or FolioBatching()
    if fb.lookup:
        out[r["folio_lookup_ns"]] = out[r["pte_present_ns"]]
    if fb.contpte_pages > 1 and (fb.unfold or fb.refold):
        blocks = pte_move * (ptes // max(fb.contpte_pages, 1))
        if fb.unfold:
            out[r["contpte_unfold_ns"]] = blocks
        if fb.refold:
            out[r["contpte_fold_ns"]] = blocks
    return out


def _first(mask: np.ndarray) -> np.ndarray:
    """1 on the first True row, 0 elsewhere."""
    out = np.zeros(len(mask), _I64)
    idx = np.flatnonzero(mask)
    if len(idx):
        out[idx[0]] = 1
    return out


@dataclass(frozen=True, eq=False)
class RowCosts:
    """Per-row integer costs of one plan under one profile (and one draw of its jitter).

    ``total[i]`` is row *i*'s duration on the calling CPU; ``by_category[c][i]`` its part in
    category ``c``; ``ipis[i]`` the CPUs its flush interrupts and ``stolen[i]`` the time taken
    from *each* of them.
    """

    total: np.ndarray
    by_category: dict[str, np.ndarray]
    ipis: np.ndarray
    stolen: np.ndarray
    #: :func:`_count_matrix` of the plan; :attr:`counts` names its rows.
    matrix: np.ndarray = field(repr=False)
    #: ``by_category`` as one (categories x rows) array, when it was computed as one.
    per_category: np.ndarray | None = field(default=None, repr=False)

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """:func:`param_counts` of the plan (views of :attr:`matrix`)."""
        m = self.matrix
        return {name: m[_ROW[name]] for name in _COUNT_ORDER}

    def category_sums(self, lo: int = 0, hi: int | None = None) -> dict[str, int]:
        if self.per_category is not None and lo == 0 and hi is None:
            # one reduction instead of one per category; the same integers
            return dict(zip(CATEGORIES, self.per_category.sum(axis=1).tolist(), strict=True))
        return {c: int(a[lo:hi].sum()) for c, a in self.by_category.items()}


def row_costs(plan_or_steps, profile: CostProfile, *, cpus: int | None = None,
              rng: np.random.Generator | None = None,
              folio: FolioBatching | None = None) -> RowCosts:
    """Per-row costs of a plan. Vectorised over the columns; ``rng`` (from the run's
    SeedSequence) draws the jitter, ``None`` uses each parameter's ``ns``. Parameters are
    drawn in :data:`PARAM_NAMES` order, only for the rows that use them, so the same plan,
    profile and generator state always give the same integers. ``folio``: the source VMA's
    large-folio mechanisms (:func:`perfsim.cost.batching.folio_batching`; ``None``: none)."""
    steps = steps_of(plan_or_steps)
    n = len(steps)
    ipis = ipi_targets(steps, profile, cpus)
    matrix = _count_matrix(steps, ipis, folio)
    if rng is None or profile.is_fixed:
        return _fixed_row_costs(steps, profile, ipis, matrix)
    counts = {name: matrix[_ROW[name]] for name in _COUNT_ORDER}  # param_counts(steps, ipis, folio)
    by_cat = {c: np.zeros(n, _I64) for c in CATEGORIES}
    values: dict[str, np.ndarray | int] = {}
    for name in PARAM_NAMES:
        param = profile.param(name)
        if param.is_fixed or rng is None:
            # draw() returns the median and takes nothing from rng: which rows use the
            # parameter does not matter.
            v = draw(param, 0, rng)
            idx = None
        else:
            used = ipis > 0 if name == "ipi_receiver_ns" else counts[name] != 0
            idx = np.flatnonzero(used)
            v = draw(param, len(idx), rng)
        if isinstance(v, int):
            values[name] = v
            if name != "ipi_receiver_ns" and v:
                by_cat[PARAM_CATEGORY[name]] += counts[name] * v
        else:
            full = np.zeros(n, _I64)
            full[idx] = v
            values[name] = full
            if name != "ipi_receiver_ns":
                by_cat[PARAM_CATEGORY[name]] += counts[name] * full
    total = np.zeros(n, _I64)
    for a in by_cat.values():
        total += a
    # What each IPI target loses: the interrupt, plus the flush it performs itself.
    own = (steps.flush_full.astype(_I64) * values["tlb_full_flush_ns"]
           + steps.flush_pages.astype(_I64) * values["tlb_invlpg_ns"])
    stolen = np.where(ipis > 0, values["ipi_receiver_ns"] + own, 0).astype(_I64)
    return RowCosts(total, by_cat, ipis, stolen, matrix)


#: The caller-paid parameters grouped by category, in :data:`CATEGORIES` order.
_BY_CATEGORY = tuple(n for c in CATEGORIES for n in PARAM_NAMES
                     if PARAM_CATEGORY[n] == c and n != "ipi_receiver_ns")
_CATEGORY_STARTS = np.cumsum([0] + [sum(1 for n in PARAM_NAMES if PARAM_CATEGORY[n] == c
                                        and n != "ipi_receiver_ns")
                                    for c in CATEGORIES[:-1]])
assert all(np.diff(np.append(_CATEGORY_STARTS, len(_BY_CATEGORY))) > 0)
_ROW = {name: i for i, name in enumerate(_BY_CATEGORY)}
assert set(_ROW) == set(_COUNT_ORDER)
_ONE_PER_KIND_ROWS = np.array([_ROW[p] for p, _ in _ONE_PER_KIND])
_ONE_PER_KIND_KINDS = np.array([k for _, k in _ONE_PER_KIND])
_ONE_PER_UNIT_ROWS = np.array([_ROW[p] for p, _ in _ONE_PER_UNIT])
_ONE_PER_UNIT_COLS = np.array([_COL[c] for _, c in _ONE_PER_UNIT])


def _fixed_row_costs(steps: S.Steps, profile: CostProfile, ipis: np.ndarray,
                     matrix: np.ndarray) -> RowCosts:
    """:func:`row_costs` when every parameter takes its median (no jitter, or no
    generator): the same integers, from one (parameters x rows) product of ``matrix``
    (:func:`_count_matrix`) instead of a loop of per-parameter array operations (what a
    small plan's pricing was made of)."""
    n = len(steps)
    params = profile.params
    if n == 0:
        zero = np.zeros(0, _I64)
        return RowCosts(zero, {c: zero.copy() for c in CATEGORIES}, ipis, zero.copy(), matrix)
    weights = np.array([getattr(params, name).ns for name in _BY_CATEGORY], _I64)
    weighted = matrix * weights[:, None]
    per_cat = np.add.reduceat(weighted, _CATEGORY_STARTS, axis=0)
    by_cat = dict(zip(CATEGORIES, per_cat, strict=True))
    total = per_cat.sum(axis=0)
    cols = steps.cols
    own = (cols["flush_full"].astype(_I64) * int(params.tlb_full_flush_ns.ns)
           + cols["flush_pages"].astype(_I64) * int(params.tlb_invlpg_ns.ns))
    stolen = np.where(ipis > 0, int(params.ipi_receiver_ns.ns) + own, 0).astype(_I64)
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
