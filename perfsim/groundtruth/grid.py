"""The cases the probe runs, as dicts, and their one-line form the probe reads.

A case names a ``layout`` (``window``: a private 1 GiB-aligned window with nothing else in
it, as :mod:`perfsim.host.layout` builds the E1-E5 shapes; ``ordinary``: buffers from
``mmap(NULL, ...)`` in the process's normal mmap area, next to whatever else is mapped
there), a size, the source and destination offsets (from a PUD boundary in a window, from a
PMD boundary in an ordinary buffer), the backing, THP advice, threads, how the program
populates the buffer, guard pages and whether the destination is a hole, a reservation or
a written mapping (which MREMAP_FIXED unmaps first).
"""

from __future__ import annotations

import random

from perfsim.errors import PerfsimError
from perfsim.host.layout import SHAPE_OFFSETS

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

FIELDS = {
    "id": None, "layout": ("window", "ordinary"), "size": None, "src_off": None,
    "dst_off": None, "backing": ("anon", "shmem", "memfd", "tmpfs", "ext4"), "thp": ("on", "off", "default"),
    "threads": (1, 2), "populate": None, "guard_src": ("no", "touched", "untouched"),
    "guard_dst": ("no", "touched", "untouched"),
    "dst_mode": ("hole", "reserved", "written", "anon-shmem"), "reps": None,
    "new_size": None, "flags": ("fixed", "dontunmap", "shrink", "maymove", "dontunmap-any"),
    "split_at": None,
    "sync": ("no", "msync"), "truncate": None, "dontneed_off": None, "dontneed_len": None,
}
DEFAULTS = {"layout": "window", "backing": "anon", "thp": "off", "threads": 1,
            "populate": "full", "guard_src": "no", "guard_dst": "no", "dst_mode": "hole",
            "reps": 1, "new_size": 0, "flags": "fixed", "split_at": 0, "sync": "no",
            "truncate": -1, "dontneed_off": 0, "dontneed_len": 0}
#: the backings with a file descriptor the probe can ``ftruncate`` (``truncate``)
FILE_BACKINGS = ("memfd", "tmpfs", "ext4")
#: the backings whose files live in ``/dev/shm`` and ``/var/tmp``: host only (an initramfs
#: boot has neither)
HOST_ONLY_BACKINGS = ("tmpfs", "ext4")


def size_label(n: int) -> str:
    if n == 0:
        return "0"
    for unit, m in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def shape_case(shape: str, size: int, **kw) -> dict:
    """A window case of one of perfsim.host's shapes (``blocked`` gets its read-faulted
    one-page VMA below the source)."""
    src_off, dst_off = SHAPE_OFFSETS[shape]
    case = {"layout": "window", "shape": shape, "size": size, "src_off": src_off,
            "dst_off": dst_off}
    if shape == "blocked":
        case["guard_src"] = "touched"
    case.update(kw)
    case.setdefault("id", case_id(case))
    return normalise(case)


def case_id(case: dict) -> str:
    c = {**DEFAULTS, **case}
    parts = [c.get("shape") or f"{c['layout']}-{size_label(c['src_off'])}-{size_label(c['dst_off'])}",
             size_label(c["size"]), f"{c['threads']}t"]
    if c["backing"] != "anon":
        parts.append(c["backing"])
    if c["thp"] != "off":
        parts.append(f"thp-{c['thp']}")
    if c["populate"] != "full":
        parts.append(c["populate"].replace(":", ""))
    if c["guard_src"] != "no" and c.get("shape") != "blocked":
        parts.append(f"gs-{c['guard_src']}")
    if c["guard_dst"] != "no":
        parts.append(f"gd-{c['guard_dst']}")
    if c["dst_mode"] != "hole":
        parts.append(c["dst_mode"])
    if c["new_size"] and c["new_size"] != c["size"]:
        parts.append(f"to-{size_label(c['new_size'])}")
    if c["flags"] != "fixed":
        parts.append(c["flags"])
    if c["split_at"]:
        parts.append(f"split-{size_label(c['split_at'])}")
    if c["sync"] != "no":
        parts.append(c["sync"])
    if c["truncate"] >= 0:
        parts.append(f"trunc-{size_label(c['truncate'])}")
    if c["dontneed_len"]:
        parts.append(f"dontneed-{size_label(c['dontneed_off'])}+{size_label(c['dontneed_len'])}")
    return "/".join(parts)


