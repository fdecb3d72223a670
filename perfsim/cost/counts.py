"""How many times one plan row pays each cost parameter: the count rules, written once.

:func:`row_counts` is the one source of the per-row rules tabled in :mod:`perfsim.cost.model`.
It is written with operators that mean the same on numpy integer arrays and on Python
ints (``== != > & | * + - //``; no ``~``, no ``and``/``or`` on values) and three helpers
passed in, so it is evaluated two ways from the same text:

* :data:`ARRAY_OPS`: on whole columns (one numpy operation per rule, any number of rows);
* :data:`SCALAR_OPS`: on one row's Python ints (a plan of a few rows, where a numpy call
  costs more than the arithmetic it does).

Both give the same integers: the columns are integers far from int64's range, and every
rule is exact integer arithmetic. Two parameters are charged once per plan rather than per
row (:data:`FIRST_ROW_RULES`: on the first row that pays another parameter); they are
applied by the callers after the per-row counts. ``tests/test_t13_price_counts.py`` holds the
two evaluations, and the first-row rules, to each other on seeded random tables.
"""

from __future__ import annotations

import numpy as np

from perfsim.planner import steps as S

#: The parameters :func:`row_counts` returns, in its order: every caller-paid parameter
#: but the two of :data:`FIRST_ROW_RULES` (``ipi_receiver_ns`` is paid by the targets),
#: grouped by cost category in report order (``perfsim.cost.model`` checks the grouping).
ROW_PARAMS: tuple[str, ...] = (
    "move_ptes_call_ns", "pte_present_ns", "pte_empty_ns", "contpte_pte_ns",
    "hugetlb_entry_ns", "folio_lookup_ns",                                    # pte_copies
    "pmd_move_ns", "pud_move_ns", "thp_move_ns", "thp_split_ns",              # pmd, pud, thp
    "tlb_flush_call_ns", "tlb_invlpg_ns", "tlb_full_flush_ns", "contpte_unfold_ns",
    "contpte_fold_ns",                                                        # tlb_flush
    "ipi_round_trip_ns", "ipi_extra_target_ns",                               # ipi
    "rmap_acquire_ns", "rmap_release_ns", "ptl_ns",                           # rmap_locks, ptl
    "table_alloc_ns", "table_free_ns", "notifier_pair_ns",                    # tables, notifier
    "syscall_ns", "unmap_ns", "zap_pte_ns", "zap_huge_pmd_ns", "extent_ns",   # fixed
)

#: ``(parameter, trigger)``: the parameter is charged once, on the plan's first row whose
#: :func:`row_counts` of ``trigger`` is above 0 (the plan's first flush; its first flush
#: that sends IPIs).
FIRST_ROW_RULES: tuple[tuple[str, str], ...] = (
    ("ipi_wakeup_ns", "ipi_round_trip_ns"),
    ("tlb_first_flush_ns", "tlb_flush_call_ns"),
)

#: The columns :func:`row_counts` reads, in the order it takes them.
ROW_COLUMNS: tuple[str, ...] = (
    "kind", "phase", "ptes", "batches", "slots", "flushes", "flush_pages", "flush_full",
    "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte", "freed", "rmap", "ptl", "notifier",
)


def _where(cond, a, b):
    return a if cond else b


#: ``(minimum, maximum, where)`` on numpy arrays and on Python ints.
ARRAY_OPS = (np.minimum, np.maximum, np.where)
SCALAR_OPS = (min, max, _where)


def folio_terms(folio) -> tuple[bool, int, int]:
    """``(lookup, unfold_pages, fold_pages)`` of a :class:`~perfsim.cost.batching.FolioBatching`
    (or None): whether each batch's folio is looked up, and the PTEs per contiguous block
    unfolded at the source / re-folded at the destination (0: not charged)."""
    if folio is None:
        return False, 0, 0
    block = folio.contpte_pages if folio.contpte_pages > 1 else 0
    return bool(folio.lookup), block if folio.unfold else 0, block if folio.refold else 0


