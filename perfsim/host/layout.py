"""Build the source/destination layouts of the spec's worked examples in real memory.

Every layout lives in a private address window (by default near ``0x300000000000``, far below
where the kernel puts ordinary mmaps, and inside one 512 GiB PGD slot).  After the mappings are
placed, everything else in the window is unmapped again, so the only VMAs there are the ones
the shape asks for: that matters because the realignment rule looks for VMAs just below the
source and destination, and the source unmap frees page tables only up to the neighbouring
VMAs.

Shapes (``A`` and ``B`` are 2 MiB aligned, neither is 1 GiB aligned, and their offsets inside
their 1 GiB regions differ: A = PUD + 2 MiB, B = PUD' + 6 MiB):

==============  ===========================  ==============================  =====
name            source                       destination                     spec
==============  ===========================  ==============================  =====
pud_aligned     1 GiB aligned                1 GiB aligned                   E1
pmd_aligned     A                            B                               (E6 without THP)
realignable     A + 4 KiB, [A, A+4K) empty   B + 4 KiB, [B, B+4K) empty      E2
blocked         A + 4 KiB, 1-page PROT_READ  B + 4 KiB                       E3
                VMA at [A, A+4K)
unaligned       A + 4 KiB                    B + 8 KiB                       E4
small           A + 512 KiB (len < 1.5 MiB)  B + 512 KiB                     E5(b)
==============  ===========================  ==============================  =====
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from perfsim.host import syscalls as sc

__all__ = ["SHAPES", "SPEC_EXAMPLE", "Layout", "build_layout", "smaps_entry"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

SHAPES = ("pud_aligned", "pmd_aligned", "realignable", "blocked", "unaligned", "small")
SPEC_EXAMPLE = {
    "pud_aligned": "E1",
    "pmd_aligned": "-",
    "realignable": "E2",
    "blocked": "E3",
    "unaligned": "E4",
    "small": "E5b",
}
BACKINGS = ("anon", "shmem", "memfd")
DEFAULT_HINT = 0x300000000000

_A_OFF = 2 * MiB  # source PMD anchor inside its PUD
_B_OFF = 6 * MiB  # destination PMD anchor inside its PUD
_SMALL_OFF = 512 * KiB

SHAPE_OFFSETS: dict[str, tuple[int, int]] = {
    "pud_aligned": (0, 0),
    "pmd_aligned": (_A_OFF, _B_OFF),
    "realignable": (_A_OFF + 4 * KiB, _B_OFF + 4 * KiB),
    "blocked": (_A_OFF + 4 * KiB, _B_OFF + 4 * KiB),
    "unaligned": (_A_OFF + 4 * KiB, _B_OFF + 8 * KiB),
    "small": (_A_OFF + _SMALL_OFF, _B_OFF + _SMALL_OFF),
}
"""(source offset, destination offset) of each shape from their PUD-aligned region starts:
the one table the host measurements, the calibration model and the ground-truth grid use."""


def _offsets(shape: str, size: int) -> tuple[int, int]:
    """(source offset, destination offset) from their PUD-aligned region starts."""
    if shape not in SHAPE_OFFSETS:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    if shape == "small" and size >= sc.PMD_SIZE - _SMALL_OFF:
        raise ValueError(f"'small' needs size < {(sc.PMD_SIZE - _SMALL_OFF) // KiB} KiB "
                         "(shorter than the distance to the next PMD boundary)")
    return SHAPE_OFFSETS[shape]


def smaps_entry(start: int) -> dict[str, int] | None:
    """The /proc/self/smaps counters (kB) of the VMA that starts at ``start``."""
    want = f"{start:x}-"
    found = False
    out: dict[str, int] = {}
    with open("/proc/self/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                if found:
                    break
                found = line.startswith(want)
                continue
            if found:
                m = re.match(r"^(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    return out if found else None


@dataclass
class Layout:
    """A built shape.  ``src``..``src+size`` is mapped and populated; the destination is a
    hole (``dst_mode='hole'``) or a PROT_NONE reservation (``dst_mode='reserved'``)."""

    shape: str
    size: int
    src: int
    dst: int
    backing: str
    thp: bool
    dst_mode: str
    window_base: int
    populate_method: str = ""
    populate_ns: int = 0
    thp_kb: int = 0  #: AnonHugePages / ShmemPmdMapped kB of the source VMA after populating
    guard: tuple[int, int] | None = None  #: (addr, len) of the blocking VMA, if any
    fd: int = -1
    moved: bool = False
    keep_source: bool = False  #: move with MREMAP_DONTUNMAP: the source VMA stays, empty
    _mapped: list[tuple[int, int]] = field(default_factory=list)

    def mremap_flags(self) -> int:
        return sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED | (sc.MREMAP_DONTUNMAP if self.keep_source
                                                      else 0)

    def do_move(self) -> int:
        """The call to time: mremap(src, size, size, MAYMOVE|FIXED, dst), with DONTUNMAP
        where ``keep_source``.  Raises on error."""
        r = sc.mremap_raw(self.src, self.size, self.size, self.mremap_flags(), self.dst)
        if r != self.dst:
            import ctypes
            import errno
            err = ctypes.get_errno()
            raise OSError(err, f"mremap {self.shape} failed: {errno.errorcode.get(err, err)}")
        self.moved = True
        return r

    def cleanup(self) -> None:
        """Unmap exactly what this layout mapped (never the whole window: its holes may have
        been reused by the process in the meantime)."""
        cur = [(self.dst if self.moved else self.src, self.size)]
        if self.moved and self.keep_source:
            cur.append((self.src, self.size))
        if self.dst_mode == "reserved" and not self.moved:
            cur.append((self.dst, self.size))
        if self.guard:
            cur.append(self.guard)
        for addr, length in cur:
            try:
                sc.munmap(addr, length)
            except OSError:
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Layout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def build_layout(shape: str, size: int, *, backing: str = "anon", thp: bool = False,
                 dst_mode: str = "hole", populate: bool = True,
                 hint: int | None = DEFAULT_HINT) -> Layout:
    """Map and populate the source of ``shape`` with ``size`` bytes; prepare the destination.

    ``backing``: ``anon`` (MAP_PRIVATE|MAP_ANONYMOUS), ``shmem`` (MAP_SHARED|MAP_ANONYMOUS, as
    mremap_test uses) or ``memfd`` (MAP_SHARED of a memfd).  ``thp``: MADV_HUGEPAGE instead of
    MADV_NOHUGEPAGE on the source before it is populated.  ``dst_mode``: ``hole`` (nothing
    mapped at the destination, so MREMAP_FIXED's do_munmap finds nothing) or ``reserved`` (a
    PROT_NONE MAP_NORESERVE reservation covers the destination; the kernel unmaps it).
    """
    if size <= 0 or size % sc.PAGE_SIZE:
        raise ValueError("size must be a positive multiple of the page size")
    if backing not in BACKINGS:
        raise ValueError(f"backing must be one of {BACKINGS}")
    if dst_mode not in ("hole", "reserved"):
        raise ValueError("dst_mode must be 'hole' or 'reserved'")
    soff, doff = _offsets(shape, size)
    span = -(-(size + 8 * MiB) // GiB) * GiB  # whole PUDs covering either side
    total = 2 * span + GiB  # source region, 1 GiB gap, destination region
    win = sc.AddressWindow(total, align=GiB, hint=hint)
    base = win.base
    src = base + soff
    dst = base + span + GiB + doff
    lay = Layout(shape, size, src, dst, backing, thp, dst_mode, base)
    keep: list[tuple[int, int]] = []
    try:
        prot = sc.PROT_READ | sc.PROT_WRITE
        if backing == "anon":
            win.place(src, size, prot)
        elif backing == "shmem":
            win.place(src, size, prot, shared=True)
        else:
            fd = sc.memfd_create(f"perfsim-{shape}")
            lay.fd = fd
            os.ftruncate(fd, size)
            win.place(src, size, prot, shared=True, fd=fd)
        keep.append((src, size))
        if shape == "blocked":
            a = src - 4 * KiB
            win.place(a, 4 * KiB, sc.PROT_READ)  # different protection: cannot merge
            lay.guard = (a, 4 * KiB)
            keep.append(lay.guard)
        if dst_mode == "reserved":
            keep.append((dst, size))  # the window's PROT_NONE reservation stays there
        # Turn the rest of the window back into holes.
        pos = base
        for addr, length in sorted(keep):
            if addr > pos:
                win.release(pos, addr - pos)
            pos = max(pos, addr + length)
        if pos < win.end:
            win.release(pos, win.end - pos)
        win.closed = True  # its remains are owned by ``lay`` now

        sc.madvise(src, size, sc.MADV_HUGEPAGE if thp else sc.MADV_NOHUGEPAGE)
        if populate:
            t0 = sc.monotonic_ns()
            lay.populate_method = sc.populate(src, size, write=True)
            lay.populate_ns = sc.monotonic_ns() - t0
            if lay.guard:
                sc.populate(lay.guard[0], lay.guard[1], write=False)
            sm = smaps_entry(src) or {}
            lay.thp_kb = sm.get("AnonHugePages", 0) + sm.get("ShmemPmdMapped", 0) \
                + sm.get("FilePmdMapped", 0)
            if not thp and lay.thp_kb:
                raise RuntimeError(f"THP found in a MADV_NOHUGEPAGE source: {lay.thp_kb} kB")
    except BaseException:
        lay.cleanup()
        if not win.closed:
            win.close()
        raise
    return lay