def _check_populate(text: str, size: int) -> None:
    if text in ("full", "none"):
        return
    for pre in ("every:", "first:"):
        if text.startswith(pre) and text[6:].isdigit() and int(text[6:]) > 0:
            if pre == "first:" and (int(text[6:]) % 4096 or int(text[6:]) > size):
                break
            return
    raise PerfsimError(f"case field 'populate': {text!r}; allowed: full, none, every:K, "
                       "first:BYTES (a page multiple no larger than size)")


def normalise(case: dict) -> dict:
    """Defaults filled in and every field checked (one line naming the field otherwise)."""
    c = {**DEFAULTS, **case}
    for key, allowed in FIELDS.items():
        if key not in c and key != "id":
            raise PerfsimError(f"case {c.get('id', '?')}: field {key!r} missing")
        if allowed and c[key] not in allowed:
            raise PerfsimError(f"case {c.get('id', '?')}: field {key!r} is {c[key]!r}; allowed: "
                               + ", ".join(map(str, allowed)))
    if not isinstance(c["size"], int) or c["size"] <= 0 or c["size"] % 4096:
        raise PerfsimError(f"case {c.get('id', '?')}: field 'size' must be a positive multiple "
                           "of 4096")
    _check_populate(c["populate"], c["size"])
    for key in ("new_size", "split_at"):
        if not isinstance(c[key], int) or c[key] < 0 or c[key] % 4096:
            raise PerfsimError(f"case {c.get('id', '?')}: field {key!r} must be a multiple of "
                               "4096 (0: none)")
    if c["split_at"] >= c["size"]:
        raise PerfsimError(f"case {c.get('id', '?')}: field 'split_at' must be below 'size'")
    if c["flags"] == "shrink" and not 0 < c["new_size"] < c["size"]:
        raise PerfsimError(f"case {c.get('id', '?')}: flags 'shrink' needs 0 < 'new_size' < "
                           "'size'")
    if c["flags"] == "maymove" and c["new_size"] <= c["size"]:
        raise PerfsimError(f"case {c.get('id', '?')}: flags 'maymove' (a growth the kernel "
                           "places) needs 'new_size' > 'size'")
    if c["flags"] == "dontunmap-any" and c["new_size"] not in (0, c["size"]):
        raise PerfsimError(f"case {c.get('id', '?')}: flags 'dontunmap-any' moves the range "
                           "as it is: 'new_size' must be 0 or 'size'")
    t = c["truncate"]
    if not isinstance(t, int) or isinstance(t, bool) or t < -1:
        raise PerfsimError(f"case {c.get('id', '?')}: field 'truncate' must be a size in bytes "
                           "(-1: none)")
    if t >= 0 and c["backing"] not in FILE_BACKINGS:
        raise PerfsimError(f"case {c.get('id', '?')}: field 'truncate' needs a backing with a "
                           f"file ({', '.join(FILE_BACKINGS)}), not {c['backing']!r}")
    off, length = c["dontneed_off"], c["dontneed_len"]
    for key in ("dontneed_off", "dontneed_len"):
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 0 or c[key] % 4096:
            raise PerfsimError(f"case {c.get('id', '?')}: field {key!r} must be a multiple of "
                               "4096 (0: none)")
    if off + length > c["size"]:
        raise PerfsimError(f"case {c.get('id', '?')}: 'dontneed_off' + 'dontneed_len' must not "
                           "pass 'size' (the madvise is of the source)")
    c.setdefault("id", case_id(c))
    if any(ch.isspace() for ch in c["id"]):
        raise PerfsimError(f"case id {c['id']!r}: no spaces allowed")
    return c


