"""Real-memory layouts for calibration configurations.

Anonymous and memfd sources come from :func:`perfsim.host.layout.build_layout` (built
unpopulated, then populated here as the configuration asks: all pages, one page in
``SPARSE_EVERY``, or none). hugetlb sources are mapped here with ``MAP_HUGETLB`` at the same
addresses (only the two 2 MiB-aligned classes exist for hugetlb).

THP is *verified*: after population the source VMA's ``AnonHugePages`` in
``/proc/self/smaps`` must equal what the configuration expects (every PMD slot it covers
completely with THP on, nothing with THP off); otherwise :class:`LayoutMismatch` is raised and
the repetition is recorded as failed, never silently measured as something else.
"""

from __future__ import annotations

import ctypes

from perfsim.calibrate.design import SPARSE_EVERY, Config
from perfsim.calibrate.model import default_addresses
from perfsim.host import syscalls as sc
from perfsim.host.layout import Layout, build_layout, smaps_entry

MAP_HUGETLB = 0x40000

__all__ = ["LayoutMismatch", "build", "populate_sparse"]


class LayoutMismatch(RuntimeError):
    """The kernel did not give the layout the configuration describes (e.g. no THP)."""


def populate_sparse(addr: int, length: int, every: int = SPARSE_EVERY) -> int:
    """Write one byte to every page whose address is a multiple of ``every`` pages (the
    planner's ``every=k`` pattern is relative to the PMD slot, i.e. absolute). Returns the
    number of pages touched."""
    step = every * sc.PAGE_SIZE
    first = -(-addr // step) * step
    n = 0
    for a in range(first, addr + length, step):
        ctypes.c_char.from_address(a).value = b"\x01"
        n += 1
    return n


def _thp_kb(src: int) -> int:
    sm = smaps_entry(src) or {}
    return sm.get("AnonHugePages", 0) + sm.get("ShmemPmdMapped", 0) + sm.get("FilePmdMapped", 0)


def _build_hugetlb(cfg: Config, hint: int | None = 0x300000000000) -> Layout:
    src, dst = default_addresses(cfg, 0)  # offsets only
    span = -(-(cfg.size + 8 * (1 << 20)) // (1 << 30)) * (1 << 30)
    win = sc.AddressWindow(2 * span + (1 << 30), align=1 << 30, hint=hint)
    base = win.base
    src, dst = base + src, base + dst
    lay = Layout(cfg.align, cfg.size, src, dst, "hugetlb", False, "hole", base)
    try:
        sc.mmap(src, cfg.size, sc.PROT_READ | sc.PROT_WRITE,
                sc.MAP_PRIVATE | sc.MAP_ANONYMOUS | sc.MAP_FIXED | MAP_HUGETLB)
        if src > base:
            win.release(base, src - base)
        win.release(src + cfg.size, win.end - (src + cfg.size))
        win.closed = True
    except BaseException:
        win.close()
        raise
    return lay


def build(cfg: Config, *, ordinary: bool = False) -> Layout:
    """Map, populate and verify the source of ``cfg``; the destination is a hole.

    ``ordinary``: put the layout where the kernel puts any program's mmap (the normal mmap
    area, next to the process's other mappings and their page tables) instead of the private
    address window far below it."""
    if cfg.backing == "hugetlb":
        lay = _build_hugetlb(cfg, hint=None) if ordinary else _build_hugetlb(cfg)
    elif ordinary:
        lay = build_layout(cfg.align, cfg.size, backing=cfg.backing, thp=cfg.thp,
                           populate=False, hint=None)
    else:
        lay = build_layout(cfg.align, cfg.size, backing=cfg.backing, thp=cfg.thp,
                           populate=False)
    lay.keep_source = cfg.op == "dontunmap"  # its move keeps the source VMA (MREMAP_DONTUNMAP)
    try:
        t0 = sc.monotonic_ns()
        if cfg.populate == "full":
            lay.populate_method = sc.populate(lay.src, lay.size, write=True)
        elif cfg.populate == "sparse":
            populate_sparse(lay.src, lay.size)
            lay.populate_method = f"every:{SPARSE_EVERY}"
        else:
            lay.populate_method = "none"
        lay.populate_ns = sc.monotonic_ns() - t0
        if lay.guard:
            sc.populate(lay.guard[0], lay.guard[1], write=False)
        if cfg.backing == "hugetlb":
            sm = smaps_entry(lay.src) or {}
            got = sm.get("Private_Hugetlb", 0) + sm.get("Shared_Hugetlb", 0)
            want = lay.size // 1024 if cfg.populate == "full" else None
            if want is not None and got != want:
                raise LayoutMismatch(f"{cfg.id}: hugetlb backing {got} kB, expected {want} kB")
        else:
            lay.thp_kb = _thp_kb(lay.src)
            want = cfg.expected_thp_kb()
            if lay.thp_kb != want:
                raise LayoutMismatch(f"{cfg.id}: THP backing {lay.thp_kb} kB, expected {want} kB "
                                     "(/proc/self/smaps AnonHugePages)")
    except BaseException:
        lay.cleanup()
        raise
    return lay
