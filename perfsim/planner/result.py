"""What a plan reports: the request, the outcome and its operation counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property

import numpy as np

from perfsim.planner import steps as S
from perfsim.planner.frozen import direct_init


@direct_init
@dataclass(frozen=True)
class MoveRequest:
    """One ``mremap(old_addr, old_len, new_len, flags, new_addr)`` call.

    ``fixed``/``maymove``/``dontunmap`` are the MREMAP_* flags. ``new_addr`` is required with
    ``fixed``; without it the destination is chosen as ``get_unmapped_area`` would
    (:mod:`perfsim.planner.unmapped_area`: below ``mmap_base``, THP-aligned where the kernel
    line and the mapping say so). ``for_stack`` plans exec's ``relocate_vma_down`` instead of a
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

    @property
    def length(self) -> int:
        return self.old_len if self.new_len is None else self.new_len


COUNTER_FIELDS = (
    "pud_moves", "pmd_moves", "thp_moves", "thp_splits", "hugetlb_moves", "ptes_moved",
    "move_ptes_calls", "tlb_flushes", "tlb_full_flushes", "tlb_pages_invalidated", "ipis",
    "rmap_holds", "ptl_acquisitions", "notifier_pairs", "tables_freed", "ptes_zapped",
    "huge_pmds_zapped",
)


@dataclass(frozen=True)
class Counters:
    """Operation counts over a set of plan rows (docs/kernel-rules.md, Worked examples notation)."""

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
    huge_pmds_zapped: int  #: PMD-mapped THPs zapped whole (zap_huge_pmd; R24)
    tables_allocated: dict

    @classmethod
    def of(cls, steps: S.Steps, phases: tuple[int, ...], blocks=None) -> Counters:
        """Counters over the rows whose phase is in ``phases`` (``blocks``: precomputed
        :func:`phase_blocks`, to count several phase sets in one pass)."""
        return cls.from_totals(sum_phase_blocks(steps, phases, blocks))

    @classmethod
    def from_totals(cls, t: dict) -> Counters:
        kinds = t["kinds"]
        return cls(
            pud_moves=int(kinds[S.K_PUD_MOVE] + kinds[S.K_HUGE_PUD_MOVE]),
            pmd_moves=int(kinds[S.K_PMD_MOVE]),
            thp_moves=int(kinds[S.K_THP_MOVE]),
            thp_splits=int(kinds[S.K_THP_SPLIT]),
            hugetlb_moves=int(t["ptes_by_kind"][S.K_HUGETLB_MOVE]),
            ptes_moved=int(t["ptes_by_kind"][S.K_PTE_MOVE]),
            move_ptes_calls=int(kinds[S.K_PTE_MOVE]),
            tlb_flushes=t["flushes"],
            tlb_full_flushes=t["flush_full"],
            tlb_pages_invalidated=t["flush_pages"],
            ipis=t["ipis"],
            rmap_holds=t["rmap_rows"],
            ptl_acquisitions=t["ptl"],
            notifier_pairs=t["notifier"],
            tables_freed=t["freed"],
            ptes_zapped=int(t["ptes_by_kind"][S.K_ZAP]),
            huge_pmds_zapped=t["zap_huge_pmds"],
            tables_allocated={"p4d": t["alloc_p4d"], "pud": t["alloc_pud"],
                              "pmd": t["alloc_pmd"], "pte": t["alloc_pte"]},
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class MovePlan:
    """The outcome of planning one request.

    ``errno`` is None on success, else the kernel's errno name (``"EINVAL"``...), in which
    case nothing changed. ``result_addr`` is what the syscall returns on success.
    ``progress_bytes`` is what ``move_page_tables`` returned for the forward move.
    ``move`` counts ``move_page_tables`` alone (phase MOVE); ``syscall`` counts the whole call.
    Both are computed from ``steps`` the first time they are read (the engine never reads
    them, so a simulated call does not pay for counting its rows), then kept. So is
    ``after``, the address space after the call (``after_of()``: a synthetic call's plan
    is simulated without it; a replayed trace's next call plans against it).
    ``moved`` lists each ``move_vma`` of the call (:class:`~perfsim.planner.vma_remap.MovedRange`:
    which source range went where, and why it was or was not realigned); a multi-VMA move
    that failed part way has the pieces moved before the failure. Build it by keyword.
    """

    request: MoveRequest
    errno: str | None
    result_addr: int | None
    realigned: bool
    progress_bytes: int
    need_rmap_locks: bool
    steps: S.Steps
    before: object
    after_of: Callable[[], object] = field(repr=False, compare=False)
    planner: str
    note: str = ""
    moved: tuple = ()

    @classmethod
    def of_fields(cls, **values) -> MovePlan:
        """The plan whose fields are ``values`` (every field, by name): what the generated
        ``__init__`` makes, without its frozen ``object.__setattr__`` per field (the
        planner makes one plan per simulated call)."""
        if values.keys() != _PLAN_FIELDS:
            raise TypeError(f"MovePlan.of_fields needs exactly the fields {sorted(_PLAN_FIELDS)}")
        plan = object.__new__(cls)
        plan.__dict__.update(values)
        return plan

    @cached_property
    def _phase_blocks(self) -> list:
        return phase_blocks(self.steps)

    @cached_property
    def move(self) -> Counters:
        """Counters of ``move_page_tables`` alone (the rows of phase MOVE)."""
        return Counters.of(self.steps, (S.MOVE,), self._phase_blocks)

    @cached_property
    def syscall(self) -> Counters:
        """Counters of the whole call (every phase)."""
        return Counters.of(self.steps, tuple(range(len(S.PHASE_NAMES))), self._phase_blocks)

    @cached_property
    def after(self) -> object:
        """The address space after the call (made the first time it is read)."""
        return self.after_of()

    @property
    def realign_reason(self) -> str:
        """Which of rules R4 (a)–(e) decided, for the first move of the call ("" if none)."""
        return self.moved[0].realign if self.moved else ""

    def vmas_after(self) -> list[dict]:
        """The address space after the call: ``{start, end, backing, prot}``, sorted."""
        return [{"start": v.start, "end": v.end, "backing": v.backing, "prot": v.prot}
                for v in self.after.vmas]

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
            "realign_reason": self.realign_reason,
            "moved": [m.to_json() for m in self.moved],
            "vmas_after": self.vmas_after(),
        }


