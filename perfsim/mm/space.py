"""An mm: its VMAs, its page tables and the CPUs its threads run on."""

from __future__ import annotations

import bisect
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from operator import attrgetter

from perfsim.mm.pagetable import PageTables
from perfsim.mm.vma import Vma


def _overlap(a: Vma, b: Vma):
    """Refuse two overlapping VMAs (``a`` first)."""
    raise ValueError(f"VMAs overlap: [{a.start:#x}, {a.end:#x}) and [{b.start:#x}, {b.end:#x})")


#: A VMA's start (a sort key; ``list(map(_STARTS, vmas))`` lists them without a
#: comprehension frame)
_STARTS = attrgetter("start")


@dataclass(frozen=True, init=False)
class AddressSpace:
    """VMAs (sorted, non-overlapping), page tables, and ``cpus``: how many CPUs are in
    ``mm_cpumask`` (the mm's threads are spread over them; the caller runs on one of them).
    ``lazy_cpus`` of those are in lazy-TLB mode (they still get IPIs when ``freed_tables``).
    ``map_count_limit`` is ``vm.max_map_count``."""

    vmas: tuple[Vma, ...]
    pt: PageTables
    cpus: int = 1
    lazy_cpus: int = 0
    map_count_limit: int = 65530
    mmap_base_addr: int | None = None
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __init__(self, vmas, pt: PageTables, cpus: int = 1, lazy_cpus: int = 0,
                 map_count_limit: int = 65530, mmap_base_addr: int | None = None) -> None:
        # the dataclass's own __init__, with the fields set in one step (frozen: no
        # per-field object.__setattr__)
        self.__dict__.update(vmas=vmas, pt=pt, cpus=cpus, lazy_cpus=lazy_cpus,
                             map_count_limit=map_count_limit, mmap_base_addr=mmap_base_addr)
        self.__post_init__()

    def __post_init__(self) -> None:
        vmas = tuple(self.vmas)
        starts = list(map(_STARTS, vmas))
        if starts != sorted(starts):  # (a stable sort of sorted VMAs is the same order)
            vmas = tuple(sorted(vmas, key=_STARTS))
            starts = list(map(_STARTS, vmas))
        for a, b in zip(vmas, vmas[1:]):
            if a.end > b.start:
                _overlap(a, b)
        d = self.__dict__
        d["vmas"] = vmas
        d["_starts"] = tuple(starts)

    @property
    def arch(self):
        return self.pt.arch

    @property
    def mmap_base(self) -> int:
        """Where top-down ``get_unmapped_area`` starts: given, or 1 GiB below the top."""
        if self.mmap_base_addr is not None:
            return self.mmap_base_addr
        a = self.pt.arch  # (the arch property, read once)
        top = a.user_va_top - (1 << 30)
        return top - top % a.pmd_size

    def find_vma(self, addr: int) -> Vma | None:
        """The VMA containing ``addr``, or None (``vma_lookup``)."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            v = self.vmas[i]
            if addr < v.end:  # (v.start <= addr: bisect found the last start at or below it)
                return v
        return None

    def intersecting(self, start: int, end: int) -> list[Vma]:
        """VMAs that intersect ``[start, end)`` (``find_vma_intersection`` and its kin):
        ``list(self.vmas[i:j])`` of :meth:`intersecting_span`."""
        i, j = self.intersecting_span(start, end)
        return list(self.vmas[i:j])

    def intersecting_span(self, start: int, end: int) -> tuple[int, int]:
        """``(i, j)``: ``self.vmas[i:j]`` are the VMAs that intersect ``[start, end)``
        (``i == j`` when none does)."""
        starts = self._starts
        j = bisect_left(starts, end)  # the first VMA starting at or above ``end``
        if end <= start or j == 0:
            return j, j
        # the last VMA starting at or below ``start`` (or the first VMA): each after it
        # starts above ``start`` (so ends above it: the VMAs are sorted and apart); it may
        # end at or below ``start``
        i = bisect_right(starts, start, 0, j) - 1
        if i < 0:
            return 0, j
        return (i + 1 if self.vmas[i].end <= start else i), j

    def touching(self, start: int, end: int) -> tuple[Vma | None, Vma | None]:
        """``(the VMA ending at start, the VMA starting at end)``, each None when there is
        none: the neighbours a new VMA over ``[start, end)`` could merge with."""
        starts, vmas = self._starts, self.vmas
        i = bisect_left(starts, end)
        nxt = vmas[i] if i < len(starts) and starts[i] == end else None
        k = bisect_left(starts, start) - 1  # the last VMA starting below ``start``
        prev = vmas[k] if k >= 0 and vmas[k].end == start else None
        return prev, nxt

    def prev_vma(self, addr: int) -> Vma | None:
        """The last VMA ending at or below ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        while i >= 0:
            if self.vmas[i].end <= addr:
                return self.vmas[i]
            i -= 1
        return None

    def next_vma(self, addr: int) -> Vma | None:
        """The first VMA starting at or above ``addr``."""
        i = bisect.bisect_left(self._starts, addr)
        return self.vmas[i] if i < len(self.vmas) else None

    def _copy(self) -> AddressSpace:
        """A field-for-field copy (what ``dataclasses.replace`` makes before applying its
        changes, without re-running ``__init__``: planners derive several states per call)."""
        new = object.__new__(AddressSpace)
        new.__dict__.update(self.__dict__)
        return new

    def with_vmas(self, vmas) -> AddressSpace:
        new = self._copy()
        object.__setattr__(new, "vmas", tuple(vmas))
        new.__post_init__()  # sorted, non-overlapping; the start index
        return new

    def with_span_replaced(self, i: int, j: int, vmas: tuple[Vma, ...]) -> AddressSpace:
        """``with_vmas(self.vmas[:i] + vmas + self.vmas[j:])`` for ``vmas`` that the
        caller holds sorted and inside the gap the others leave (the pieces of
        ``self.vmas[i:j]`` left by an unmap): no sort test, no overlap scan, and the
        start index sliced, not rebuilt."""
        new = object.__new__(AddressSpace)  # (as _copy, the fields then replaced)
        d = new.__dict__
        d.update(self.__dict__)
        old, starts = self.vmas, self._starts
        d["vmas"] = old[:i] + vmas + old[j:]
        d["_starts"] = starts[:i] + tuple(map(_STARTS, vmas)) + starts[j:] if vmas \
            else starts[:i] + starts[j:]
        return new

    def with_vma_added(self, vma: Vma, without=()) -> AddressSpace:
        """``with_vmas([v for v in self.vmas if v not in without] + [vma])``: the same space
        (the same VMA order, the same ``ValueError`` on an overlap), with ``vma`` put in
        place by bisection and checked against its two neighbours only (the others are
        this space's, sorted and apart already)."""
        if without:
            # (``v in without`` holds only for a VMA starting where one of them starts: equal
            # VMAs have equal starts; the dataclass ``==`` of all fields runs only for those)
            if len(without) == 1:
                w = without[0]
                at = w.start
                kept = [v for v in self.vmas if v is not w and not (v.start == at and v == w)]
            else:
                at = set(map(_STARTS, without))
                kept = [v for v in self.vmas if v.start not in at or v not in without]
            starts = list(map(_STARTS, kept))
        else:
            kept, starts = self.vmas, self._starts  # (tuples: sliced below, not copied here)
        i = bisect.bisect_right(starts, vma.start)
        # the two neighbours, the one before first (the order with_vmas names a pair in)
        if i and kept[i - 1].end > vma.start:
            _overlap(kept[i - 1], vma)
        if i < len(kept) and vma.end > kept[i].start:
            _overlap(vma, kept[i])
        new = object.__new__(AddressSpace)  # (as _copy, the fields then replaced)
        d = new.__dict__
        d.update(self.__dict__)
        d["vmas"] = (*kept[:i], vma, *kept[i:])
        d["_starts"] = (*starts[:i], vma.start, *starts[i:])
        return new

    def with_pt(self, pt: PageTables) -> AddressSpace:
        """The same VMAs (already sorted and checked) with page tables ``pt``."""
        new = object.__new__(AddressSpace)  # (as _copy, the page tables then replaced)
        d = new.__dict__
        d.update(self.__dict__)
        d["pt"] = pt
        return new
