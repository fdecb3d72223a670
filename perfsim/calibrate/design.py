"""The designed set of configurations a calibration measures (pure: no I/O, no kernel).

A :class:`Config` is one thing to measure: an alignment class (the five shapes of
``perfsim.host.layout``), a size, how much of the source is populated, what backs it, THP,
and how many threads of the mm are running (the second one spins on the other CPU so every
flush needs an IPI). :func:`design` lays out the factorial-ish grid; planning it is separate
from measuring it (desmod's ``factorial_config`` idea), so tests and ``--dry-run`` can look at
the design without touching the kernel.

The five alignment classes (docs/kernel-rules.md, Worked examples)::

    class         source            destination      what move_page_tables does
    pud_aligned   1 GiB aligned     1 GiB aligned    NORMAL_PUD moves (E1; PMD moves < 1 GiB)
    pmd_aligned   A (2 MiB)         B (2 MiB)        NORMAL_PMD moves, PUDs never line up
    realignable   A + 4K            B + 4K           realigned down to A/B, then PMD moves (E2)
    blocked       A + 4K, VMA below B + 4K           realignment refused: PTE head + PMDs (E3)
    unaligned     A + 4K            B + 8K           PTE copies only, ~2 extents per 2 MiB (E4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: The five alignment classes, in the order the spec lists them.
ALIGN_CLASSES: tuple[str, ...] = ("pud_aligned", "pmd_aligned", "realignable", "blocked",
                                  "unaligned")
POPULATIONS: tuple[str, ...] = ("full", "sparse", "none")
BACKINGS: tuple[str, ...] = ("anon", "memfd", "hugetlb")
#: What the measured call does: ``move`` = ``mremap(src, size, size, MAYMOVE|FIXED, dst)`` onto
#: a hole; ``shrink`` = ``mremap(src, size, size / 2, 0)``: nothing moves, the tail half is
#: unmapped, i.e. its present PTEs are zapped (``unmap_page_range`` / ``zap_pte_range``), its
#: pages released and its page tables freed (``free_pgtables``) -- the one call of the design
#: that pays ``zap_pte_ns``; ``dontunmap`` = the move with ``MREMAP_DONTUNMAP``: the source
#: VMA is kept, so nothing is unmapped (``dontunmap_complete``), the one call of the design
#: that pays no ``unmap_ns``.
OPS: tuple[str, ...] = ("move", "shrink", "dontunmap")
#: ``sparse`` = one present page in every SPARSE_EVERY (one 4 KiB page per 64 KiB).
SPARSE_EVERY = 16
HUGETLB_PAGE = 2 * MiB

FULL_SIZES = (4 * KiB, 64 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB, 1 * GiB,
              2 * GiB, 4 * GiB)
QUICK_SIZES = (4 * KiB, 1 * MiB, 64 * MiB, 256 * MiB, 1 * GiB)


def fmt_size(n: int) -> str:
    for unit, m in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def parse_size(text: str) -> int:
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": GiB}.get(s[-1:], 1)
    try:
        return int(float(s.rstrip("KMG")) * mult)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 4K, 64M, 2G)") from None


@dataclass(frozen=True, order=True)
class Config:
    """One measured configuration. ``group`` names the part of the design it belongs to
    (``core``, ``population``, ``thp``, ``memfd``, ``hugetlb``)."""

    align: str
    size: int
    threads: int = 1
    populate: str = "full"
    backing: str = "anon"
    thp: bool = False
    group: str = "core"
    op: str = "move"

    def __post_init__(self) -> None:
        if self.align not in ALIGN_CLASSES:
            raise ValueError(f"align must be one of {ALIGN_CLASSES}, got {self.align!r}")
        if self.populate not in POPULATIONS:
            raise ValueError(f"populate must be one of {POPULATIONS}, got {self.populate!r}")
        if self.backing not in BACKINGS:
            raise ValueError(f"backing must be one of {BACKINGS}, got {self.backing!r}")
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.op == "shrink" and (self.size % (8 * KiB) or self.backing == "hugetlb"):
            raise ValueError("a shrink halves the size: a multiple of 8 KiB, not hugetlb")
        if self.op == "dontunmap" and self.backing == "hugetlb":
            raise ValueError("MREMAP_DONTUNMAP refuses hugetlb (VM_DONTEXPAND): not hugetlb")
        if self.threads not in (1, 2):
            raise ValueError("threads must be 1 or 2")
        if self.size <= 0 or self.size % (4 * KiB):
            raise ValueError("size must be a positive multiple of 4 KiB")
        if self.backing == "hugetlb" and (self.size % HUGETLB_PAGE
                                           or self.align not in ("pud_aligned", "pmd_aligned")):
            raise ValueError("hugetlb needs 2 MiB multiples and a 2 MiB-aligned class")

    @property
    def id(self) -> str:
        """A stable, readable key, e.g. ``unaligned/64M/t2/anon/full`` (+ ``/thp``, + ``/shrink``
        for a shrink; a move has no suffix, so the keys of data recorded before shrinks existed
        are unchanged)."""
        s = f"{self.align}/{fmt_size(self.size)}/t{self.threads}/{self.backing}/{self.populate}"
        return s + ("/thp" if self.thp else "") + ("" if self.op == "move" else f"/{self.op}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["config_id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        op = d.get("op")  # absent (or NaN in a table) in data recorded before shrinks existed
        return cls(align=d["align"], size=int(d["size"]), threads=int(d.get("threads", 1)),
                   populate=d.get("populate", "full"), backing=d.get("backing", "anon"),
                   thp=bool(d.get("thp", False)), group=d.get("group", "core"),
                   op=op if isinstance(op, str) and op else "move")

    def expected_thp_kb(self) -> int:
        """AnonHugePages the source must show when THP really backs it: every PMD slot the
        source covers completely."""
        if not self.thp or self.populate != "full":
            return 0
        src_off = {"pud_aligned": 0, "pmd_aligned": 0}.get(self.align, 4 * KiB)
        lo = -(-src_off // (2 * MiB)) * 2 * MiB
        hi = (src_off + self.size) // (2 * MiB) * 2 * MiB
        return max(0, hi - lo) // KiB


#: sizes (before the shrink) of the ``zap`` group: the call zaps half of each
ZAP_SIZES = (256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB)
QUICK_ZAP_SIZES = (256 * KiB, 4 * MiB, 64 * MiB)
#: alignment classes of the ``zap`` group: the tail starts on a PMD boundary (whole PTE tables
#: freed) or 4 KiB past one (a partial first table)
ZAP_CLASSES = ("pmd_aligned", "unaligned")
#: the ``dontunmap`` group: MREMAP_FIXED|MREMAP_DONTUNMAP moves of written anonymous memory
#: and of a written shared memfd, :data:`ZAP_CLASSES` at these sizes (the small ones carry
#: the fixed cost the group is for)
DONTUNMAP_SIZES = (4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB)
QUICK_DONTUNMAP_SIZES = (64 * KiB, 1 * MiB, 16 * MiB)
#: groups measured and reported but not fitted (:func:`fitted_group`)
REPORT_ONLY_GROUPS: tuple[str, ...] = ("zap_shared",)


def fitted_group(group: str) -> bool:
    """Whether a configuration of ``group`` enters the fit. ``zap_shared`` (shrinks of a
    written shared memfd: shmem pages the page cache keeps, where an anonymous page is freed)
    is measured so the shared figure is on record, and left out: ``zap_pte_ns`` is the
    anonymous figure (docs/calibration.md, "Zapping written memory")."""
    return group not in REPORT_ONLY_GROUPS


def design(quick: bool = False, *, sizes: tuple[int, ...] | None = None,
           max_size: int | None = None, thp_available: bool = True,
           hugetlb: bool = True, threads: tuple[int, ...] = (1, 2),
           zap: bool = True, dontunmap: bool = False) -> list[Config]:
    """The configurations to measure.

    * ``core``: the five classes × every size × ``threads``, anonymous, fully populated,
      THP off;
    * ``population``: sparse (1 page in 16) and none, at 64 MiB and 1 GiB (quick: 64 MiB);
    * ``memfd``: a shared memfd (shmem) source, same sizes;
    * ``thp``: ``MADV_HUGEPAGE`` sources at 4 MiB, 64 MiB and 1 GiB (quick: 64 MiB) when THP
      is not ``never``;
    * ``hugetlb``: 2 MiB hugetlb pages for the two 2 MiB-aligned classes (the others are not
      hugetlb-aligned: mremap would return EINVAL), at 64 MiB (and 1 GiB when not quick);
    * ``zap`` (``zap``): shrinks to half (:data:`OPS`) of written anonymous memory, THP off,
      :data:`ZAP_CLASSES` × :data:`ZAP_SIZES` (quick: :data:`QUICK_ZAP_SIZES`): the calls
      that separate ``zap_pte_ns``; ``zap_shared``: the same shrinks of a written shared
      memfd, pmd_aligned only, measured but not fitted (:func:`fitted_group`);
    * ``dontunmap`` (``dontunmap``): the moves of :data:`ZAP_CLASSES` ×
      :data:`DONTUNMAP_SIZES` (quick: :data:`QUICK_DONTUNMAP_SIZES`) with
      ``MREMAP_DONTUNMAP``, anonymous and a shared memfd: the calls that unmap nothing,
      which separate ``unmap_ns`` from ``syscall_ns``.

    The extra groups run with 1 thread (their effect is local; IPIs are the core's job).
    """
    core_sizes = tuple(sizes) if sizes else (QUICK_SIZES if quick else FULL_SIZES)
    side = (64 * MiB,) if quick else (64 * MiB, 1 * GiB)
    thp_sizes = (64 * MiB,) if quick else (4 * MiB, 64 * MiB, 1 * GiB)
    out: list[Config] = []
    for size in core_sizes:
        for a in ALIGN_CLASSES:
            for t in threads:
                out.append(Config(a, size, t))
    for size in side:
        for a in ALIGN_CLASSES:
            for pop in ("sparse", "none"):
                out.append(Config(a, size, 1, populate=pop, group="population"))
            out.append(Config(a, size, 1, backing="memfd", group="memfd"))
    if thp_available:
        for size in thp_sizes:
            for a in ALIGN_CLASSES:
                out.append(Config(a, size, 1, thp=True, group="thp"))
    if hugetlb:
        for size in ((64 * MiB,) if quick else (64 * MiB, 1 * GiB)):
            for a in ("pud_aligned", "pmd_aligned"):
                out.append(Config(a, size, 1, backing="hugetlb", group="hugetlb"))
    if zap:
        for size in (QUICK_ZAP_SIZES if quick else ZAP_SIZES):
            for a in ZAP_CLASSES:
                out.append(Config(a, size, 1, group="zap", op="shrink"))
            out.append(Config("pmd_aligned", size, 1, backing="memfd", group="zap_shared",
                              op="shrink"))
    if dontunmap:
        for size in (QUICK_DONTUNMAP_SIZES if quick else DONTUNMAP_SIZES):
            for a in ZAP_CLASSES:
                for backing in ("anon", "memfd"):
                    out.append(Config(a, size, 1, backing=backing, group="dontunmap",
                                      op="dontunmap"))
    if max_size is not None:
        out = [c for c in out if c.size <= max_size]
    seen: set[str] = set()
    uniq = []
    for c in out:
        if c.id not in seen:
            seen.add(c.id)
            uniq.append(c)
    return uniq


def with_threads(c: Config, threads: int) -> Config:
    return replace(c, threads=threads)
