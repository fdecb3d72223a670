"""What a plan reports: the request, the outcome and its operation counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from perfsim.planner import steps as S


@dataclass(frozen=True)
class MoveRequest:
    """One ``mremap(old_addr, old_len, new_len, flags, new_addr)`` call.

    ``fixed``/``maymove``/``dontunmap`` are the MREMAP_* flags. ``new_addr`` is required with
    ``fixed``; without it the destination is chosen like ``get_unmapped_area`` would (top-down
    below ``mmap_base``). ``for_stack`` plans exec's ``relocate_vma_down`` instead of a
    syscall: ``new_addr`` must then lie below ``old_addr`` (the stack moves down).
    ``fail_alloc_at`` injects an allocation failure at the k-th page-table allocation of
    ``move_page_tables`` (1-based), to exercise the partial-move and revert path.
    """

    old_addr: int
    old_len: int
    new_len: int | None = None
    new_addr: int | None = None
    maymove: bool = True
    fixed: bool = True
    dontunmap: bool = False
    for_stack: bool = False
    fail_alloc_at: int | None = None
    extra_flags: int = 0
    planner: str | None = None
    """Pin the implementation ("reference" or "fast"); None lets the dispatcher choose."""

    @property
    def length(self) -> int:
        return self.old_len if self.new_len is None else self.new_len


COUNTER_FIELDS = (
    "pud_moves", "pmd_moves", "thp_moves", "thp_splits", "hugetlb_moves", "ptes_moved",
    "move_ptes_calls", "tlb_flushes", "tlb_full_flushes", "tlb_pages_invalidated", "ipis",
    "rmap_holds", "ptl_acquisitions", "notifier_pairs", "tables_freed", "ptes_zapped",
)


@dataclass(frozen=True)
class Counters:
    """Operation counts over a set of plan rows (kernel-model.md §4 notation)."""

    pud_moves: int
    pmd_moves: int
    thp_moves: int
    thp_splits: int
    hugetlb_moves: int
    ptes_moved: int
    move_ptes_calls: int
    tlb_flushes: int
    tlb_full_flushes: int
    tlb_pages_invalidated: int
    ipis: int
    rmap_holds: int
    ptl_acquisitions: int
    notifier_pairs: int
    tables_freed: int
    ptes_zapped: int
    tables_allocated: dict

    @classmethod
    def of(cls, steps: S.Steps, phases: tuple[int, ...]) -> Counters:
        sel = np.isin(steps.phase, phases)
        kind = steps.kind[sel]

        def total(col: str, mask=None) -> int:
            v = steps.col(col)[sel]
            return int(v[mask].sum()) if mask is not None else int(v.sum())

        moving = np.isin(kind, (S.K_PTE_MOVE, S.K_HUGETLB_MOVE))
        return cls(
            pud_moves=int(np.count_nonzero(np.isin(kind, (S.K_PUD_MOVE, S.K_HUGE_PUD_MOVE)))),
            pmd_moves=int(np.count_nonzero(kind == S.K_PMD_MOVE)),
            thp_moves=int(np.count_nonzero(kind == S.K_THP_MOVE)),
            thp_splits=int(np.count_nonzero(kind == S.K_THP_SPLIT)),
            hugetlb_moves=total("ptes", kind == S.K_HUGETLB_MOVE),
            ptes_moved=total("ptes", moving & (kind == S.K_PTE_MOVE)),
            move_ptes_calls=int(np.count_nonzero(kind == S.K_PTE_MOVE)),
            tlb_flushes=total("flushes"),
            tlb_full_flushes=total("flush_full"),
            tlb_pages_invalidated=total("flush_pages"),
            ipis=total("ipis"),
            rmap_holds=int(np.count_nonzero(steps.rmap[sel] > 0)),
            ptl_acquisitions=total("ptl"),
            notifier_pairs=total("notifier"),
            tables_freed=total("freed"),
            ptes_zapped=total("ptes", kind == S.K_ZAP),
            tables_allocated={
                "p4d": total("alloc_p4d"), "pud": total("alloc_pud"),
                "pmd": total("alloc_pmd"), "pte": total("alloc_pte"),
            },
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MovePlan:
    """The outcome of planning one request.

    ``errno`` is None on success, else the kernel's errno name (``"EINVAL"``...), in which
    case nothing changed. ``result_addr`` is what the syscall returns on success.
    ``progress_bytes`` is what ``move_page_tables`` returned for the forward move.
    ``move`` counts ``move_page_tables`` alone (phase MOVE); ``syscall`` counts the whole call.
    """

    request: MoveRequest
    errno: str | None
    result_addr: int | None
    realigned: bool
    progress_bytes: int
    need_rmap_locks: bool
    steps: S.Steps
    before: object
    after: object
    planner: str
    move: Counters
    syscall: Counters
    note: str = ""

    def to_json(self) -> dict:
        """The ``perfsim plan --json`` document."""
        return {
            "realigned": self.realigned,
            "errno": self.errno,
            "result_addr": self.result_addr,
            "progress_bytes": self.progress_bytes,
            "need_rmap_locks": self.need_rmap_locks,
            "planner": self.planner,
            "steps": len(self.steps),
            "move": self.move.as_dict(),
            "syscall": self.syscall.as_dict(),
            "note": self.note,
        }
