"""Virtual memory areas, with just the attributes mremap()'s decisions depend on."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

Backing = Literal["anon", "shmem", "file", "hugetlb"]
BACKINGS: tuple[str, ...] = ("anon", "shmem", "file", "hugetlb")


@dataclass(frozen=True, slots=True)
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
    copy-on-write page); anon and hugetlb VMAs ignore it.
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

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"VMA [{self.start:#x}, {self.end:#x}) is empty or inverted")

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
        every other field kept: what ``dataclasses.replace`` gives, by copying the slots."""
        length = (new_end - new_start) if new_end is not None else self.end - self.start
        if length <= 0:
            return replace(self, start=new_start, end=new_start + length)  # its ValueError
        new = object.__new__(Vma)
        for put, get in _SLOTS:
            put(new, get(self))
        _SET_START(new, new_start)
        _SET_END(new, new_start + length)
        return new


#: (set, get) of each field's slot, in field order, for :meth:`Vma.moved`.
_SLOTS = tuple((Vma.__dict__[f.name].__set__, Vma.__dict__[f.name].__get__)
               for f in fields(Vma))
_SET_START, _SET_END = Vma.__dict__["start"].__set__, Vma.__dict__["end"].__set__
