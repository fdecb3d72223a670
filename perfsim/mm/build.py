"""Build an address space the way a program builds it: VMAs, faulted in as loops touch them.

:class:`VmaSpec` describes one mapping (``mmap``) and how the program touched it
(:class:`Population`); :func:`build_space` turns a list of them into an
:class:`~perfsim.mm.space.AddressSpace` with the page tables the kernel would have built
on those faults, including which PMD ranges get a huge page (THP) and which folios are
large (mTHP), as ``thp_vma_suitable_order`` decides (:func:`thp_suitable`).
:func:`single_move_space` is the short form used by the CLI, workloads and tests: one
source VMA, optional one-page guards below the source and the destination.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from perfsim.errors import PerfsimError
from perfsim.mm.pagetable import PMD_LEAF, PMD_TABLE, PUD_TABLE, PageTables, range_mask
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import BACKINGS, Vma
from perfsim.profiles import Target
from perfsim.units import parse_size

POPULATE_HELP = ('full, none, a fraction in (0, 1) of pages (seeded), "every:K" (pages 0, K, '
                 '2K, ... of the range), "first:SIZE" (a prefix) or "aligned:K" (pages whose '
                 'address is a multiple of K pages)')


@dataclass(frozen=True)
class Population:
    """How a program touched a range (which pages are faulted in):

    ``full`` / ``none``; ``fraction`` — a seeded random subset; ``every`` — every k-th page,
    counted from the start of the range (``counted_from = "range"``: pages 0, k, 2k, …, as a
    loop over a buffer touches them; the text ``every:K``) or by address (``"address"``: the
    pages whose address is a multiple of k pages, whatever the range's start; the text
    ``aligned:K``, and what the host harness writes); ``first`` — the first ``prefix_bytes``
    bytes (the selftest's validation threshold). A PMD slot where no page is touched gets
    no page table, as on the real kernel.
    """

    kind: str = "full"
    fraction: float = 1.0
    every: int = 1
    seed: int = 0
    prefix_bytes: int = 0
    counted_from: str = "address"

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Population:
        t = str(text).strip().lower()
        if t in ("full", "all", "1", "1.0"):
            return cls("full")
        if t in ("none", "0", "0.0", "empty"):
            return cls("none")
        for word, origin in (("every", "range"), ("aligned", "address")):
            if t.startswith(word + ":"):
                try:
                    k = int(t[len(word) + 1:])
                except ValueError:
                    k = 0
                if k < 1:
                    raise PerfsimError(f"--populate: '{word}:K' needs an integer K >= 1, "
                                       f"got {text!r}")
                return cls("every", every=k, counted_from=origin)
        if t.startswith("first:"):
            size = parse_size(t[6:], what="--populate first:SIZE")
            if size < 1:
                raise PerfsimError(f"--populate: 'first:SIZE' needs a size > 0, got {text!r}")
            return cls("first", prefix_bytes=size)
        try:
            f = float(t)
        except ValueError:
            raise PerfsimError(f"--populate: expected {POPULATE_HELP}; got {text!r}") from None
        if not 0.0 < f < 1.0:
            raise PerfsimError(f"--populate: a fraction must lie in (0, 1), got {text!r}")
        return cls("fraction", fraction=f, seed=seed)

    def __str__(self) -> str:
        if self.kind == "fraction":
            return str(self.fraction)
        if self.kind == "every":
            return f"{'every' if self.counted_from == 'range' else 'aligned'}:{self.every}"
        if self.kind == "first":
            return f"first:{self.prefix_bytes}"
        return self.kind

    def apply(self, pt: PageTables, start: int, end: int, *, thp: bool = False,
              pud_leaf: bool = False) -> PageTables:
        """Fault the pattern in over ``[start, end)``. ``thp``: every PMD slot the range
        covers completely is one huge page (callers pass the slots the kernel would make
        huge; see :func:`populate_vma`)."""
        if self.kind == "none":
            return pt
        if self.kind == "first":
            end = min(end, start + -(-self.prefix_bytes // pt.arch.page_size) * pt.arch.page_size)
            return pt.populate(start, end, thp=thp, pud_leaf=pud_leaf)
        if self.kind == "every" and self.counted_from == "range" and \
                (start >> pt.arch.page_shift) % self.every:
            return _populate_every_from(pt, start, end, self.every)
        return pt.populate(start, end, every=self.every, fraction=self.fraction, seed=self.seed,
                           thp=thp, pud_leaf=pud_leaf)


def _populate_every_from(pt: PageTables, start: int, end: int, k: int) -> PageTables:
    """Pages ``start``, ``start + k`` pages, … (the range-relative pattern, where it differs
    from the address-multiple one), written PMD slot by PMD slot into a page-table window,
    one bitmap per distinct (phase, clip)."""
    a = pt.arch
    ps, ptrs = a.page_shift, a.ptrs_per_pte
    win = pt.window(start, end)
    p0, p_end = start >> ps, end >> ps
    masks: dict[tuple[int, int, int], int] = {}
    touched_puds = set()
    first, last = start >> a.pmd_shift, (end - 1) >> a.pmd_shift

    def mask_of(slot: int) -> int:
        s_page = slot * ptrs
        lo, hi = max(p0, s_page) - s_page, min(p_end, s_page + ptrs) - s_page
        phase = lo + (p0 - s_page - lo) % k
        key = (phase, lo, hi)
        if key not in masks:
            masks[key] = sum(1 << i for i in range(phase, hi, k))
        return masks[key]

    def put(slot: int, m: int) -> None:
        kind, old = win.pmd.get(slot, (PMD_TABLE, 0))
        if kind == PMD_TABLE:
            win.pmd[slot] = (PMD_TABLE, old | m)

    slots = range(first, last + 1)
    if ptrs % k == 0 and last - first > 1:
        # Interior slots all start at the same phase: one bitmap, set in bulk.
        inner, m = range(first + 1, last), mask_of(first + 1)
        taken = {sl: entry for sl, entry in win.pmd.items() if first < sl < last}
        win.pmd.update(dict.fromkeys(inner, (PMD_TABLE, m)))
        for sl, (kind, old) in taken.items():
            win.pmd[sl] = (kind, old | m) if kind == PMD_TABLE else (kind, old)
        touched_puds.update(range(inner.start >> (a.pud_shift - a.pmd_shift),
                                  ((inner.stop - 1) >> (a.pud_shift - a.pmd_shift)) + 1))
        slots = (first, last)
    for slot in slots:
        m = mask_of(slot)
        if m:
            put(slot, m)
            touched_puds.add(slot >> (a.pud_shift - a.pmd_shift))
    for slot in touched_puds:
        win.pud.setdefault(slot, PUD_TABLE)
        if not a.pud_folded:
            win.pud_tables.add(slot >> (a.p4d_shift - a.pud_shift))
    return pt.replace_window(win)


def thp_suitable(vma: Vma, addr: int, size: int, page_shift: int) -> bool:
    """``thp_vma_suitable_order``: may the ``size``-aligned range holding ``addr`` be
    mapped by one folio of that size? It must lie inside the VMA, and for a file or shmem
    mapping the VMA's start and its file offset must be congruent modulo ``size`` (else the
    page cache's aligned folio would map at an unaligned address). Versions: 5.x–6.18."""
    bounds = large_folio_bounds(vma, size, page_shift)
    return bounds is not None and bounds[0] <= addr - addr % size < bounds[1]


def large_folio_bounds(vma: Vma, size: int, page_shift: int) -> tuple[int, int] | None:
    """Where ``vma``'s folios of ``size`` bytes can lie: ``(lo, hi)``, the ``size``-aligned
    ranges wholly inside the VMA (``thp_vma_suitable_order`` for each of them: inside the
    VMA, and for a file or shmem mapping its start and file offset congruent modulo
    ``size``); None where there is none. The one place the population (a fault maps such a
    folio whole), the move's PTE batching (R16g) and the zap's folio batches (R24a) take
    the layout of a VMA's large folios from.

    >>> large_folio_bounds(Vma(0x1000, 0x40000), 0x10000, 12)
    (65536, 262144)
    """
    lo, hi = -(-vma.start // size) * size, vma.end // size * size
    if hi <= lo or not file_offset_congruent(vma, size, page_shift):
        return None
    return lo, hi


def file_offset_congruent(vma: Vma, size: int, page_shift: int) -> bool:
    """``thp_vma_suitable_order``'s file test: anon always; a file or shmem VMA only when
    ``vm_start`` and ``vm_pgoff`` are congruent modulo ``size``."""
    if vma.backing == "anon":
        return True
    return (vma.start - (vma.pgoff << page_shift)) % size == 0


@dataclass(frozen=True)
class VmaSpec:
    """One mapping of a request: ``[start, start + length)``, its backing, protection,
    population and folio sizes. ``file`` names the file (or, for anon, the ``anon_vma``
    family) it shares with other VMAs naming the same; ``pgoff`` is its page offset in the
    file (default: 0 for files, the page number of ``start`` for anon); ``uffd`` is
    ``"missing"`` or ``"wp"`` for a VMA registered with userfaultfd (without the remap
    event); ``touched = False`` maps it without faulting anything in (a guard page);
    ``shared = False`` maps a ``file``/``shmem`` backing MAP_PRIVATE; ``written_back`` says
    a shared file's written pages were written back since (clean PTEs; see
    :class:`~perfsim.mm.vma.Vma`); ``dirty`` that a VMA without write permission was
    written before ``mprotect`` took it away (dirty PTEs); ``shmem_huge`` that a shmem VMA's
    superblock allows huge pages (its kernel-placed ranges are aligned); ``noreserve``
    that it was mapped ``MAP_NORESERVE`` and ``account`` its ``VM_ACCOUNT`` (None: what
    mmap gives it), flags the merge test compares."""

    start: int
    length: int
    backing: str = "anon"
    prot: str = "rw"
    populate: Population = Population()
    thp: bool = False
    folio_size: int = 0
    pgoff: int | None = None
    file: str | None = None
    uffd: str | None = None
    touched: bool = True
    hugepage_size: int = 0
    name: str = ""
    shared: bool = True
    written_back: bool = False
    dirty: bool = False
    shmem_huge: bool = False
    noreserve: bool = False
    account: bool | None = None


def vma_of(spec: VmaSpec, index: int, arch) -> Vma:
    """The :class:`~perfsim.mm.vma.Vma` a spec maps."""
    anon = spec.backing == "anon"
    family = spec.file or f"{spec.name or 'vma'}{index}"
    pgoff = spec.pgoff if spec.pgoff is not None else (spec.start >> arch.page_shift if anon else 0)
    return Vma(spec.start, spec.start + spec.length, backing=spec.backing, thp=spec.thp,
               uffd_wp=spec.uffd is not None, uffd_mode=spec.uffd or "",
               anon_vma=anon and spec.touched and spec.populate.kind != "none",
               pgoff=pgoff, file_id=None if anon else family, anon_id=family if anon else None,
               prot=spec.prot, hugepage_size=spec.hugepage_size, folio_size=spec.folio_size,
               name=spec.name, shared=spec.shared, written_back=spec.written_back,
               dirty=spec.dirty, shmem_huge=spec.shmem_huge, noreserve=spec.noreserve,
               account=spec.account)


def populate_vma(pt: PageTables, vma: Vma, pop: Population) -> PageTables:
    """Fault ``pop`` in over ``vma`` as the kernel would: hugetlb in whole huge pages; a
    THP VMA in PMD-size folios where :func:`thp_suitable` allows (a PMD slot the pattern
    touches at all is mapped whole), base pages elsewhere; large (mTHP) folios are mapped
    whole where suitable."""
    a = pt.arch
    if pop.kind == "none":
        return pt
    if vma.is_hugetlb:
        h = vma.hugepage_size or a.pmd_size
        lo, hi = -(-vma.start // h) * h, vma.end // h * h
        if hi <= lo:
            return pt
        return pt.populate(lo, hi, pud_leaf=True) if h == a.pud_size else pt.populate(lo, hi, thp=True)
    huge_ok = vma.thp and file_offset_congruent(vma, a.pmd_size, a.page_shift)
    if pop.kind == "full":
        return pt.populate(vma.start, vma.end, thp=huge_ok)
    pt = pop.apply(pt, vma.start, vma.end)
    if vma.thp:
        pt = _whole_folios(pt, vma, a.pmd_size, huge=True)
    if vma.folio_size and vma.folio_size > a.page_size:
        pt = _whole_folios(pt, vma, vma.folio_size, huge=False)
    return pt


def _whole_folios(pt: PageTables, vma: Vma, size: int, *, huge: bool) -> PageTables:
    """Where the pattern touched a page of a suitable ``size``-aligned range of ``vma``, the
    fault mapped the whole folio: a PMD leaf (``huge``) or all its PTEs (an mTHP folio)."""
    a = pt.arch
    bounds = large_folio_bounds(vma, size, a.page_shift)
    if bounds is None:
        return pt
    lo, hi = bounds
    ps, ptrs = a.page_shift, a.ptrs_per_pte
    full = (1 << ptrs) - 1
    fpages = size >> ps
    win = pt.window(lo, hi)
    cache: dict[tuple[int, int, int], int] = {}
    for slot, (kind, m) in list(win.pmd.items()):
        base = slot << a.pmd_shift
        if kind != PMD_TABLE or not m or base + a.pmd_size <= lo or base >= hi:
            continue
        if huge:
            if lo <= base and base + a.pmd_size <= hi:
                win.pmd[slot] = (PMD_LEAF, full)
            continue
        b_lo, b_hi = (max(lo, base) - base) >> ps, (min(hi, base + a.pmd_size) - base) >> ps
        key = (m, b_lo, b_hi)
        if key not in cache:
            out = m
            for b in range(b_lo, b_hi, fpages):
                block = range_mask(b, b + fpages)
                if m & block:
                    out |= block
            cache[key] = out
        win.pmd[slot] = (PMD_TABLE, cache[key])
    return pt.replace_window(win)


def build_space(target: Target, specs: list[VmaSpec], *, cpus: int = 1, lazy_cpus: int = 0,
                map_count_limit: int | None = None) -> AddressSpace:
    """The address space of ``specs`` (each one VMA), faulted in as each says."""
    arch = target.arch
    vmas, pops = [], []
    for i, spec in enumerate(specs):
        if spec.backing not in BACKINGS:
            raise PerfsimError(f"backing: unknown backing {spec.backing!r}; valid: {', '.join(BACKINGS)}")
        if spec.backing == "hugetlb" and not spec.hugepage_size:
            spec = replace(spec, hugepage_size=arch.pmd_size)
        try:
            vmas.append(vma_of(spec, i, arch))
        except ValueError as exc:
            raise PerfsimError(str(exc)) from None
        pops.append(spec.populate if spec.touched else Population("none"))
    pt = PageTables.empty(arch)
    for vma, pop in zip(vmas, pops):
        pt = populate_vma(pt, vma, pop)
    extra = {} if map_count_limit is None else {"map_count_limit": map_count_limit}
    try:
        return AddressSpace(tuple(vmas), pt, cpus=cpus, lazy_cpus=lazy_cpus, **extra)
    except ValueError as exc:
        raise PerfsimError(str(exc)) from None


def single_move_space(target: Target, *, src: int, length: int, backing: str = "anon",
                      thp: bool = False, populate: Population | None = None,
                      guard_below_src: bool = False, guard_below_dst: int | None = None,
                      cpus: int = 1, hugepage_size: int = 0, uffd_wp: bool = False,
                      folio_size: int = 0, guard_src_touched: bool = True) -> AddressSpace:
    """An mm with one source VMA ``[src, src + length)`` populated as asked.

    ``guard_below_src`` maps a one-page VMA just below the source (in its PMD), which stops
    realignment (E3); it is faulted in (read) unless ``guard_src_touched`` is false.
    ``guard_below_dst`` is the destination address to guard likewise with a mapped but
    never-touched page (like mremap_test's destination preamble), so it blocks realignment
    without creating a destination page table.
    """
    arch = target.arch
    page = arch.page_size
    pop = populate or Population()
    specs = [VmaSpec(src, length, backing=backing, populate=pop, thp=thp, folio_size=folio_size,
                     uffd="wp" if uffd_wp else None, hugepage_size=hugepage_size,
                     file="file0" if backing != "anon" else "src", name="src")]
    if guard_below_src:
        if src < page:
            raise PerfsimError("--guard-below-src: no room below the source")
        specs.append(VmaSpec(src - page, page, prot="r", file="guard-src", name="guard-src",
                             touched=guard_src_touched))
    if guard_below_dst is not None:
        specs.append(VmaSpec(guard_below_dst - page, page, prot="r", file="guard-dst",
                             name="guard-dst", touched=False))
    return build_space(target, specs, cpus=cpus)