def probe_line(case: dict) -> str:
    c = normalise(case)
    return " ".join(f"{k}={c[k]}" for k in FIELDS)


def probe_input(cases: list[dict]) -> str:
    # The probe starts and stops its spinner thread between cases; keep same-thread cases
    # together so it does so rarely.
    return "".join(probe_line(c) + "\n" for c in cases)


# ------------------------------------------------------------------------------------ grids
def shapes_grid(*, big: bool = True) -> list[dict]:
    """E1-E5 at 64 MiB and (``big``) 1 GiB, realignable, blocked, PMD-aligned, sparse,
    prefix, shmem/memfd, THP, a reserved destination, and two threads. Lean enough to boot
    under TCG in a few minutes."""
    sizes = [64 * MiB] + ([GiB] if big else [])
    cases = []
    for size in sizes:
        for shape in ("pud_aligned", "pmd_aligned", "realignable", "blocked", "unaligned"):
            cases.append(shape_case(shape, size))
    cases += [
        shape_case("small", 33 * 4 * KiB),
        shape_case("small", MiB),
        shape_case("realignable", 64 * MiB, populate="every:512"),
        shape_case("blocked", 64 * MiB, populate="every:512"),
        shape_case("unaligned", 64 * MiB, populate="every:16"),
        shape_case("unaligned", 64 * MiB, populate="first:1048576"),
        shape_case("realignable", 64 * MiB, populate="none"),
        shape_case("realignable", 64 * MiB, backing="memfd"),
        shape_case("unaligned", 64 * MiB, backing="shmem"),
        shape_case("pmd_aligned", 64 * MiB, backing="memfd"),
        shape_case("pmd_aligned", 64 * MiB, thp="on"),
        shape_case("unaligned", 64 * MiB, thp="on"),
        shape_case("unaligned", 64 * MiB, dst_mode="reserved"),
        shape_case("realignable", 64 * MiB, guard_dst="untouched"),
        # +4K/+4K at 1 GiB from a PUD boundary: realigned (6.7+) it is one PUD move
        {"layout": "window", "size": GiB, "src_off": 4 * KiB, "dst_off": 4 * KiB},
        # shmem THP (the initramfs sets shmem_enabled=advise): PMD-mapped only where the
        # VMA start and file offset are PMD-congruent
        shape_case("pmd_aligned", 64 * MiB, backing="memfd", thp="on"),
        shape_case("realignable", 64 * MiB, backing="memfd", thp="on"),
        # several VMAs in the range: one call moves them all on 6.17+, EFAULT before
        shape_case("unaligned", 64 * MiB, split_at=32 * MiB),
        shape_case("realignable", 64 * MiB, split_at=32 * MiB + 4 * KiB),
        # the source stays mapped (its pages are gone): no source unmap
        shape_case("realignable", 64 * MiB, flags="dontunmap"),
        # shrink while moving: the tail is unmapped first
        shape_case("unaligned", 64 * MiB, new_size=32 * MiB),
    ]
    cases = [normalise(c) for c in cases]
    for shape in ("realignable", "blocked", "unaligned"):
        cases.append(shape_case(shape, 64 * MiB, threads=2))
    cases.append(shape_case("pmd_aligned", 64 * MiB, threads=2, thp="on"))
    return cases


