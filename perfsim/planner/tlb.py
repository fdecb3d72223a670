"""What one TLB flush request costs in operations, per architecture (kernel-model.md §3).

:func:`flush_range` mirrors ``flush_tlb_range`` / ``flush_tlb_mm_range`` on x86-64 (T1–T4),
``__flush_tlb_range`` on arm64 (T8) and riscv's ``flush_tlb_range``. It returns whether the
request becomes a full flush, how many per-page (or per-range) invalidations the initiating
CPU issues, and how many other CPUs are interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.profiles import Arm64Tlb, RiscvTlb, Target, X86Tlb


@dataclass(frozen=True, slots=True)
class Flush:
    full: bool
    pages: int   # per-page invalidation instructions on each CPU (0 for a full flush)
    ipis: int    # other CPUs interrupted (IPI'd); 0 when local-only or broadcast in hardware


def _arm64_range_ops(pages: int) -> int:
    """Number of range TLBI instructions ``__flush_tlb_range_op`` issues for ``pages`` with
    FEAT_TLBIRANGE: an odd page is one single-page TLBI; the rest is split into scale
    levels, one range op per non-zero base-32 digit of ``pages // 2`` (an approximation of
    the scale/num encoding; exact for pages < 64)."""
    ops = pages & 1
    rest = pages >> 1
    while rest:
        ops += 1 if rest & 31 else 0
        rest >>= 5
    return ops


def flush_range(target: Target, start: int, end: int, *, stride_shift: int | None = None,
                cpus: int = 1, lazy_cpus: int = 0, freed_tables: bool = True) -> Flush:
    """One ``flush_tlb_range(vma, start, end)`` on ``target`` in an mm active on ``cpus`` CPUs.

    ``stride_shift`` defaults to the base page shift (every non-hugetlb mremap flush, T1).
    """
    arch = target.arch
    tlb = arch.tlb
    shift = arch.page_shift if stride_shift is None else stride_shift
    span = end - start
    pages = -(-span >> shift)  # invalidations: one per stride, the last one partial
    others = max(cpus - 1, 0)
    if isinstance(tlb, X86Tlb):
        # get_flush_tlb_info compares the truncated count with the ceiling.
        full = (span >> shift) > tlb.single_page_flush_ceiling
        if tlb.invlpgb and cpus >= 4:
            ipis = 0
        elif freed_tables and target.kernel.freed_tables_in_flush_range and tlb.freed_tables_ipi_lazy:
            ipis = others
        else:
            ipis = max(others - lazy_cpus, 0)
        per_page = 0 if full else pages * (2 if tlb.pti else 1)
        return Flush(full, per_page, ipis)
    if isinstance(tlb, Arm64Tlb):
        full = ((not tlb.tlbirange) and (end - start) >= tlb.max_dvm_ops << shift) or (
            pages >= tlb.max_tlbi_range_pages)
        if full:
            return Flush(True, 0, 0)
        return Flush(False, _arm64_range_ops(pages) if tlb.tlbirange else pages, 0)
    if isinstance(tlb, RiscvTlb):
        full = pages > tlb.flush_all_threshold
        return Flush(full, 0 if full else pages, others)
    raise TypeError(f"unknown TLB policy {tlb!r}")


def flush_pmd_range(target: Target, start: int, *, cpus: int = 1, lazy_cpus: int = 0) -> Flush:
    """``flush_pmd_tlb_range`` over one PMD (THP move or split). x86 has no override, so it
    is the generic ``flush_tlb_range`` with a base-page stride (§2.11); arm64 and riscv
    flush with a PMD stride: one invalidation."""
    arch = target.arch
    stride = arch.page_shift if isinstance(arch.tlb, X86Tlb) else arch.pmd_shift
    return flush_range(target, start, start + arch.pmd_size, stride_shift=stride, cpus=cpus,
                       lazy_cpus=lazy_cpus)


def flush_pud_range(target: Target, start: int, *, cpus: int = 1, lazy_cpus: int = 0) -> Flush:
    arch = target.arch
    stride = arch.page_shift if isinstance(arch.tlb, X86Tlb) else arch.pud_shift
    return flush_range(target, start, start + arch.pud_size, stride_shift=stride, cpus=cpus,
                       lazy_cpus=lazy_cpus)
