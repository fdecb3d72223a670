"""Compile a workload into the engine's input: explicit plans and actors (a ``SimSpec``).

::

    Workload ──► per-stream draws (seeded) ──► per-call layout + MoveRequest ──► plan_mremap
                                                                                   │ MovePlan
    processes ─► MmSpec   walkers ─► WalkerSpec   idle threads ─► UserSpec   ──► SimSpec

**Seeding.** One ``numpy.random.SeedSequence`` per run. Every random quantity of every stream
has its own child, addressed by a fixed spawn key ``(STREAMS, stream index, quantity)``, and is
drawn for *every* call whether or not the call uses it. So two runs that differ only in one
field (the destination alignment class, a kernel knob, a cost) see exactly the same sizes,
populations and arrivals: common random numbers for paired comparisons. The engine's own
streams (walker gaps, cost jitter) get the child ``(ENGINE,)``.

**Synthetic streams** lay out each call in a fresh address space (see :func:`layout_call`):
a source VMA placed by its alignment class, optional guard VMAs, a destination placed by
its class. Calls are independent, so planning happens lazily, one call at a time, while the
engine consumes them: memory stays flat however long the run.

**Call and trace streams** replay explicit calls against the process's *evolving* address
space: each successful mremap's resulting space is the next call's input; mmap and munmap
entries update the space without being simulated as calls (the engine models mremap only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from perfsim.cost.profile import CostProfile
from perfsim.engine.spec import CallerSpec, ColdCall, MmSpec, SimSpec, UserSpec, WalkerSpec
from perfsim.errors import PerfsimError
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MovePlan, MoveRequest, plan_mremap
from perfsim.planner.checks import page_align
from perfsim.planner.reference import geometry_of
from perfsim.profiles import Target
from perfsim.workload.schema import (
    CallStream,
    Closed,
    Periodic,
    Poisson,
    Process,
    SyntheticStream,
    TraceStream,
    Workload,
)
from perfsim.workload.written import WrittenBefore

SRC_BASE = 0x7F0000000000
"""Synthetic sources are laid out from here (512 GiB aligned)."""
DST_BASE = 0x7F4000000000
"""Synthetic destinations are laid out from here (256 GiB above SRC_BASE)."""
CHUNK = 256
"""Draws are made in chunks of this many calls, so the values of call *k* do not depend on
how many calls the run ends up making."""

# Spawn-key roots
STREAMS, ENGINE = 1, 2
# Quantities of a synthetic stream (one child SeedSequence each). Never renumber.
Q_OP, Q_SIZE, Q_GROWTH, Q_SRC_OFF, Q_DST_OFF, Q_GUARD_SRC, Q_GUARD_DST, Q_POPULATE, \
    Q_POP_SEED, Q_BACKING, Q_THP, Q_FIXED, Q_DONTUNMAP, Q_IN_PLACE, Q_SHIFT, Q_ARRIVAL, \
    Q_SRC_CLASS, Q_DST_CLASS = range(18)


def child(root: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The SeedSequence at ``root.spawn_key + key`` (stateless, unlike ``spawn``)."""
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + tuple(key))


def rng_of(root: np.random.SeedSequence, *key: int) -> np.random.Generator:
    return np.random.default_rng(child(root, *key))


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class CallDraw:
    """Everything drawn for one synthetic call."""

    op: str
    size: int
    growth: float
    src_class: str
    dst_class: str
    src_k: int
    dst_k: int
    guard_src: bool
    guard_dst: bool
    populate: float
    pop_seed: int
    backing: str
    thp: bool
    fixed: bool
    dontunmap: bool
    in_place: bool
    shift: int


_DRAW_FIELDS = tuple(f.name for f in dataclasses.fields(CallDraw))


#: How each :class:`CallDraw` field is converted from its column's values, in field order.
_DRAW_TYPES = tuple({"str": str, "int": int, "float": float, "bool": bool}[f.type]
                    for f in dataclasses.fields(CallDraw))
#: The numpy dtype kinds whose ``tolist`` already gives a field's type (nothing to convert).
_AS_LISTED = {str: "U", int: "iu", float: "f", bool: "b"}


def _field_values(columns) -> list[list]:
    """Each column (one per :class:`CallDraw` field, in field order) as a list of values of
    its field's type: the column's ``tolist`` (Python values, not numpy scalars), each value
    converted (``str``, ``int``, ``float``, ``bool``) unless the column's dtype already
    lists values of that type."""
    out = []
    for c, conv in zip(columns, _DRAW_TYPES, strict=True):
        a = np.asarray(c)
        v = a.tolist()
        out.append(v if a.dtype.kind in _AS_LISTED[conv] else list(map(conv, v)))
    return out


def iter_draws(columns) -> Iterator[CallDraw]:
    """One :class:`CallDraw` per row of ``columns`` (one array per field, in field order),
    made as it is asked for: each field the numpy value converted as ``CallDraw``'s type
    says (:func:`_field_values`)."""
    new, fields = object.__new__, _DRAW_FIELDS
    for values in zip(*_field_values(columns), strict=True):
        d = new(CallDraw)
        d.__dict__.update(zip(fields, values))
        yield d