def zap_cases() -> list[dict]:
    """Unmaps of written anon and shmem pages (a shrink drops the tail; MREMAP_FIXED over a
    written mapping unmaps it first): a zap of dirty shared PTEs flushes per PTE table
    (``perfsim/planner/unmap.py::zap_forces_flush``), an anon one does not."""
    cases = []
    for backing in ("anon", "shmem"):
        b = {"backing": backing}
        cases += [
            shape_case("pmd_aligned", 4 * MiB, new_size=2 * MiB, **b),
            shape_case("pmd_aligned", 8 * MiB, new_size=2 * MiB, **b),
            shape_case("unaligned", 8 * MiB, new_size=2 * MiB, **b),
            shape_case("pmd_aligned", 4 * MiB, dst_mode="written", **b),
            shape_case("unaligned", 4 * MiB, dst_mode="written", **b),
            # more pages than the gather's page batches hold (MAX_GATHER_BATCH_COUNT)
            shape_case("pmd_aligned", 64 * MiB, new_size=16 * MiB, **b),
        ]
    cases.append(shape_case("pmd_aligned", 8 * MiB, new_size=2 * MiB, backing="memfd"))
    # THPs (PMD-mapped where the kernel allows): zap_huge_pmd forces no flush; a THP the
    # tail covers partly is split with a flush of its own, a shmem one unmapped whole
    cases.append(shape_case("pmd_aligned", 8 * MiB, new_size=2 * MiB, backing="memfd", thp="on"))
    for backing in ("anon", "memfd"):
        cases.append(shape_case("pmd_aligned", 8 * MiB, new_size=3 * MiB, backing=backing,
                                thp="on"))
    # a destination of written anon then written shmem: from 6.2 tlb_next_batch refuses a
    # new page batch while the shmem PTEs' rmaps are delayed, so the anon pages gathered
    # before them force a flush inside the first shmem PTE table
    for size in (4 * MiB, 8 * MiB):
        cases.append(shape_case("pmd_aligned", size, dst_mode="anon-shmem"))
    return cases


#: backings of the ``zap-shared`` grid: the two shmem kinds, a tmpfs file and an ext4 file
ZAP_SHARED_BACKINGS = ("memfd", "shmem", "tmpfs", "ext4")
#: sizes (before the shrink to half) of the ``zap-shared`` grid
ZAP_SHARED_SIZES = (2 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 128 * MiB)


def zap_shared_cases(reps: int = 3) -> list[dict]:
    """Shrinks in place (``mremap(p, size, size / 2, 0)``, as the calibration's
    ``zap_shared`` group calls them) of written shared memory: memfd,
    ``MAP_SHARED|MAP_ANONYMOUS`` shmem, a tmpfs file and an ext4 file, each written through
    the mapping, :data:`ZAP_SHARED_SIZES`, PMD-aligned and 4 KiB past a PMD boundary, THP
    off, ``reps`` repetitions; and three written back first (``sync=msync``: ext4 at 16 and
    64 MiB, tmpfs at 16 MiB). Host only: the probe's ``tmpfs`` and ``ext4`` files live in
    ``/dev/shm`` and ``/var/tmp``, which an initramfs boot does not have."""
    cases = []
    for backing in ZAP_SHARED_BACKINGS:
        for size in ZAP_SHARED_SIZES:
            for shape in ("pmd_aligned", "unaligned"):
                cases.append(shape_case(shape, size, new_size=size // 2, backing=backing,
                                        flags="shrink", reps=reps))
    # written back first (msync MS_SYNC): the ext4 file's PTEs are clean and force nothing;
    # tmpfs has no writeback, its PTEs stay dirty
    for backing, size in (("ext4", 16 * MiB), ("ext4", 64 * MiB), ("tmpfs", 16 * MiB)):
        cases.append(shape_case("pmd_aligned", size, new_size=size // 2, backing=backing,
                                flags="shrink", sync="msync", reps=reps))
    return cases


