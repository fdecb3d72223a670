"""What one TLB flush request costs in operations, per architecture (docs/kernel-rules.md, TLB flush policy).

One function per architecture's policy, each named after the kernel function it mirrors:

* :func:`flush_tlb_mm_range` — x86-64 (``arch/x86/mm/tlb.c``, T1–T4);
* :func:`arm64_flush_tlb_range` — arm64 ``__flush_tlb_range``
  (``arch/arm64/include/asm/tlbflush.h``, T8);
* :func:`riscv_flush_tlb_range` — riscv ``flush_tlb_range`` (``arch/riscv/mm/tlbflush.c``).

:func:`flush_range` picks the one of the target's architecture; :func:`flush_lookup` is the
same policy tabulated over the page count, built by calling :func:`flush_range` once per
length (the vectorised planner indexes it; no policy text exists twice).

Kernel source read: arch/x86/mm/tlb.c at commit 016c4d92 (a 4.20-era tree, the first with
``stride_shift`` and ``freed_tables``): ``flush_tlb_mm_range`` flushes the range page by
page when ``(end - start) >> stride_shift <= tlb_single_page_flush_ceiling`` (33), else
everything. The later x86 rules (lazy-TLB CPUs skipped unless tables were freed, INVLPGB
broadcast, 6.x) and the arm64/riscv policies follow docs/kernel-rules.md, TLB flush policy (T1–T9); the stored
copies of arch/arm64/include/asm/tlbflush.h could not be read here; Debian's 6.1.176, 6.12.117
and 7.3.4 copies were read for :func:`arm64_flush_tlb_range` (docs/kernels.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from perfsim.profiles import Arm64Tlb, KernelProfile, RiscvTlb, Target, X86Tlb


@dataclass(frozen=True, slots=True)
class Flush:
    full: bool
    pages: int   # per-page invalidation instructions on each CPU (0 for a full flush)
    ipis: int    # other CPUs interrupted (IPI'd); 0 when local-only or broadcast in hardware


@lru_cache(maxsize=4096, typed=True)
def flush_of(full: bool, pages: int, ipis: int) -> Flush:
    """``Flush(full, pages, ipis)``, one shared (immutable) instance per value: a small
    move asks for the same few flushes many times, and building a frozen slotted record
    costs more than looking it up. ``typed``: an ``int`` and a numpy integer of the same
    value stay apart, as two constructions would."""
    return Flush(full, pages, ipis)


def flush_tlb_mm_range(tlb: X86Tlb, kernel: KernelProfile, span: int, stride_shift: int, *,
                       cpus: int, lazy_cpus: int, freed_tables: bool) -> Flush:
    """x86-64 ``flush_tlb_mm_range`` over ``span`` bytes with stride ``1 << stride_shift``
    in an mm active on ``cpus`` CPUs.

    * ``get_flush_tlb_info``: more than ``tlb_single_page_flush_ceiling`` (33 since 4.x)
      strides, counted as ``span >> stride_shift``, become one full flush (a PCID/ASID
      flush, ``pages`` = 0); otherwise one ``INVLPG`` per started stride (the loop steps
      ``addr`` by the stride up to ``end``), two with PTI (the user and the kernel PCID).
    * IPIs (``native_flush_tlb_multi``): every other CPU in ``mm_cpumask``; CPUs in lazy
      TLB mode are skipped (``should_flush_tlb``) unless the flush frees page tables
      (``info->freed_tables``, which ``flush_tlb_range`` sets since the 6.x fix backported
      to 6.6 stable, profile ``freed_tables_in_flush_range``).
    * INVLPGB (6.15+ on AMD with the feature): the flush is broadcast in hardware once
      the mm is active on enough CPUs; no IPI.

    >>> from perfsim import resolve_target
    >>> t = resolve_target("6.18", "x86_64")
    >>> x86, k = t.arch.tlb, t.kernel
    >>> flush_tlb_mm_range(x86, k, 33 << 12, 12, cpus=1, lazy_cpus=0, freed_tables=True)
    Flush(full=False, pages=33, ipis=0)
    >>> flush_tlb_mm_range(x86, k, 34 << 12, 12, cpus=3, lazy_cpus=1, freed_tables=True)
    Flush(full=True, pages=0, ipis=2)
    >>> flush_tlb_mm_range(x86, k, 4096, 12, cpus=3, lazy_cpus=1, freed_tables=False)
    Flush(full=False, pages=1, ipis=1)
    >>> flush_tlb_mm_range(x86, k, (33 << 12) + 1, 12, cpus=1, lazy_cpus=0, freed_tables=True)
    Flush(full=False, pages=34, ipis=0)
    """
    full = (span >> stride_shift) > tlb.single_page_flush_ceiling
    others = max(cpus - 1, 0)
    if tlb.invlpgb and cpus >= 4:
        ipis = 0
    elif freed_tables and kernel.freed_tables_in_flush_range and tlb.freed_tables_ipi_lazy:
        ipis = others
    else:
        ipis = max(others - lazy_cpus, 0)
    if full:
        return flush_of(True, 0, ipis)
    return flush_of(False, -(-span >> stride_shift) * (2 if tlb.pti else 1), ipis)


def arm64_range_ops(pages: int) -> int:
    """Number of range TLBI instructions ``__flush_tlb_range_op`` issues for ``pages`` with
    FEAT_TLBIRANGE: an odd page is one single-page TLBI; the rest is split into scale
    levels, one range op per non-zero base-32 digit of ``pages // 2`` (an approximation of
    the scale/num encoding; exact for pages < 64).

    >>> arm64_range_ops(1), arm64_range_ops(2), arm64_range_ops(65)
    (1, 1, 2)
    """
    ops = pages & 1
    rest = pages >> 1
    while rest:
        ops += 1 if rest & 31 else 0
        rest >>= 5
    return ops


def arm64_flush_tlb_range(tlb: Arm64Tlb, kernel: KernelProfile, stride_pages: int,
                          base_pages: int) -> Flush:
    """arm64 ``__flush_tlb_range`` over ``stride_pages`` strides, ``base_pages`` base pages
    (the range rounded out to the stride, counted in ``PAGE_SIZE`` pages, as the kernel's
    ``pages``).

    The whole ASID is flushed (``flush_tlb_mm``) when, without FEAT_TLBIRANGE,
    ``MAX_DVM_OPS`` (``PTRS_PER_PTE``) strides or more are asked for, or when the range
    exceeds what range TLBIs cover (profile ``arm64_tlbi_range_limit``: 6.1's
    ``pages >= MAX_TLBI_RANGE_PAGES`` on every system; 6.12's ``pages >
    MAX_TLBI_RANGE_PAGES`` on every system; 7.3's ``__flush_tlb_range_limit_excess``,
    ``pages > MAX_TLBI_RANGE_PAGES`` with FEAT_TLBIRANGE only). Otherwise
    ``__flush_tlb_range_op`` issues one TLBI per stride without FEAT_TLBIRANGE, and range
    TLBIs over the base pages with it (:func:`arm64_range_ops`). TLBIs are broadcast in
    hardware: no IPI, whatever the CPU count. Read in Debian's 6.1.176, 6.12.117 and 7.3.4
    ``arch/arm64/include/asm/tlbflush.h``.

    >>> from perfsim import resolve_target
    >>> from perfsim.profiles import Arm64Tlb
    >>> k = resolve_target("7.3", "arm64-4k").kernel
    >>> arm64_flush_tlb_range(Arm64Tlb(), k, 16, 16)
    Flush(full=False, pages=16, ipis=0)
    >>> arm64_flush_tlb_range(Arm64Tlb(), k, 512, 512)
    Flush(full=True, pages=0, ipis=0)
    >>> big = 2097152                       # MAX_TLBI_RANGE_PAGES: 8 GiB of 4 KiB pages
    >>> arm64_flush_tlb_range(Arm64Tlb(tlbirange=True), k, big // 512, big).full
    False
    >>> k61 = resolve_target("6.1", "arm64-4k").kernel
    >>> arm64_flush_tlb_range(Arm64Tlb(tlbirange=True), k61, big // 512, big).full
    True
    """
    limit, mode = tlb.max_tlbi_range_pages, kernel.arm64_tlbi_range_limit
    if mode == "ge":
        too_long = base_pages >= limit
    elif mode == "gt" or tlb.tlbirange:
        too_long = base_pages > limit
    else:
        too_long = False
    if too_long or ((not tlb.tlbirange) and stride_pages >= tlb.max_dvm_ops):
        return Flush(True, 0, 0)
    return Flush(False, arm64_range_ops(base_pages) if tlb.tlbirange else stride_pages, 0)


def riscv_flush_tlb_range(tlb: RiscvTlb, pages: int, *, cpus: int) -> Flush:
    """riscv ``flush_tlb_range`` (``__flush_tlb_range``, 6.8+): more than
    ``tlb_flush_all_threshold`` pages flush the whole ASID; otherwise one ``sfence.vma``
    per page. Other CPUs are reached by IPI (or the SBI remote fence, same count)."""
    full = pages > tlb.flush_all_threshold
    return Flush(full, 0 if full else pages, max(cpus - 1, 0))


def flush_range(target: Target, start: int, end: int, *, stride_shift: int | None = None,
                cpus: int = 1, lazy_cpus: int = 0, freed_tables: bool = True) -> Flush:
    """One ``flush_tlb_range(vma, start, end)`` on ``target`` in an mm active on ``cpus`` CPUs.

    ``stride_shift`` defaults to the base page shift (every non-hugetlb mremap flush, T1).
    The cost depends on ``end - start`` only, not on where the range is.
    """
    arch = target.arch
    tlb = arch.tlb
    shift = arch.page_shift if stride_shift is None else stride_shift
    if isinstance(tlb, X86Tlb):
        return flush_tlb_mm_range(tlb, target.kernel, end - start, shift, cpus=cpus,
                                  lazy_cpus=lazy_cpus, freed_tables=freed_tables)
    pages = -(-(end - start) >> shift)  # invalidations: one per stride, the last one partial
    if isinstance(tlb, Arm64Tlb):
        return arm64_flush_tlb_range(tlb, target.kernel, pages, pages << (shift - arch.page_shift))
    if isinstance(tlb, RiscvTlb):
        return riscv_flush_tlb_range(tlb, pages, cpus=cpus)
    raise TypeError(f"unknown TLB policy {tlb!r}")


class SpanFlushes(dict):
    """:func:`flush_range` over ``[0, span)`` by ``span`` (a Python int) for one target and
    one set of the other arguments: ``table[span]`` is the flush, worked out by
    :func:`flush_range` the first time that span is asked for (``__missing__``)."""

    __slots__ = ("_target", "_kw")

    def __init__(self, target: Target, kw: dict) -> None:
        super().__init__()
        self._target, self._kw = target, kw

    def __missing__(self, span: int) -> Flush:
        if len(self) >= 4096:
            self.clear()
        f = self[span] = flush_range(self._target, 0, span, **self._kw)
        return f


#: :func:`span_flushes` memo: (id(target), stride shift, cpus, lazy cpus, freed tables) ->
#: (target, its :class:`SpanFlushes`). The target is kept, so its id names no other while
#: it is here.
_SPAN_TABLES: dict[tuple, tuple] = {}


def span_flushes(target: Target, *, stride_shift: int | None = None, cpus: int = 1,
                 lazy_cpus: int = 0, freed_tables: bool = True) -> SpanFlushes:
    """The :class:`SpanFlushes` of ``target`` and these arguments, one per target and
    arguments (a walked call asks for the same few flushes again and again, and hashing a
    :class:`Target` hashes every field of its profiles): a per-target table of
    :func:`flush_range`, whose answer depends on the length alone."""
    key = (id(target), stride_shift, cpus, lazy_cpus, freed_tables)
    got = _SPAN_TABLES.get(key)
    if got is not None and got[0] is target:
        return got[1]
    if len(_SPAN_TABLES) >= 256:
        _SPAN_TABLES.clear()
    table = SpanFlushes(target, dict(stride_shift=stride_shift, cpus=cpus, lazy_cpus=lazy_cpus,
                                     freed_tables=freed_tables))
    _SPAN_TABLES[key] = (target, table)
    return table


#: :func:`flush_span` memo for spans that are not Python ints (numpy integers give numpy
#: counts): (id(target), span, type(span), stride shift, cpus, lazy cpus, freed tables) ->
#: (target, flush).
_FLUSHES: dict[tuple, tuple] = {}


def flush_span(target: Target, span: int, *, stride_shift: int | None = None, cpus: int = 1,
               lazy_cpus: int = 0, freed_tables: bool = True) -> Flush:
    """:func:`flush_range` over ``[0, span)`` (the same flush as over any range of that
    length), memoised by the target's identity and the other arguments
    (:func:`span_flushes` for a Python int span)."""
    if type(span) is int:
        got = _SPAN_TABLES.get((id(target), stride_shift, cpus, lazy_cpus, freed_tables))
        if got is not None and got[0] is target:  # (span_flushes, without a second call)
            return got[1][span]
        return span_flushes(target, stride_shift=stride_shift, cpus=cpus, lazy_cpus=lazy_cpus,
                            freed_tables=freed_tables)[span]
    key = (id(target), span, type(span), stride_shift, cpus, lazy_cpus, freed_tables)
    got = _FLUSHES.get(key)
    if got is not None and got[0] is target:
        return got[1]
    if len(_FLUSHES) >= 4096:
        _FLUSHES.clear()
    f = flush_range(target, 0, span, stride_shift=stride_shift, cpus=cpus, lazy_cpus=lazy_cpus,
                    freed_tables=freed_tables)
    _FLUSHES[key] = (target, f)
    return f


def flush_pmd_range(target: Target, start: int, *, cpus: int = 1, lazy_cpus: int = 0) -> Flush:
    """``flush_pmd_tlb_range`` over one PMD (THP move or split). x86 has no override, so it
    is the generic ``flush_tlb_range`` with a base-page stride (§2.11); arm64 and riscv
    flush with a PMD stride: one invalidation."""
    arch = target.arch
    stride = arch.page_shift if isinstance(arch.tlb, X86Tlb) else arch.pmd_shift
    return flush_range(target, start, start + arch.pmd_size, stride_shift=stride, cpus=cpus,
                       lazy_cpus=lazy_cpus)


def flush_pud_range(target: Target, start: int, *, cpus: int = 1, lazy_cpus: int = 0) -> Flush:
    """``flush_pud_tlb_range`` over one PUD (``move_huge_pud``): as :func:`flush_pmd_range`
    one level up."""
    arch = target.arch
    stride = arch.page_shift if isinstance(arch.tlb, X86Tlb) else arch.pud_shift
    return flush_range(target, start, start + arch.pud_size, stride_shift=stride, cpus=cpus,
                       lazy_cpus=lazy_cpus)


@dataclass(frozen=True)
class FlushTable:
    """:func:`flush_range` tabulated over the page count ``n`` (``n << stride_shift`` bytes):
    ``full[n]``, ``pages[n]``, ``ipis[n]`` (int arrays)."""

    full: np.ndarray
    pages: np.ndarray
    ipis: np.ndarray


@lru_cache(maxsize=64)
def flush_lookup(target: Target, stride_shift: int, cpus: int, lazy_cpus: int,
                 max_pages: int) -> FlushTable:
    """The flush policy for every length of ``0..max_pages`` stride pages, one
    :func:`flush_range` call per length (memoised: the inputs are immutable values)."""
    rows = [flush_range(target, 0, n << stride_shift, stride_shift=stride_shift, cpus=cpus,
                        lazy_cpus=lazy_cpus) for n in range(max_pages + 1)]
    table = FlushTable(np.array([f.full for f in rows], np.int32),
                       np.array([f.pages for f in rows], np.int64),
                       np.array([f.ipis for f in rows], np.int32))
    for a in (table.full, table.pages, table.ipis):
        a.flags.writeable = False
    return table