def draws_of(columns) -> list[CallDraw]:
    """Every :class:`CallDraw` of ``columns`` (:func:`iter_draws`), as a list."""
    return list(iter_draws(columns))


def _offset(cls: str, k: int, page: int, pmd: int, pud: int) -> int:
    """Offset from a 512-GiB-aligned base for an alignment class; ``k`` is a uniform draw in
    [0, 2**18) (pages within 1 GiB). ``page``/``pmd``/``pud``: the arch's sizes."""
    if cls == "pud":
        return 0
    if cls == "pmd":
        return pmd * (1 + k % (pud // pmd - 1))  # PMD- but not PUD-aligned
    if cls == "page":
        per_pmd = pmd // page
        return pmd + page * (1 + k % (per_pmd - 1))  # inside a PMD, never at its start
    return page * (k % (pud // page))  # random page in the first GiB


def _sizes_of(arch) -> tuple[int, int, int]:
    """``(page_size, pmd_size, pud_size)`` of ``arch`` (properties of an immutable profile),
    read from the planner's per-profile geometry."""
    g = geometry_of(arch)
    return 1 << g[0], g[6], g[7]


def layout_call(d: CallDraw, stream: SyntheticStream, target: Target, cpus: int,
                empty: PageTables | None = None) -> tuple[AddressSpace, MoveRequest]:
    """The address space and request of one synthetic call (pure). ``empty``: the empty
    page tables of ``target``'s arch to lay it out on (``PageTables.empty``, made once for
    a stream's calls: a state is an immutable value; made here when not given)."""
    a = target.arch
    if empty is None:
        empty = PageTables.empty(a)
    page, pmd_size, pud_size = _sizes_of(a)
    ident = stream.file or stream.name
    size = -(-d.size // page) * page
    backing = d.backing
    hp = 0
    if backing == "hugetlb":
        hp = stream.hugepage_size or pmd_size
        size = -(-size // hp) * hp
    if d.op == "stack":
        return _layout_stack(d, target, size, ident, cpus, empty)
    src_off = _offset(d.src_class, d.src_k, page, pmd_size, pud_size)
    dst_cls = d.src_class if d.dst_class == "same" else d.dst_class
    dst_off = (src_off if d.dst_class == "same"
               else _offset(dst_cls, d.dst_k, page, pmd_size, pud_size))
    if hp:
        src_off, dst_off = -(-src_off // hp) * hp, -(-dst_off // hp) * hp
    src, dst = SRC_BASE + src_off, DST_BASE + dst_off
    anon = backing == "anon"
    vma = Vma(src, src + size, backing=backing, thp=d.thp and backing != "hugetlb",
              anon_vma=anon and d.populate > 0,
              pgoff=(src // page) if anon else 0,
              file_id=None if anon else ident, anon_id=ident if anon else None,
              hugepage_size=hp, folio_size=stream.folio_size, name=ident)
    vmas = [vma]
    ranges = []  # populated in this order
    if d.populate > 0:
        if backing == "hugetlb":
            ranges.append((src, src + size,
                           {"pud_leaf": hp == pud_size, "thp": hp != pud_size}))
        else:
            ranges.append((src, src + size, {"fraction": min(d.populate, 1.0),
                                             "seed": d.pop_seed, "thp": d.thp}))
    if d.guard_src and src_off % pmd_size:
        vmas.append(Vma(src - page, src, prot="r", anon_id="guard-src", name="guard-src"))
        ranges.append((src - page, src, {}))
    pt = empty.populate_each(ranges)
    if d.guard_dst:
        vmas.append(Vma(dst - page, dst, prot="r", anon_id="guard-dst", name="guard-dst"))
    new_len = size
    if d.op == "grow":
        new_len = max(-(-int(size * d.growth) // page) * page, size + page)
        if hp:
            new_len = size  # hugetlb mappings cannot grow: a plain move
        if not d.fixed and not d.in_place:
            vmas.append(Vma(src + size, src + size + page, prot="r", anon_id="blocker",
                            name="blocker"))
    try:
        space = AddressSpace(tuple(vmas), pt, cpus=cpus)
    except ValueError as exc:  # pragma: no cover - the layout above never overlaps
        raise PerfsimError(f"stream {stream.name!r}: impossible layout: {exc}") from None
    # (MoveRequest by position: old_addr, old_len, new_len, new_addr, maymove, fixed,
    # dontunmap, for_stack, fail_alloc_at, extra_flags)
    if d.op == "grow" and not d.fixed and not hp:
        req = MoveRequest(src, size, new_len, None, True, False, False, False, None, 0)
    else:
        req = MoveRequest(src, size, new_len, dst, True, True, d.dontunmap and new_len == size,
                          False, None, 0)
    return space, req


def _layout_stack(d: CallDraw, target: Target, size: int, ident: str, cpus: int,
                  empty: PageTables):
    """exec's stack: a VMA ending at STACK_TOP_MAX, relocated down by ``shift`` (E7)."""
    a = target.arch
    page = _sizes_of(a)[0]
    top = a.user_va_top // page * page
    start = top - size
    shift = max(-(-d.shift // page) * page, page)
    vma = Vma(start, top, anon_vma=True, anon_id=ident, stack=True, pgoff=start // page,
              name=ident)
    pt = empty.populate(start, top, fraction=min(max(d.populate, 0.0), 1.0) or 1.0,
                        seed=d.pop_seed)
    space = AddressSpace((vma,), pt, cpus=cpus)
    # (MoveRequest by position: old_addr, old_len, new_len, new_addr, maymove, fixed,
    # dontunmap, for_stack, fail_alloc_at, extra_flags)
    return space, MoveRequest(start, size, None, start - shift, True, False, False, True, None, 0)


class LazyRng:
    """The generator ``rng_of(root, *key)``, made when it is first used (an attribute of it
    is read): a stream's quantity drawn from a fixed distribution never uses its
    generator, and making one (a ``SeedSequence`` and a ``PCG64``) costs ~20 us. Each
    quantity has its own generator, so when one is made does not change what it draws."""

    __slots__ = ("_key", "_rng", "_root")

    def __init__(self, root: np.random.SeedSequence, *key: int):
        self._root, self._key, self._rng = root, key, None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = rng_of(self._root, *self._key)
        return self._rng

    def __getattr__(self, name: str):
        return getattr(self.rng, name)


def bernoulli(rng, p: float, n: int) -> np.ndarray:
    """``rng.random(n) < p``: ``n`` trials of probability ``p`` (in [0, 1]). A certain
    outcome (``p`` 0 or 1) is every trial's whatever ``random`` draws (its draws are in
    [0, 1)), so its generator is not asked (nor made, for a :class:`LazyRng`)."""
    if p <= 0.0:
        return np.zeros(n, bool)
    if p >= 1.0:
        return np.ones(n, bool)
    return rng.random(n) < p


class SyntheticDraws:
    """Per-call draws of one synthetic stream, made chunk by chunk (see :data:`CHUNK`)."""

    def __init__(self, stream: SyntheticStream, root: np.random.SeedSequence, index: int):
        self.s = stream
        self.rngs = {q: LazyRng(root, STREAMS, index, q) for q in range(18)}
        self.buf: list[CallDraw] = []

    def _chunk(self) -> list[CallDraw]:
        return draws_of(self._columns())

    def _columns(self) -> tuple:
        """The next chunk's draws, one array per :class:`CallDraw` field, in field order."""
        s, r, n = self.s, self.rngs, CHUNK
        ops = s.op.sample(r[Q_OP], n)
        sizes = np.asarray(s.size.sample(r[Q_SIZE], n))
        growth = np.asarray(s.growth.sample(r[Q_GROWTH], n), float)
        src_k = r[Q_SRC_OFF].integers(0, 1 << 18, n)
        dst_k = r[Q_DST_OFF].integers(0, 1 << 18, n)
        g_src = bernoulli(r[Q_GUARD_SRC], s.guard_below_src, n)
        g_dst = bernoulli(r[Q_GUARD_DST], s.guard_below_dst, n)
        pop = np.asarray(s.populate.sample(r[Q_POPULATE], n), float)
        pop_seed = r[Q_POP_SEED].integers(0, 1 << 62, n)
        backing = s.backing.sample(r[Q_BACKING], n)
        thp = bernoulli(r[Q_THP], s.thp, n)
        fixed = bernoulli(r[Q_FIXED], s.fixed, n)
        dontunmap = bernoulli(r[Q_DONTUNMAP], s.dontunmap, n)
        in_place = bernoulli(r[Q_IN_PLACE], s.grow_in_place, n)
        shift = np.asarray(s.shift.sample(r[Q_SHIFT], n))
        src_c = s.src_align.sample(r[Q_SRC_CLASS], n)
        dst_c = s.dst_align.sample(r[Q_DST_CLASS], n)
        return (ops, sizes, growth, src_c, dst_c, src_k, dst_k, g_src, g_dst, pop, pop_seed,
                backing, thp, fixed, dontunmap, in_place, shift)

    def __iter__(self) -> Iterator[CallDraw]:
        """The draws of call 0, 1, ...: a chunk's columns are drawn when its first call is
        asked for, and each call's :class:`CallDraw` is made when it is asked for (a run
        of fewer calls than a chunk makes only those)."""
        while True:
            yield from iter_draws(self._columns())


def synthetic_plans(stream: SyntheticStream, root, index: int, target: Target, cpus: int,
                    count: int | None) -> Iterator[MovePlan]:
    """Lazily plan the calls of a synthetic stream (``count=None``: without end)."""
    empty = PageTables.empty(target.arch)  # every call is laid out on it
    for k, d in enumerate(SyntheticDraws(stream, root, index)):
        if count is not None and k >= count:
            return
        space, req = layout_call(d, stream, target, cpus, empty)
        yield plan_mremap(space, req, target)


def synthetic_requests(stream: SyntheticStream, root, index: int, target: Target, cpus: int,
                       count: int) -> list[tuple[AddressSpace, MoveRequest]]:
    """The first ``count`` (space, request) pairs of a stream: for inspection and tests."""
    out = []
    empty = PageTables.empty(target.arch)
    for k, d in enumerate(SyntheticDraws(stream, root, index)):
        if k >= count:
            break
        out.append(layout_call(d, stream, target, cpus, empty))
    return out


# --------------------------------------------------------------------------- stateful
def initial_space(p: Process, target: Target, cpus: int, seed: int = 0) -> AddressSpace:
    """The explicit layout of a process, populated as its VMAs say."""
    a = target.arch
    vmas, pt = [], PageTables.empty(a)
    for v in p.vmas:
        anon = v.backing == "anon"
        ident = v.file or v.name
        hp = v.hugepage_size or (a.pmd_size if v.backing == "hugetlb" else 0)
        vmas.append(Vma(v.start, v.end, backing=v.backing, thp=v.thp, uffd_wp=v.uffd_wp,
                        anon_vma=anon and v.populate > 0, pgoff=(v.start // a.page_size) if anon else 0,
                        file_id=None if anon else ident, anon_id=ident if anon else None,
                        hugepage_size=hp, folio_size=v.folio_size, name=v.name))
        if v.populate > 0:
            if v.backing == "hugetlb":
                pt = pt.populate(v.start, v.end, pud_leaf=(hp == a.pud_size),
                                 thp=(hp != a.pud_size))
            else:
                pt = pt.populate(v.start, v.end, fraction=v.populate, seed=seed, thp=v.thp)
    return AddressSpace(tuple(vmas), pt, cpus=cpus)


@dataclass(frozen=True)
class Entry:
    """One entry of a call stream or trace (see :class:`~perfsim.workload.schema.Call`)."""

    op: str
    old_addr: int
    old_len: int
    new_len: int | None = None
    new_addr: int | None = None
    fixed: bool = False
    maymove: bool = True
    dontunmap: bool = False
    for_stack: bool = False
    backing: str = "anon"
    populate: float | None = 1.0
    """Fraction of the pages the entry adds that are written (mmap: the mapping; a growing
    mremap of a trace: the added part). ``None`` only on a trace row without its own
    ``populate`` column, until :func:`trace_entries` gives it the stream's."""
    at_ns: int | None = None
    shared: bool = True
    """mmap of a ``file`` or ``shmem`` backing: MAP_SHARED (``False``: MAP_PRIVATE)."""
    prot: str = "rw"
    """mmap: the mapping's protection, as :attr:`perfsim.mm.vma.Vma.prot` letters."""
    file: str | None = None
    """mmap of a file: which file (a trace names it by its path), so that two mappings of
    one file share its ``i_mmap`` tree and a ``truncate`` entry finds them; ``None``: a
    file of the mapping's own. ``truncate``: the file truncated (or extended) to
    ``new_len`` bytes."""
    offset: int = 0
    """mmap of a file: the mapping's offset in it, bytes (its VMA's ``pgoff``)."""
    advice: str = ""
    """madvise: the advice, an ``MADV_*`` name."""
    noreserve: bool = False
    """mmap: ``MAP_NORESERVE`` (:attr:`perfsim.mm.vma.Vma.noreserve`)."""


class StatefulPlanner:
    """Plans a sequence of entries in order against an evolving address space; mmap and
    munmap update the space. Hands out only mremap plans. ``seed`` seeds populations.

    ``populate_growth`` (trace replay): the part an mremap adds to a mapping is faulted in
    after the call with the growing entry's ``populate`` fraction, as an mmapped region is
    when it is mapped. A recorded program grows a mapping to write it (glibc ``realloc``,
    a growing bytearray or string), so by its next mremap the kernel finds the added part
    written; without this every call after an in-place growth would move page tables
    that are empty in the replay but full in the kernel (docs/real-programs.md).

    The pages a program writes "by its next call" (a mapping it maps, the part a growth
    adds, what an ``mprotect`` opens, a ``touch``) are faulted in when the next entry comes
    that is not a huge-page advice: so a block glibc advises MADV_HUGEPAGE right after
    mapping or growing it is written after the advice, and its anonymous pages in PMD
    ranges the VMA covers whole are THPs (:func:`fault_in`), as the kernel's faults make
    them."""

    def __init__(self, space: AddressSpace, entries: list[Entry], target: Target, seed: int,
                 repeat: int = 1, *, populate_growth: bool = False,
                 thp_enabled: str = "madvise"):
        self.space, self.entries, self.target = space, entries, target
        #: the recorded system's ``transparent_hugepage/enabled`` (what the program's
        #: anonymous faults map: :func:`perfsim.planner.madvise.thp_vma_allowable`)
        self.thp_enabled = thp_enabled
        self.seed, self.repeat = seed, repeat
        self.populate_growth = populate_growth
        self.skipped = 0
        self.before: AddressSpace | None = None  #: the space the last mremap was planned on
        #: entries the replay does not model, by what they are (``madvise MADV_MERGEABLE``,
        #: ``madvise MADV_DONTNEED of hugetlb``): counted, the space left as it was
        self.not_replayed: dict[str, int] = {}
        #: writes not faulted in yet: ``(lo, hi, fraction, seed)``
        self._pending: list[tuple[int, int, float, int]] = []
        #: what the program wrote just before the mremap last handed out, as far as the
        #: entries tell (:class:`perfsim.workload.written.WrittenBefore`)
        self.written_before = 0

    def __iter__(self) -> Iterator[MovePlan]:
        from perfsim.planner import steps as S
        from perfsim.planner.madvise import (
            HUGEPAGE_ADVICE,
            NEUTRAL_ADVICE,
            ZAPPING_ADVICE,
            madvise_dontneed,
            madvise_hugepage,
        )
        from perfsim.planner.syscall import do_munmap, mmap_region
        from perfsim.planner.truncate import truncate_pagecache

        a = self.target.arch
        n_map = n_grow = 0
        written = WrittenBefore()
        for _ in range(self.repeat):
            for e in self.entries:
                if e.op != "mremap":
                    written.see(e)
                if e.op == "madvise" and e.advice in HUGEPAGE_ADVICE:
                    # (before the writes the program makes after it: those stay pending)
                    self.space = madvise_hugepage(self.space, e.old_addr, e.old_len, e.advice)
                    continue
                self._fault_pending()
                if e.op == "mmap":
                    length = -(-e.old_len // a.page_size) * a.page_size
                    if self.space.intersecting(e.old_addr, e.old_addr + length):
                        self.space = do_munmap(self.target, self.space, e.old_addr, length,
                                               S.StepLog(), S.UNMAP_DST)
                    n_map += 1
                    anon = e.backing == "anon"
                    ident = f"map{n_map}"
                    # a written page of a MAP_PRIVATE file mapping is an anonymous copy
                    cow = not anon and not e.shared and "w" in e.prot
                    v = Vma(e.old_addr, e.old_addr + length, backing=e.backing,
                            anon_vma=False,
                            pgoff=(e.old_addr // a.page_size) if anon
                            else e.offset // a.page_size,
                            file_id=None if anon else (e.file or ident),
                            anon_id=ident if anon or cow else None,
                            prot=e.prot, shared=e.shared, name=ident,
                            noreserve=e.noreserve)
                    try:
                        # (merged into a neighbour it continues, as the kernel's mmap does)
                        self.space = mmap_region(self.space, v)
                    except ValueError:
                        self.skipped += 1
                        continue
                    if e.populate > 0 and e.prot:  # (nothing can fault in a PROT_NONE one)
                        self._pending.append((v.start, v.end, e.populate, self.seed + n_map))
                    continue
                if e.op == "munmap":
                    length = -(-e.old_len // a.page_size) * a.page_size
                    self.space = do_munmap(self.target, self.space, e.old_addr, length,
                                           S.StepLog(), S.UNMAP_DST)
                    continue
                if e.op == "truncate":
                    self.space = truncate_pagecache(self.target, self.space, e.file, e.new_len)
                    continue
                if e.op == "mprotect":
                    n_grow += 1
                    self.space, opened = _mprotect_entry(self.space, e,
                                                         tuple(self.target.kernel.version))
                    self._pending += [(lo, hi, e.populate, self.seed + (1 << 20) + n_grow)
                                      for lo, hi in opened if e.populate]
                    continue
                if e.op == "touch":
                    n_grow += 1
                    self._pending += _touched(self.space, e, self.seed + (1 << 20) + n_grow)
                    continue
                if e.op == "madvise":
                    if e.advice in ZAPPING_ADVICE:
                        got = madvise_dontneed(self.target, self.space, e.old_addr, e.old_len)
                        self.space = got.space
                        if got.skipped_hugetlb:
                            self._not_replayed(f"madvise {e.advice} of hugetlb")
                    elif e.advice not in NEUTRAL_ADVICE:
                        self._not_replayed(f"madvise {e.advice}")
                    continue
                if e.op != "mremap":
                    raise ValueError(f"StatefulPlanner: unknown entry op {e.op!r}")
                req = MoveRequest(e.old_addr, e.old_len, new_len=e.new_len, new_addr=e.new_addr,
                                  fixed=e.fixed, maymove=e.maymove, dontunmap=e.dontunmap,
                                  for_stack=e.for_stack)
                self.before = self.space
                plan = plan_mremap(self.space, req, self.target)
                if plan.errno is None:
                    self.space = plan.after
                    if self.populate_growth and e.new_len is not None \
                            and e.new_len > e.old_len and e.populate > 0:
                        n_grow += 1
                        self._pending += _added(plan.result_addr, e,
                                                self.seed + (1 << 20) + n_grow, a)
                self.written_before = written.call(e, plan)
                yield plan
        self._fault_pending()

    def _fault_pending(self) -> None:
        """Fault in the writes made since the last entry (:func:`fault_in`), in order."""
        for lo, hi, fraction, seed in self._pending:
            self.space = fault_in(self.space, lo, hi, fraction, seed, self.thp_enabled)
        self._pending.clear()

    def _not_replayed(self, what: str) -> None:
        self.not_replayed[what] = self.not_replayed.get(what, 0) + 1


def _cold_calls(plans: Iterator[MovePlan], planner: StatefulPlanner,
                profile: CostProfile) -> Iterator:
    """A trace stream's plans, each a :class:`~perfsim.engine.spec.ColdCall` where the
    profile's ``[cold_cache]`` charges it for what the program wrote just before it
    (``planner.written_before``, read as each plan comes: the planner has just made it)."""
    for plan in plans:
        ns = profile.cold_cache_ns(planner.written_before)
        yield ColdCall(plan, ns) if ns else plan


def fault_in(space: AddressSpace, lo: int, hi: int, fraction: float, seed: int,
             thp_enabled: str = "madvise") -> AddressSpace:
    """``space`` with the ``fraction`` of the pages of ``[lo, hi)`` the program wrote
    faulted in, VMA by VMA (a part no VMA maps, or a ``PROT_NONE`` one, is left alone).
    Where the VMA may have THPs (:func:`perfsim.planner.madvise.thp_vma_allowable` with the
    system's ``thp_enabled``), a write into a PMD range that lies inside the VMA and has no
    entry yet maps the whole range as one THP (``do_huge_pmd_anonymous_page``, the VMA
    bounds of ``thp_vma_suitable_order``), however little of it was written; the rest are
    base pages. Without THPs a range inside one VMA is one
    :meth:`~perfsim.mm.pagetable.PageTables.populate` call with ``seed`` (the same pages a
    replay drew before huge-page advice was read).

    A written VMA of private memory (anonymous, or a MAP_PRIVATE mapping of a file, shmem
    or hugetlb it may write: its written pages are anonymous copies) without an ``anon_vma`` gets one, a
    neighbour's where the kernel would share it
    (:func:`perfsim.planner.syscall.anon_vma_prepare`), in address order; ``fraction``
    above 0 counts as written, however few pages that draws."""
    from perfsim.planner.madvise import thp_vma_allowable
    from perfsim.planner.syscall import anon_vma_prepare

    pt = space.pt
    first_writes = []
    for v in space.intersecting(lo, hi):
        if not v.prot:
            continue
        if fraction > 0 and not v.anon_vma and "w" in v.prot and (
                v.backing == "anon" or not v.shared):
            first_writes.append(v.start)
        a, b = max(lo, v.start), min(hi, v.end)
        if not thp_vma_allowable(v, thp_enabled):
            pt = pt.populate(a, b, fraction=fraction, seed=seed)
            continue
        for r_lo, r_hi, huge in _thp_runs(pt, v, a, b):
            pt = pt.populate(r_lo, r_hi, fraction=fraction, seed=seed, thp=huge)
    if pt is not space.pt:
        space = space.with_pt(pt)
    for at in first_writes:
        space = anon_vma_prepare(space, space.find_vma(at))
    return space


def _thp_runs(pt, v: Vma, a: int, b: int) -> list[tuple[int, int, bool]]:
    """``[a, b)`` (inside ``v``) as runs of whole PMD ranges a fault maps as THPs (inside
    the VMA, no entry yet: ``True``) and the parts around them, base pages (``False``)."""
    ms = pt.arch.pmd_shift
    size = 1 << ms
    pmd = pt.window(a, b).pmd
    runs: list[list] = []
    for slot in range(a >> ms, ((b - 1) >> ms) + 1):
        base = slot << ms
        huge = v.start <= base and base + size <= v.end and slot not in pmd
        s_lo, s_hi = (base, base + size) if huge else (max(a, base), min(b, base + size))
        if runs and runs[-1][2] == huge and runs[-1][1] == s_lo:
            runs[-1][1] = s_hi
        else:
            runs.append([s_lo, s_hi, huge])
    return [tuple(r) for r in runs]


def _mprotect_entry(space: AddressSpace, e: Entry, kernel_version: tuple[int, int]
                    ) -> tuple[AddressSpace, list]:
    """``space`` after the mprotect entry ``e`` (:func:`perfsim.planner.mprotect.
    do_mprotect`), and the parts it opened from ``PROT_NONE`` (a program opens reserved
    memory to use it: they are written with the entry's ``populate``)."""
    from perfsim.planner.mprotect import do_mprotect

    end = e.old_addr + e.old_len
    opened = [(max(v.start, e.old_addr), min(v.end, end))
              for v in space.intersecting(e.old_addr, end) if not v.prot] if e.prot else []
    space = do_mprotect(space, e.old_addr, e.old_len, e.prot, kernel_version).space
    # (not past a hole the call stopped at, ENOMEM: those VMAs are still PROT_NONE)
    return space, [(lo, hi) for lo, hi in opened
                   if (v := space.find_vma(lo)) is not None and v.prot]


def _touched(space: AddressSpace, e: Entry, seed: int) -> list:
    """The writes of a trace's ``touch`` row: ``[old_addr, old_addr + old_len)``, the
    ``populate`` fraction of its pages (default all), in the VMAs with write permission
    (a store elsewhere would have killed the program)."""
    end = e.old_addr + page_align(e.old_len, space.arch.page_size)
    fraction = 1.0 if e.populate is None else e.populate
    if fraction <= 0:
        return []
    return [(max(v.start, e.old_addr), min(v.end, end), fraction, seed)
            for v in space.intersecting(e.old_addr, end) if "w" in v.prot]


def _added(addr: int, e: Entry, seed: int, arch) -> list:
    """The write of the part a growing mremap added (``[addr + old_len, addr + new_len)``,
    page-rounded) with the entry's ``populate`` fraction."""
    lo = addr + page_align(e.old_len, arch.page_size)
    hi = addr + page_align(e.new_len, arch.page_size)
    return [(lo, hi, e.populate, seed)] if hi > lo else []


def call_entries(s: CallStream, p: Process) -> list[Entry]:
    vmas = {v.name: v for v in p.vmas}
    out = []
    for c in s.calls:
        addr = c.old_addr if c.vma is None else vmas[c.vma].start + c.offset
        out.append(Entry(c.op, addr, c.old_len, c.new_len, c.new_addr, c.fixed, c.maymove,
                         c.dontunmap, c.for_stack, c.backing, c.populate, c.at_ns))
    return out


# --------------------------------------------------------------------------- compile
def thread_cpus(p: Process, machine_cpus: int) -> list[int]:
    """CPU of each thread of ``p``."""
    if p.cpus:
        return [p.cpus[i % len(p.cpus)] for i in range(p.threads)]
    return [i % machine_cpus for i in range(p.threads)]


def _has_field(cls, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


@dataclass
class Compiled:
    """A compiled workload: the engine's :class:`SimSpec` plus notes on approximations."""

    spec: SimSpec
    notes: list[str]


class _Shared:
    """Lets several single-call callers draw their plan from one ordered planner."""

    def __init__(self, it: Iterator[MovePlan]):
        self.it = iter(it)

    def one(self) -> _One:
        return _One(self)


class _One:
    """One single-call caller's plans: iterating it takes the next plan of the planner it
    shares (:class:`_Shared`), when the caller asks for it; nothing when the planner has
    none left. (One class for every caller: an open-loop stream has one per arrival.)"""

    __slots__ = ("shared",)

    def __init__(self, shared: _Shared):
        self.shared = shared

    def __iter__(self) -> Iterator[MovePlan]:
        try:
            yield next(self.shared.it)
        except StopIteration:
            return


def compile_workload(w: Workload, target: Target, profile: CostProfile,
                     root: np.random.SeedSequence | int, *,
                     wrap_plans: Callable[[Iterator[MovePlan]], Iterator[MovePlan]] | None = None
                     ) -> Compiled:
    """Turn a validated workload into a :class:`SimSpec` (plans are produced lazily).
    ``wrap_plans``: applied to each stream's plan iterator before its callers are made
    (an open-loop stream's single-call callers then share the wrapped one), so that every
    plan the engine takes passes through it once, when taken (``run_workload``'s tally)."""
    if not isinstance(root, np.random.SeedSequence):
        root = np.random.SeedSequence(int(root))
    notes: list[str] = []
    procs = {p.name: p for p in w.processes}
    placement = {p.name: thread_cpus(p, w.cpus) for p in w.processes}
    idents: dict[str, set[tuple[str, str]]] = {p.name: set() for p in w.processes}
    for s in w.streams:
        if isinstance(s, SyntheticStream):
            for b in s.backing.support():
                idents[s.process].add((b, s.file or s.name))
    mms = []
    spaces = {}
    for i, p in enumerate(w.processes):
        cpus = tuple(sorted(set(placement[p.name])))
        space = None
        if p.vmas or idents[p.name]:
            space = initial_space(p, target, len(cpus), seed=i)
            # Synthetic regions are laid out per call; name their rmap identities here so the
            # engine sees rwsems that two processes share (shared files).
            extra = []
            top = 0x100000000
            for j, (b, ident) in enumerate(sorted(idents[p.name])):
                start = top + j * (4 << 20)
                if space.intersecting(start, start + 4096):
                    continue
                hp = target.arch.pmd_size if b == "hugetlb" else 0
                extra.append(Vma(start, start + max(4096, hp), backing=b,
                                 anon_vma=b == "anon", file_id=None if b == "anon" else ident,
                                 anon_id=ident if b == "anon" else None, hugepage_size=hp,
                                 name=f"ident:{ident}"))
            space = AddressSpace(space.vmas + tuple(extra), space.pt, cpus=len(cpus))
        spaces[p.name] = space
        mms.append(MmSpec(p.name, cpus, space))
    callers = []
    busy: dict[str, set[int]] = {p.name: set() for p in w.processes}
    gaps_ok = _has_field(CallerSpec, "gaps_ns")
    for i, s in enumerate(w.streams):
        p = procs[s.process]
        cpu = placement[p.name][s.thread]
        ncpus = len(set(placement[p.name]))
        busy[p.name].add(s.thread)
        if isinstance(s, SyntheticStream):
            count = s.count
            plans: Iterator[MovePlan] = synthetic_plans(s, root, i, target, ncpus, count)
            times = None
        else:
            entries = call_entries(s, p) if isinstance(s, CallStream) else trace_entries(s)
            planner = StatefulPlanner(spaces[p.name] or initial_space(p, target, ncpus),
                                      entries, target, seed=i,
                                      repeat=getattr(s, "repeat", 1),
                                      populate_growth=isinstance(s, TraceStream),
                                      thp_enabled=getattr(s, "thp_enabled", "madvise"))
            plans = iter(planner)
            n_moves = sum(e.op == "mremap" for e in entries) * getattr(s, "repeat", 1)
            count = min(s.count, n_moves) if s.count else n_moves
            if s.count:
                plans = _take(plans, s.count)
            times = None
            if isinstance(s, TraceStream) and s.timing == "recorded":
                ts = [e.at_ns for e in entries if e.op == "mremap"]
                if all(t is not None for t in ts) and ts:
                    t0 = min(ts)
                    times = [s.start_ns + t - t0 for t in ts][:count]
        if wrap_plans is not None:
            plans = wrap_plans(plans)
        if isinstance(s, TraceStream) and profile.cold_cache is not None:
            plans = _cold_calls(plans, planner, profile)
        arr = s.arrival
        name = s.name
        if times is None and isinstance(arr, (Poisson, Periodic)):
            times = _arrival_times(arr, rng_of(root, STREAMS, i, Q_ARRIVAL), count,
                                   w.duration_ns, s.start_ns)
        if times is not None:
            # Open-loop arrivals: one single-call caller per arrival; a call that arrives
            # while the thread is still busy waits for mmap_lock (recorded as that wait).
            shared = _Shared(plans)
            for k, t in enumerate(times):
                callers.append(CallerSpec(f"{name}#{k}", p.name, cpu, shared.one(), 1, 0, int(t)))
            continue
        assert isinstance(arr, Closed)
        think = arr.think_ns
        kw = {}
        if think.dist == "fixed":
            interval = int(think.value)
        elif gaps_ok:
            gen = think.sample(rng_of(root, STREAMS, i, Q_ARRIVAL), count or 100_000)
            kw["gaps_ns"] = tuple(int(x) for x in gen)
            interval = 0
        else:
            interval = int(round(float(np.mean(think.sample(
                rng_of(root, STREAMS, i, Q_ARRIVAL), 4096)))))
            notes.append(f"stream {name!r}: the engine has no per-call think times "
                         f"(CallerSpec.gaps_ns); using the mean think time {interval} ns")
        callers.append(CallerSpec(name, p.name, cpu, plans, 1, interval, s.start_ns, **kw))
    walkers = []
    for wk in w.walkers:
        for c in wk.cpus:
            walkers.append(WalkerSpec(f"{wk.name}@{c}", wk.lock, c, wk.interval_ns, wk.hold_ns,
                                      wk.hold_sigma, wk.poisson))
    users = []
    for p in w.processes:
        if not p.user_work:
            continue
        for t, c in enumerate(placement[p.name]):
            if t not in busy[p.name]:
                users.append(UserSpec(f"{p.name}/t{t}", p.name, c, p.quantum_ns))
    seed = int(child(root, ENGINE).generate_state(1, np.uint64)[0])
    spec = SimSpec(cpus=w.cpus, target=target, profile=profile, mms=tuple(mms),
                   callers=tuple(callers), walkers=tuple(walkers), users=tuple(users),
                   duration_ns=w.duration_ns, seed=seed,
                   meta={"workload": w.name, "workload_digest": w.digest})
    return Compiled(spec, notes)


def _take(it, n):
    for k, x in enumerate(it):
        if k >= n:
            return
        yield x


def _arrival_times(arr, rng: np.random.Generator, count: int | None, duration: int | None,
                   start: int) -> list[int]:
    """Arrival instants of an open-loop stream (integer ns): from ``start``, the running sum
    of the gaps (exponential draws of mean ``1e9 / rate_per_s``, ``CHUNK`` at a time, for a
    Poisson stream; ``interval_ns`` for a periodic one, whose first call comes at
    ``start``), each instant truncated to an int, up to ``count`` instants or the first at
    or after ``duration``. The sum is accumulated in float64 in order (``np.cumsum`` adds
    left to right, as a loop adding one gap at a time does: tests/test_t13e_calls_layout.py)."""
    out: list[int] = []
    t = float(start)
    limit = count if count is not None else 10_000_000
    poisson = isinstance(arr, Poisson)
    while len(out) < limit:
        gaps = (rng.exponential(1e9 / arr.rate_per_s, CHUNK) if poisson
                else np.full(CHUNK, float(arr.interval_ns)))
        gaps = gaps[:limit - len(out)]
        if not poisson and not out:
            gaps[0] = 0.0
        at = np.cumsum(np.concatenate(((t,), gaps)))[1:]
        if duration is not None:
            late = np.flatnonzero(at >= duration)
            if len(late):
                out += at[:late[0]].astype(np.int64).tolist()
                return out
        out += at.astype(np.int64).tolist()
        t = at[-1]
    return out


def trace_entries(s: TraceStream) -> list[Entry]:
    from perfsim.workload.trace import read_trace_csv, strace_to_entries

    if s.format == "csv":
        entries = read_trace_csv(s.path)
    else:
        with open(s.path, encoding="utf-8", errors="replace") as f:
            entries = strace_to_entries(f.read(), origin=s.path)
    # a row's own populate (the CSV column) stands; the stream's fills the rest
    return [replace(e, populate=s.populate) if e.op != "munmap" and e.populate is None else e
            for e in entries]