def truncate_cases(backings: tuple[str, ...] = ("memfd",)) -> list[dict]:
    """What ``ftruncate`` of a mapped file leaves for a later mremap (docs/kernel-rules.md
    R25): every page of an 8 MiB shared mapping written, the file truncated (``truncate``:
    the probe's ``ftruncate`` between recording the layout and the call), then the mapping
    shrunk in place or moved. The pages past the new end are gone but their PTE tables
    stay: a shrink over them flushes once for the freed tables where, untruncated, each
    written table forces a flush of its own. Each shape also untruncated (the control), a
    new end inside a PTE table, one not page-aligned (the hole starts at the next page),
    zero, a growth (nothing changes), moves whose tables go whole or PTE by PTE, a THP
    split by the new end, and a second thread (IPIs)."""
    M2, M8 = 2 * MiB, 8 * MiB
    cases = []
    for b in backings:
        k = {"backing": b}
        shrink = {"new_size": M2, "flags": "shrink", **k}
        cases += [
            shape_case("pmd_aligned", M8, **shrink),
            shape_case("pmd_aligned", M8, truncate=M2, **shrink),
            shape_case("pmd_aligned", M8, truncate=3 * MiB, **shrink),
            shape_case("pmd_aligned", M8, truncate=M2 + 100, **shrink),
            shape_case("pmd_aligned", M8, truncate=0, **shrink),
            shape_case("pmd_aligned", M8, truncate=16 * MiB, **shrink),
            shape_case("unaligned", M8, truncate=M2, **shrink),
            shape_case("pmd_aligned", M8, truncate=M2, **k),
            shape_case("unaligned", M8, truncate=M2, **k),
            shape_case("realignable", M8, truncate=M2, **k),
            shape_case("unaligned", M8, truncate=5 * MiB + 4 * KiB, new_size=4 * MiB, **k),
        ]
        if b == "memfd":
            cases += [shape_case("pmd_aligned", M8, truncate=3 * MiB, thp="on", **shrink),
                      shape_case("pmd_aligned", M8, truncate=M2, threads=2, **shrink)]
    return cases


def zap_sparse_cases() -> list[dict]:
    """Shrinks in place whose tail holds a few written pages in a PTE table the call keeps
    (the mapping still ends inside that PMD): the flush covers the PTEs the zap cleared,
    first to last (``tlb_remove_tlb_entries`` widens the gather's range by each cleared
    PTE, not by the range walked), so two pages are a ranged flush, not a full one; a
    shared mapping's forced flush likewise. Anonymous, shmem and memfd; one also with a
    page further on (the range reaches it)."""
    M3, M8 = 3 * MiB, 8 * MiB
    cases = []
    for b in ("anon", "shmem", "memfd"):
        shrink = {"new_size": M3, "flags": "shrink", "backing": b}
        cases += [
            shape_case("pmd_aligned", M8, populate=f"first:{M3 + 8 * KiB}", **shrink),
            shape_case("pmd_aligned", M8, populate=f"first:{M3 + 120 * KiB}", **shrink),
            shape_case("pmd_aligned", M8, populate="every:32", **shrink),
        ]
    return cases


def files_cases() -> list[dict]:
    """A mapping of an ext4 file, a tmpfs file and a memfd, 8 MiB written, split in two by
    ``mprotect`` of one page, then moved with one MREMAP_FIXED call (6.17+ moves all three
    VMAs: ``vma_multi_allowed`` trusts ``thp_get_unmapped_area``, ext4's handler, and
    shmem; before 6.17, EFAULT), PMD-aligned and unaligned. Host only (the files)."""
    return [shape_case(s, 8 * MiB, backing=b, split_at=4 * MiB + (0 if s == "pmd_aligned" else 4 * KiB))
            for b in ("ext4", "tmpfs", "memfd") for s in ("pmd_aligned", "unaligned")]


def ordinary_case(size: int, src_off: int, dst_off: int, **kw) -> dict:
    case = {"layout": "ordinary", "size": size, "src_off": src_off, "dst_off": dst_off,
            "thp": "default"}
    case.update(kw)
    return normalise(case)


