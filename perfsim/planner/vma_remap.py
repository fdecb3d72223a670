"""The state of one ``mremap()`` call, carried through the syscall layer.

:class:`VmaRemap` mirrors the kernel's ``struct vma_remap_struct`` (``mm/mremap.c``, 6.15+):
the user's arguments (``addr``, ``old_len``, ``new_len``, the flags, ``new_addr``), the VMA
the call works on and what ``do_mremap`` derives from them (``delta``, ``remap_type``).
The kernel mutates it as the call proceeds (``remap_move`` rewrites it for each VMA it
moves; a shrink sets ``old_len = new_len``); so does perfsim's syscall layer. Beside the
kernel's fields it carries what a planner needs to act (the address space, the call's
page tables, the target, the step log, the options) and what happened
(:class:`MovedRange` records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.frozen import direct_init
from perfsim.planner.options import PlanOptions
from perfsim.planner.tables import CallTables
from perfsim.profiles import Target

NO_RESIZE, SHRINK, EXPAND = "no_resize", "shrink", "expand"
"""``enum mremap_type`` (``MREMAP_INVALID`` is ``None``)."""


@direct_init
@dataclass(frozen=True)
class MovedRange:
    """One ``move_vma``: ``[src_start, src_end)`` went to ``dst_start``.

    ``progress_bytes`` is what ``move_page_tables`` returned; ``reverted`` is set when the
    move stopped short and ``copy_vma_and_data`` moved the prefix back (the source stays).
    ``realign`` says which of rules R4 (a)–(e) decided whether the start was realigned
    (it may be given as a :class:`~perfsim.planner.explain.RealignReason`, made into the
    text when first read).
    """

    src_start: int
    src_end: int
    dst_start: int
    progress_bytes: int
    realigned: bool
    realign: str
    need_rmap_locks: bool
    planner: str
    reverted: bool = False

    @property
    def length(self) -> int:
        return self.src_end - self.src_start

    def __getstate__(self) -> dict:
        """Pickled with ``realign`` as its text (never the maker of it)."""
        state = dict(self.__dict__)
        state["realign"] = self.realign
        return state

    def to_json(self) -> dict:
        return {"src_start": self.src_start, "src_end": self.src_end,
                "dst_start": self.dst_start, "dst_end": self.dst_start + self.length,
                "progress_bytes": self.progress_bytes, "realigned": self.realigned,
                "realign": self.realign, "need_rmap_locks": self.need_rmap_locks,
                "reverted": self.reverted}


class _TextOnRead:
    """The data descriptor of :attr:`MovedRange.realign`: the field may be given as a
    maker (an object with ``text()``, :class:`~perfsim.planner.explain.RealignReason`),
    replaced by the text it makes the first time the field is read (by anything: equality,
    ``repr``, hashing, ``to_json``, ``dataclasses.replace`` all read it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            raise AttributeError(self.name)
        d = obj.__dict__
        value = d[self.name]
        if not isinstance(value, str):
            value = d[self.name] = value.text()
        return value

    def __set__(self, obj, value) -> None:  # (the dataclass's own __init__ sets it so)
        obj.__dict__[self.name] = value


MovedRange.realign = _TextOnRead("realign")  # set after @dataclass: not a default


@direct_init
@dataclass
class VmaRemap:
    """``struct vma_remap_struct`` plus the planner's context (see the module docstring).

    ``addr``/``old_len``/``new_len``/``new_addr`` are page aligned by ``do_mremap`` before
    any check that reads them (6.17+; earlier kernels align after the flag checks, which
    give the same answers). ``new_addr`` is 0 when the caller passed none.
    """

    addr: int
    old_len: int
    new_len: int
    new_addr: int
    maymove: bool
    fixed: bool
    dontunmap: bool
    extra_flags: int
    target: Target
    space: AddressSpace
    log: S.StepLog
    options: PlanOptions
    fail_alloc_at: int | None = None
    vma: Vma | None = None
    delta: int = 0
    remap_type: str | None = None
    multi_vma: bool = False
    moved: list[MovedRange] = field(default_factory=list)
    tables: CallTables | None = None  # the call's page tables (``space.pt``: where they started)

    def __post_init__(self) -> None:
        # ``PAGE_SIZE`` and ``TASK_SIZE`` of the target, which the checks read several times
        # per call (not fields: they follow from ``target``, which a call never changes)
        arch = self.target.arch
        self.page_size: int = arch.page_size
        self.task_size: int = arch.user_va_top

    @property
    def map_count(self) -> int:
        """``mm->map_count``: the number of VMAs."""
        return len(self.space.vmas)

    @property
    def max_map_count(self) -> int:
        """``sysctl_max_map_count`` (``vm.max_map_count``)."""
        return self.space.map_count_limit