_SUMMED = ("flushes", "flush_full", "flush_pages", "ipis", "ptl", "notifier", "freed",
           "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte")


def _colsum(v: np.ndarray) -> int:
    """Sum of a column; a constant (zero-stride, broadcast) column costs nothing."""
    if len(v) and v.strides == (0,):
        return int(v[0]) * len(v)
    return int(v.sum(dtype=np.int64))


def _block_totals(steps: S.Steps, a: int, b: int) -> dict:
    """Totals of rows ``[a, b)``: sums of count columns, rows per kind, PTEs per kind."""
    nk = len(S.KIND_NAMES)
    kind = steps.kind[a:b]
    out = {c: _colsum(steps.col(c)[a:b]) for c in _SUMMED}
    if len(kind) and kind.strides == (0,):
        k = int(kind[0])
        kinds = np.zeros(nk, np.int64)
        kinds[k] = len(kind)
        ptes = np.zeros(nk, np.int64)
        ptes[k] = _colsum(steps.ptes[a:b])
    else:
        kinds = np.bincount(kind, minlength=nk).astype(np.int64)
        ptes = np.zeros(nk, np.int64)
        for k in (S.K_PTE_MOVE, S.K_HUGETLB_MOVE, S.K_ZAP):
            if kinds[k]:
                ptes[k] = int(steps.ptes[a:b][kind == k].sum(dtype=np.int64))
    out["kinds"] = kinds
    out["ptes_by_kind"] = ptes
    # a zap row's slots: the huge PMDs it zapped whole (R24)
    out["zap_huge_pmds"] = int(steps.slots[a:b][kind == S.K_ZAP].sum(dtype=np.int64)) \
        if kinds[S.K_ZAP] else 0
    rmap = steps.rmap[a:b]
    out["rmap_rows"] = (len(rmap) if rmap[0] else 0) if len(rmap) and rmap.strides == (0,) \
        else int(np.count_nonzero(rmap))
    return out


def phase_blocks(steps: S.Steps) -> list[tuple[int, dict]]:
    """``(phase, totals)`` for each run of consecutive rows of one phase.

    Rows are in execution order, so each phase occupies a few contiguous runs; totals are
    computed once per run, on slices, and a periodic block from its template, so counting
    a million-row plan never materialises it."""
    out = []
    for part in steps.parts():
        if isinstance(part, S.PeriodicBlock):
            if len(part):
                out.append((part.phase, part.totals(_block_totals)))
            continue
        ph = part.phase
        if len(ph) == 0:
            continue
        cuts = np.flatnonzero(ph[1:] != ph[:-1]) + 1
        starts = [0] + cuts.tolist()
        ends = cuts.tolist() + [len(ph)]
        out.extend((int(ph[a]), _block_totals(part, a, b)) for a, b in zip(starts, ends))
    return out


def sum_phase_blocks(steps: S.Steps, phases: tuple[int, ...], blocks=None) -> dict:
    """Add up the per-run totals of the runs whose phase is in ``phases``."""
    nk = len(S.KIND_NAMES)
    total = {c: 0 for c in _SUMMED}
    total.update(kinds=np.zeros(nk, np.int64), ptes_by_kind=np.zeros(nk, np.int64), rmap_rows=0,
                 zap_huge_pmds=0)
    wanted = set(phases)
    for phase, blk in (phase_blocks(steps) if blocks is None else blocks):
        if phase in wanted:
            for k, v in blk.items():
                total[k] = total[k] + v
    return total


_PLAN_FIELDS = {f.name for f in fields(MovePlan)}
