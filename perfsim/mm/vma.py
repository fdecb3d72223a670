"""Virtual memory areas, with just the attributes mremap()'s decisions depend on."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Literal

Backing = Literal["anon", "shmem", "file", "hugetlb"]
BACKINGS: tuple[str, ...] = ("anon", "shmem", "file", "hugetlb")


@dataclass(frozen=True, init=False)
class Vma:
    """One VMA ``[start, end)`` (bytes).

    ``backing`` decides which rmap locks a move takes (docs/kernel-rules.md R16a): a VMA with a
    file (``shmem``, ``file``, ``hugetlb``) takes ``i_mmap_rwsem`` of ``file_id``; one with an
    ``anon_vma`` takes the ``anon_vma`` root rwsem of ``anon_id``. ``pgoff`` is the page
    offset, which ``copy_vma``'s merge test compares (R18). ``uffd_wp`` means registered
    with a userfaultfd context without ``UFFD_FEATURE_EVENT_REMAP`` (in any mode; the mode,
    ``"missing"`` or ``"wp"``, is ``uffd_mode``): it disables PMD/PUD moves, and an armed VMA
    cannot be one of several moved by one call. ``folio_size`` is the size of the folios
    mapping it (large folios / mTHP), used for PTE batching (R16g). ``prot`` is only used to
    keep neighbours from merging (and a VMA without ``w`` in it holds only read-faulted, clean
    pages: perfsim's populations write every page of a writable VMA). ``shared`` is
    MAP_SHARED for a ``file`` or ``shmem`` backing (the default; MAP_SHARED|MAP_ANONYMOUS and
    memfd mappings are shmem) or MAP_PRIVATE (``False``: a written page of it is an anonymous
    copy-on-write page); anon and hugetlb VMAs ignore it. ``written_back``: the written pages
    of a shared ``file`` VMA were written back since (``msync``, or the kernel's flusher once
    they were dirty for ``dirty_expire_centisecs``): writeback cleans and write-protects their
    PTEs (``folio_clear_dirty_for_io`` → ``folio_mkclean``), so a zap of them forces no flush
    (docs/kernel-rules.md, the zap's forced flush); shmem and anonymous pages have no
    writeback. ``dirty``: the VMA has no write permission but its pages were written before
    ``mprotect`` took it away (``change_pte_range`` write-protects a PTE and keeps its dirty
    bit), so its PTEs are dirty as a writable VMA's are. ``shmem_huge``: a shmem VMA whose
    superblock allows huge pages (the internal mount of memfds and MAP_SHARED|MAP_ANONYMOUS
    follows ``/sys/kernel/mm/transparent_hugepage/shmem_enabled``; a tmpfs mount its
    ``huge=`` option), so ``shmem_get_unmapped_area`` aligns a range the kernel places for
    it (docs/kernel-rules.md R26); False, the default, is ``never``. ``nohugepage``: the VMA
    was advised MADV_NOHUGEPAGE (``VM_NOHUGEPAGE``: no THP on fault even where
    ``transparent_hugepage/enabled`` is ``always``); ``thp`` is ``VM_HUGEPAGE``, and the two
    are never both set. ``noreserve``: ``VM_NORESERVE`` (mmap's ``MAP_NORESERVE``, honoured
    under the default overcommit policy). ``account``: ``VM_ACCOUNT``, the mapping's commit
    is charged; None (the default) takes what ``mmap`` sets (``accountable_mapping``: a
    private writable mapping without ``noreserve``, not hugetlb), and ``mprotect`` changes
    it (:mod:`perfsim.planner.mprotect`). Both are flags the merge test compares.
    """

    start: int
    end: int
    backing: Backing = "anon"
    thp: bool = False
    uffd_wp: bool = False
    anon_vma: bool = True
    pgoff: int = 0
    file_id: str | None = None
    anon_id: str | None = None
    prot: str = "rw"
    hugepage_size: int = 0
    folio_size: int = 0
    stack: bool = False
    name: str = ""
    uffd_mode: str = ""
    shared: bool = True
    written_back: bool = False
    dirty: bool = False
    shmem_huge: bool = False
    nohugepage: bool = False
    noreserve: bool = False
    account: bool | None = None

    def __init__(self, start: int, end: int, backing: Backing = "anon", thp: bool = False,
                 uffd_wp: bool = False, anon_vma: bool = True, pgoff: int = 0,
                 file_id: str | None = None, anon_id: str | None = None, prot: str = "rw",
                 hugepage_size: int = 0, folio_size: int = 0, stack: bool = False,
                 name: str = "", uffd_mode: str = "", shared: bool = True,
                 written_back: bool = False, dirty: bool = False,
                 shmem_huge: bool = False, nohugepage: bool = False, noreserve: bool = False,
                 account: bool | None = None) -> None:
        # The dataclass's own __init__ (same parameters and defaults, held to the fields by
        # tests/test_t13_mm_space.py), writing every field into the instance __dict__ at
        # once rather than through the frozen class's generic object.__setattr__ per field.
        if end <= start:
            raise ValueError(f"VMA [{start:#x}, {end:#x}) is empty or inverted")
        self.__dict__.update(start=start, end=end, backing=backing, thp=thp, uffd_wp=uffd_wp,
                             anon_vma=anon_vma, pgoff=pgoff, file_id=file_id, anon_id=anon_id,
                             prot=prot, hugepage_size=hugepage_size, folio_size=folio_size,
                             stack=stack, name=name, uffd_mode=uffd_mode, shared=shared,
                             written_back=written_back, dirty=dirty, shmem_huge=shmem_huge,
                             nohugepage=nohugepage, noreserve=noreserve,
                             account=accountable(backing, prot, shared, noreserve)
                             if account is None else account)

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def userfaultfd_armed(self) -> bool:
        """``userfaultfd_armed``: registered with a userfaultfd in any mode."""
        return self.uffd_wp or bool(self.uffd_mode)

    @property
    def has_file(self) -> bool:
        return self.backing != "anon"

    @property
    def is_hugetlb(self) -> bool:
        return self.backing == "hugetlb"

    def rmap_locks(self) -> tuple[str, ...]:
        """The rwsems ``take_rmap_locks`` would take for this VMA, in acquisition order."""
        locks = []
        if self.has_file:
            locks.append(f"i_mmap:{self.file_id or self.name or hex(self.start)}")
        if self.anon_vma:
            locks.append(f"anon_vma:{self.anon_id or self.name or hex(self.start)}")
        return tuple(locks)

    def moved(self, new_start: int, new_end: int | None = None) -> Vma:
        """This VMA at ``[new_start, new_start + length)`` (``new_end`` gives the length),
        every other field kept: what ``dataclasses.replace`` gives."""
        length = (new_end - new_start) if new_end is not None else self.end - self.start
        return self.with_range(new_start, new_start + length)

    def with_range(self, start: int, end: int, pgoff: int | None = None) -> Vma:
        """This VMA over ``[start, end)``, at page offset ``pgoff`` (kept when None), every
        other field kept: what ``dataclasses.replace(self, start=..., end=..., pgoff=...)``
        gives (a split piece, a copy at a new address): this VMA's fields copied, the range
        (and page offset) then set."""
        if end <= start:
            raise ValueError(f"VMA [{start:#x}, {end:#x}) is empty or inverted")
        new = _new_vma(Vma)
        d = new.__dict__
        d.update(self.__dict__)
        d["start"] = start
        d["end"] = end
        if pgoff is not None:
            d["pgoff"] = pgoff
        return new

    def replaced(self, **changes) -> Vma:
        """``dataclasses.replace(self, **changes)``: the same value, built from the fields in
        order without ``replace``'s per-field bookkeeping (every field is an init field)."""
        values = list(_VALUES(self))
        for k, x in changes.items():
            values[_AT[k]] = x
        return Vma(*values)


def vm_shared(backing: str, shared: bool) -> bool:
    """``VM_SHARED``: a MAP_SHARED ``file`` or ``shmem`` mapping (an anonymous VMA is
    private: MAP_SHARED anonymous memory is shmem; hugetlb is not told apart here)."""
    return backing in ("file", "shmem") and shared


def accountable(backing: str, prot: str, shared: bool, noreserve: bool) -> bool:
    """``accountable_mapping`` (mm/vma.c): does ``mmap`` give the mapping ``VM_ACCOUNT``?
    Writable, without ``VM_SHARED`` or ``VM_NORESERVE``, and not hugetlb (it has its own
    reservations)."""
    return ("w" in prot and backing != "hugetlb" and not vm_shared(backing, shared)
            and not noreserve)


_new_vma = object.__new__
_VALUES = attrgetter(*(f.name for f in fields(Vma)))
_AT = {f.name: i for i, f in enumerate(fields(Vma))}
assert all(f.init for f in fields(Vma)), "Vma.replaced builds a Vma from all its fields"