def ordinary_grid() -> list[dict]:
    """Issue 10 item 7: what an ordinary program does, in the mmap area next to its C
    library: loops that write every page, every K-th page from the buffer start, or a
    prefix; guard pages (touched or not); anon and memfd with and without THP; one and two
    threads; a hole or a reserved destination."""
    K4, M2, M64 = 4 * KiB, 2 * MiB, 64 * MiB
    cases = []
    for threads in (1, 2):
        t = {"threads": threads}
        cases += [
            ordinary_case(M64, K4, K4, **t),
            ordinary_case(M64, K4, K4, guard_src="touched", **t),
            ordinary_case(M64, K4, K4, populate="every:512", guard_src="touched", **t),
            ordinary_case(M64, K4, K4, populate="every:512", guard_src="untouched", **t),
            ordinary_case(M64, K4, K4, populate="every:512", **t),
            ordinary_case(M64, K4, 2 * K4, populate="every:16", **t),
            ordinary_case(M64, K4, 2 * K4, populate="first:1048576", **t),
            ordinary_case(M64, 0, 0, thp="on", **t),
            ordinary_case(M64, 0, 0, thp="off", **t),
            ordinary_case(M64, K4, K4, thp="on", **t),
            ordinary_case(M64, 0, 0, backing="memfd", thp="on", **t),
            ordinary_case(M64, K4, K4, backing="memfd", **t),
            ordinary_case(M64, K4, 2 * K4, backing="memfd", thp="on", **t),
            ordinary_case(M64, 0, 0, backing="shmem", populate="every:64", **t),
            ordinary_case(M64, K4, K4, dst_mode="reserved", **t),
            ordinary_case(M64, K4, K4, guard_dst="untouched", guard_src="untouched", **t),
            ordinary_case(M2 + 3 * K4, 512 * KiB, 512 * KiB, **t),
            ordinary_case(40 * K4, K4, 3 * K4, **t),
        ]
    cases.append(ordinary_case(GiB, K4, 2 * K4))
    cases.append(ordinary_case(GiB, K4, K4, guard_src="touched"))
    return cases


def kernel_picks_cases(backings: tuple[str, ...] = ("anon",)) -> list[dict]:
    """Moves whose destination the kernel chooses (``get_unmapped_area``,
    :mod:`perfsim.planner.unmapped_area`): a growth past a blocking page (``maymove``) and
    DONTUNMAP with no address (``dontunmap-any``), of lengths that are and are not whole
    PMDs, from sources at a PMD boundary, a page past one and 1 MiB into one, in a window
    and next to the C library; the record says where the kernel put it, and the planner's
    choice is held to that. ``backings``: the anon grid and ``kernel-picks-shmem`` (memfd and
    shmem, which the initramfs's ``shmem_enabled=advise`` aligns) run anywhere;
    ``kernel-picks-files`` has memfd, shmem and the host's tmpfs and ext4 files."""
    M2, K4 = 2 * MiB, 4 * KiB
    cases = []
    for b in backings:
        for size, new_size in ((M2, 2 * M2), (4 * M2, 8 * M2), (4 * M2, 4 * M2 + K4),
                               (3 * M2 + K4, 4 * M2), (M2 - K4 * 3, M2), (64 * K4, 128 * K4)):
            for off in (0, K4, MiB):
                for layout in ("window", "ordinary"):
                    c = {"layout": layout, "size": size, "src_off": off, "dst_off": 0,
                         "backing": b, "flags": "maymove", "new_size": new_size,
                         "thp": "off" if layout == "window" else "default"}
                    cases.append(normalise(c))
        for size in (M2, 4 * M2, 4 * M2 + K4, 64 * K4):
            for off in (0, K4):
                cases.append(normalise({"layout": "ordinary", "size": size, "src_off": off,
                                        "dst_off": 0, "backing": b, "flags": "dontunmap-any",
                                        "thp": "default", "populate": "every:64"}))
    if "anon" in backings:
        cases.append(normalise({"layout": "ordinary", "size": 4 * M2, "src_off": K4,
                                "dst_off": 0, "flags": "maymove", "new_size": 8 * M2,
                                "thp": "default", "threads": 2}))
    return cases


