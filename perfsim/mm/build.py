"""Build the address space of one move from a short description (used by the CLI,
workloads and tests): a source VMA, optional guard VMAs right below the source and the
destination, a population pattern, a backing, THP, and the CPUs of the mm."""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.errors import PerfsimError
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import BACKINGS, Vma
from perfsim.profiles import Target


@dataclass(frozen=True)
class Population:
    """How much of the source is faulted in: ``full``, ``none``, a ``fraction`` (seeded),
    or ``every`` k-th page (the pages whose address is a multiple of k pages). A PMD slot
    where no page is touched gets no page table, as on the real kernel."""

    kind: str = "full"
    fraction: float = 1.0
    every: int = 1
    seed: int = 0

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Population:
        t = str(text).strip().lower()
        if t in ("full", "all", "1", "1.0"):
            return cls("full")
        if t in ("none", "0", "0.0", "empty"):
            return cls("none")
        if t.startswith("every:"):
            try:
                k = int(t[6:])
            except ValueError:
                k = 0
            if k < 1:
                raise PerfsimError(f"--populate: 'every:K' needs an integer K >= 1, got {text!r}")
            return cls("every", every=k)
        try:
            f = float(t)
        except ValueError:
            raise PerfsimError(
                f"--populate: expected full, none, a fraction in (0, 1) or every:K; got {text!r}") from None
        if not 0.0 < f < 1.0:
            raise PerfsimError(f"--populate: a fraction must lie in (0, 1), got {text!r}")
        return cls("fraction", fraction=f, seed=seed)

    def apply(self, pt: PageTables, start: int, end: int, *, thp: bool = False,
              pud_leaf: bool = False) -> PageTables:
        if self.kind == "none":
            return pt
        return pt.populate(start, end, every=self.every, fraction=self.fraction, seed=self.seed,
                           thp=thp, pud_leaf=pud_leaf)


def single_move_space(target: Target, *, src: int, length: int, backing: str = "anon",
                      thp: bool = False, populate: Population | None = None,
                      guard_below_src: bool = False, guard_below_dst: int | None = None,
                      cpus: int = 1, hugepage_size: int = 0, uffd_wp: bool = False,
                      folio_size: int = 0) -> AddressSpace:
    """An mm with one source VMA ``[src, src + length)`` populated as asked.

    ``guard_below_src`` maps a one-page VMA just below the source (in its PMD), faulted in,
    which stops realignment (E3). ``guard_below_dst`` is the destination address to guard
    likewise with a mapped but never-touched page (like mremap_test's destination
    preamble), so it blocks realignment without creating a destination page table.
    """
    arch = target.arch
    if backing not in BACKINGS:
        raise PerfsimError(f"--backing: unknown backing {backing!r}; valid: {', '.join(BACKINGS)}")
    populate = populate or Population()
    if backing == "hugetlb":
        hugepage_size = hugepage_size or arch.pmd_size
    anon = backing == "anon"
    src_vma = Vma(src, src + length, backing=backing, thp=thp, uffd_wp=uffd_wp,
                  anon_vma=anon and populate.kind != "none",
                  pgoff=0 if not anon else src >> arch.page_shift,
                  file_id=None if anon else "file0", anon_id="src" if anon else None,
                  hugepage_size=hugepage_size, folio_size=folio_size, name="src")
    vmas = [src_vma]
    page = arch.page_size
    if guard_below_src:
        if src < page:
            raise PerfsimError("--guard-below-src: no room below the source")
        vmas.append(Vma(src - page, src, prot="r", anon_id="guard-src", name="guard-src"))
    if guard_below_dst is not None:
        vmas.append(Vma(guard_below_dst - page, guard_below_dst, prot="r", anon_id="guard-dst",
                        name="guard-dst"))
    pt = PageTables.empty(arch)
    if backing == "hugetlb":
        h = hugepage_size
        lo, hi = -(-src // h) * h, (src + length) // h * h
        if hi > lo and populate.kind != "none":
            if h == arch.pud_size:
                pt = pt.populate(lo, hi, pud_leaf=True)
            else:
                pt = pt.populate(lo, hi, thp=True)
    else:
        pt = populate.apply(pt, src, src + length, thp=thp)
    if guard_below_src:
        pt = pt.populate(src - page, src)
    try:
        return AddressSpace(tuple(vmas), pt, cpus=cpus)
    except ValueError as exc:
        raise PerfsimError(str(exc)) from None