def row_counts(row, ipis, ops, folio_terms=(False, 0, 0)) -> tuple:
    """The counts of :data:`ROW_PARAMS` for rows whose :data:`ROW_COLUMNS` are ``row`` (a
    sequence of arrays, or of one row's ints: the same rules either way): a function of the
    row alone (a charge that depends on the rows before it is a
    :data:`FIRST_ROW_RULES` one).

    ``ipis``: CPUs its flush interrupts (:func:`ipi_targets_of`); ``ops``: :data:`ARRAY_OPS`
    or :data:`SCALAR_OPS`; ``folio_terms``: :func:`folio_terms`. A parameter a row does not
    pay may come back as ``0`` or ``False`` (broadcast by the callers)."""
    (kind, phase, ptes, batches, slots, flushes, flush_pages, flush_full, alloc_p4d, alloc_pud,
     alloc_pmd, alloc_pte, freed, rmap, ptl, notifier) = row
    minimum, maximum, where = ops
    lookup, unfold_pages, fold_pages = folio_terms
    pte_move = kind == S.K_PTE_MOVE
    batched = where(batches > 0, minimum(batches, ptes), ptes)  # set_ptes batches
    present = pte_move * batched
    return (
        pte_move,                                                      # move_ptes_call_ns
        present,                                                       # pte_present_ns
        pte_move * maximum(slots - ptes, 0),                           # pte_empty_ns
        pte_move * (ptes - batched),                                   # contpte_pte_ns
        (kind == S.K_HUGETLB_MOVE) * ptes,                             # hugetlb_entry_ns
        present if lookup else 0,                                      # folio_lookup_ns
        kind == S.K_PMD_MOVE,                                          # pmd_move_ns
        (kind == S.K_PUD_MOVE) | (kind == S.K_HUGE_PUD_MOVE),          # pud_move_ns
        kind == S.K_THP_MOVE,                                          # thp_move_ns
        kind == S.K_THP_SPLIT,                                         # thp_split_ns
        flushes,                                                       # tlb_flush_call_ns
        flush_pages * flushes,                                         # tlb_invlpg_ns
        flush_full * flushes,                                          # tlb_full_flush_ns
        pte_move * (ptes // unfold_pages) if unfold_pages else 0,      # contpte_unfold_ns
        pte_move * (ptes // fold_pages) if fold_pages else 0,          # contpte_fold_ns
        (ipis > 0) & (flushes > 0),                                    # ipi_round_trip_ns
        maximum(ipis - 1, 0) * flushes,                                # ipi_extra_target_ns
        rmap,                                                          # rmap_acquire_ns
        rmap,                                                          # rmap_release_ns
        ptl,                                                           # ptl_ns
        alloc_p4d + alloc_pud + alloc_pmd + alloc_pte,                 # table_alloc_ns
        freed,                                                         # table_free_ns
        notifier,                                                      # notifier_pair_ns
        kind == S.K_SYSCALL,                                           # syscall_ns
        kind == S.K_MUNMAP,                                            # unmap_ns
        (kind == S.K_ZAP) * batches,                                   # zap_pte_ns (R24a)
        (kind == S.K_ZAP) * slots,                                     # zap_huge_pmd_ns (R24)
        ((phase == S.MOVE) | (phase == S.REVERT)) & (kind != S.K_NOTIFIER),  # extent_ns
    )


def ipi_targets_of(planned_ipis, flushes, cpus: int | None, shootdown: bool):
    """CPUs each row's flush interrupts (arrays or ints alike): as planned when ``cpus`` is
    None, else the other ``cpus - 1`` CPUs of the mm on every flush when the arch shoots
    down by IPI, none otherwise (:func:`perfsim.cost.model.ipi_targets` says why)."""
    if cpus is None:
        return planned_ipis
    return flushes * (cpus - 1) if shootdown else flushes * 0


def stolen_of(ipis, flush_full, flush_pages, receiver_ns, full_flush_ns, invlpg_ns, ops):
    """What each IPI target of a row loses (arrays or ints alike): the interrupt plus the
    flush it performs itself; 0 on rows that interrupt nobody."""
    return ops[2](ipis > 0, receiver_ns + flush_full * full_flush_ns + flush_pages * invlpg_ns, 0)