def dontneed_cases() -> list[dict]:
    """What ``madvise(MADV_DONTNEED)`` leaves for a later mremap (docs/kernel-rules.md R27):
    8 MiB written, part of it zapped with MADV_DONTNEED between recording the layout and
    the call (``dontneed_off``/``dontneed_len``), then moved or shrunk. Where the kernel
    has ``CONFIG_PT_RECLAIM`` (x86-64 from 6.14) the PTE tables of the whole 2 MiB runs the
    madvise covered are freed and the move skips their slots (no PMD move, no flush), a
    shrink over them frees nothing and flushes nothing; without it the emptied tables stay
    and are moved (and flushed) or freed. Runs that cover tables only partly, a THP zapped
    whole, a shared memfd, moves PTE by PTE and two threads besides; each shape also
    without the madvise (the control)."""
    M2, M8 = 2 * MiB, 8 * MiB
    cases = []
    for b in ("anon", "memfd"):
        k = {"backing": b}
        cases += [
            shape_case("pmd_aligned", M8, **k),
            shape_case("pmd_aligned", M8, dontneed_off=M2, dontneed_len=2 * M2, **k),
            shape_case("pmd_aligned", M8, dontneed_off=MiB, dontneed_len=M2, **k),
            shape_case("pmd_aligned", M8, dontneed_off=0, dontneed_len=M8, **k),
            shape_case("pmd_aligned", M8, dontneed_off=M2, dontneed_len=3 * M2, new_size=M2,
                       flags="shrink", **k),
            shape_case("pmd_aligned", M8, new_size=M2, flags="shrink", **k),
            shape_case("unaligned", M8, dontneed_off=M2 - 4 * KiB, dontneed_len=2 * M2, **k),
            shape_case("realignable", M8, dontneed_off=M2 - 4 * KiB, dontneed_len=M2, **k),
        ]
    cases += [
        shape_case("pmd_aligned", M8, dontneed_off=M2, dontneed_len=2 * M2, thp="on"),
        shape_case("pmd_aligned", M8, dontneed_off=MiB, dontneed_len=M2, thp="on"),
        shape_case("pmd_aligned", M8, dontneed_off=M2, dontneed_len=2 * M2, threads=2),
        shape_case("pmd_aligned", M8, dontneed_off=M2, dontneed_len=2 * M2, flags="dontunmap"),
    ]
    return cases


GRIDS = {"shapes": shapes_grid, "shapes-small": lambda: shapes_grid(big=False),
         "ordinary": ordinary_grid, "zap": zap_cases, "zap-shared": zap_shared_cases,
         "truncate": truncate_cases, "dontneed": dontneed_cases,
         "zap-sparse": zap_sparse_cases, "files": files_cases,
         "truncate-files": lambda: truncate_cases(("tmpfs", "ext4")),
         "kernel-picks": kernel_picks_cases,
         "kernel-picks-shmem": lambda: kernel_picks_cases(("memfd", "shmem")),
         "kernel-picks-files": lambda: kernel_picks_cases(("memfd", "shmem", "tmpfs", "ext4"))}


def _random_case(rng: random.Random, case_id: str, backings: tuple[str, ...],
                 picks: bool = False) -> dict | None:
    """One case drawn from the probe's whole vocabulary (None where the draw is not a valid
    case, e.g. a shrink of one page). ``picks``: a move whose destination the kernel
    chooses instead (``maymove`` growths, half of them to whole PMDs, and ``dontunmap-any``),
    drawn after the same layout draws."""
    pages = rng.choice([rng.randint(1, 64), rng.randint(1, 1024), rng.randint(256, 8192)])
    size = pages * 4 * KiB

    def offset() -> int:
        return rng.choice([0, 4 * KiB, 2 * MiB - 4 * KiB, rng.randrange(512) * 4 * KiB,
                           rng.randrange(1024) * 4 * KiB])

    backing = rng.choice(backings)
    c = {"id": case_id, "layout": "window", "size": size, "src_off": offset(),
         "dst_off": offset(), "backing": backing,
         "thp": rng.choice(["off", "off", "on", "default"]), "threads": rng.choice([1, 1, 2]),
         "populate": rng.choice(["full", "full", "none", f"every:{rng.randint(2, 600)}",
                                 f"first:{rng.randint(1, pages) * 4 * KiB}"]),
         "guard_src": rng.choice(["no", "no", "touched", "untouched"]),
         "guard_dst": rng.choice(["no", "no", "touched", "untouched"]),
         "dst_mode": rng.choice(["hole", "hole", "reserved", "written", "anon-shmem"]),
         "flags": rng.choice(["fixed"] * 4 + ["dontunmap", "shrink"])}
    if picks:
        c["flags"] = rng.choice(["maymove", "maymove", "dontunmap-any"])
        c["dst_mode"] = "hole"  # (the planned destination is unused)
        if c["flags"] == "maymove":
            new_size = rng.randint(pages + 1, 3 * pages) * 4 * KiB
            if rng.random() < 0.5:
                new_size = -(-new_size // (2 * MiB)) * 2 * MiB
            c["new_size"] = new_size
    elif c["flags"] == "shrink":
        if pages < 2:
            return None
        c["new_size"] = rng.randint(1, pages - 1) * 4 * KiB
    elif rng.random() < 0.3:
        c["new_size"] = rng.randint(1, 2 * pages) * 4 * KiB
    if pages > 2 and rng.random() < 0.15:
        c["split_at"] = rng.randint(1, pages - 1) * 4 * KiB
    if backing in FILE_BACKINGS and rng.random() < 0.4:
        c["truncate"] = rng.randint(0, size + 8 * KiB)
    if backing in HOST_ONLY_BACKINGS and rng.random() < 0.2:
        c["sync"] = "msync"
    return normalise(c)


def random_cases(seed: int = 1, count: int = 60, *, files: bool = False,
                 picks: bool = False) -> list[dict]:
    """``count`` cases drawn with ``random.Random(seed)`` from the probe's whole vocabulary
    (sizes from one page to 32 MiB at any page offset, every backing, THP advice, population,
    guard, destination mode and flag, splits and truncations): layouts no other grid was
    written for, the same for the same seed. ``files``: tmpfs and ext4 files too (host
    only). Ids are ``random-SEED-N``; one-thread cases first. ``picks``: every case a move
    whose destination the kernel chooses (ids ``random-picks-SEED-N``)."""
    rng = random.Random(seed)
    backings = ("anon",) * 4 + ("shmem", "memfd") + (HOST_ONLY_BACKINGS if files else ())
    cases: list[dict] = []
    n = 0
    while len(cases) < count:
        c = _random_case(rng, f"random-{'picks-' if picks else ''}{seed}-{n}", backings, picks)
        n += 1
        if c is not None:
            cases.append(c)
    return sorted(cases, key=lambda c: c["threads"])  # (stable: draw order within each)


#: the grids drawn with a seed (``NAME[:SEED[:COUNT]]``); the ``-files`` ones are host only
RANDOM_GRIDS = ("random", "random-files", "random-picks", "random-picks-files")


def _random_grid(name: str) -> list[dict]:
    """``random[:SEED[:COUNT]]``, ``random-files``, ``random-picks``, ``random-picks-files``
    (each with ``[:SEED[:COUNT]]``)."""
    base, *rest = name.split(":")
    if len(rest) > 2 or not all(p.isdigit() and int(p) > 0 for p in rest):
        raise PerfsimError(f"--grid {name!r}: say {base}, {base}:SEED or {base}:SEED:COUNT "
                           "(positive integers)")
    seed = int(rest[0]) if rest else 1
    count = int(rest[1]) if len(rest) > 1 else 60
    if count > 2000:
        raise PerfsimError(f"--grid {name!r}: at most 2000 cases")
    return random_cases(seed, count, files=base.endswith("-files"),
                        picks=base.startswith("random-picks"))


def named_grid(name: str) -> list[dict]:
    if name.split(":")[0] in RANDOM_GRIDS:
        return _random_grid(name)
    if name not in GRIDS:
        raise PerfsimError(f"--grid {name!r}: allowed values: {', '.join(GRIDS)}, "
                           + ", ".join(f"{g}[:SEED[:COUNT]]" for g in RANDOM_GRIDS))
    return GRIDS[name]()
