"""Resolve a plan request (:mod:`perfsim.request_file`) into what the planner takes: a
:class:`~perfsim.profiles.Target`, an :class:`~perfsim.mm.space.AddressSpace` and a
:class:`~perfsim.planner.result.MoveRequest`.

Every problem with the input is a one-line :class:`~perfsim.errors.PerfsimError` naming
the option or the file key (``label``); a call the kernel would refuse is left to the
planner, which answers it with an errno.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from perfsim.errors import PerfsimError
from perfsim.mm.build import Population, VmaSpec, build_space, single_move_space
from perfsim.mm.space import AddressSpace
from perfsim.planner.result import MoveRequest
from perfsim.profiles import Target, resolve_target
from perfsim.units import fmt_size, parse_address, parse_size

SRC_BASE = 0x7F0000000000
"""``A``: the default source address and the base ``A+...`` offsets count from."""
DST_BASE = 0x7F4000000000
"""``B``: the default destination address. A and B are 1 GiB aligned and lie in one
512 GiB PGD slot, as a process's mappings do (E1)."""
MAX_CPUS = 8192
"""``--cpus`` bound: the largest ``NR_CPUS`` a Linux kernel can be built with (x86-64
``MAXSMP``); an ``mm_cpumask`` cannot hold more CPUs."""
FOLIO_SIZES = tuple(1 << s for s in range(14, 21))
"""mTHP folio sizes ``--folio-size`` takes: 16K…1M (orders the kernel offers below PMD)."""

Label = Callable[[str], str]


@dataclass
class Resolved:
    """A request resolved into what the planner takes, plus what the JSON reports."""

    target: Target
    space: AddressSpace
    request: MoveRequest
    settings: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)


def default_bases(arch) -> tuple[int, int]:
    """A and B: SRC_BASE and DST_BASE, unless the arch's user range ends too low for them
    (riscv-sv39): then TASK_SIZE/4 and TASK_SIZE/2, aligned down to the PUD size."""
    top = arch.user_va_top
    if DST_BASE + (1 << 32) <= top:
        return SRC_BASE, DST_BASE
    return (top // 4) // arch.pud_size * arch.pud_size, (top // 2) // arch.pud_size * arch.pud_size


def _profile(value: str, what: str) -> str:
    """A profile's name, or its path checked now so that a missing file or a directory is one
    line naming the option or key (``what``). The file is not read here: its loader
    (:func:`~perfsim.profiles.resolve_target`, :func:`~perfsim.cost.profile.resolve_cost_profile`)
    reads it, once, and says in one line if it is unreadable or not UTF-8."""
    if "/" in value or value.endswith(".toml"):
        path = Path(value)
        if path.is_dir():
            raise PerfsimError(f"{what} file {value!r} is a directory, not a file")
        if not path.exists():
            raise PerfsimError(f"{what} file {value!r} does not exist")
    return value


def target_of(v: dict, lab: Label) -> Target:
    target = resolve_target(kernel=_profile(str(v["kernel"]), lab("kernel")),
                            arch=_profile(str(v["arch"]), lab("arch")))
    if v.get("platform"):
        target = target.with_changes(platform=v["platform"])
    return target


def _size_within(v: dict, key: str, lab: Label, target: Target) -> int | None:
    if v[key] is None:
        return None
    n = parse_size(v[key], what=lab(key))
    top = target.arch.user_va_top
    if n > top:
        raise PerfsimError(f"{lab(key)}: {fmt_size(n)} is larger than the whole user address "
                           f"space of {target.arch.name} (TASK_SIZE {top:#x} = {fmt_size(top)})")
    return n


def _check_range(label: str, addr: int, span: int, len_label: str, top: int, arch: str) -> None:
    if addr >= top:
        raise PerfsimError(f"{label}: {addr:#x} is outside the user address range "
                           f"[0, {top:#x}) of {arch}")
    if addr + span > top:
        raise PerfsimError(f"{label} + {len_label}: [{addr:#x}, {addr + span:#x}) ends beyond "
                           f"the user address range [0, {top:#x}) of {arch}")


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _folio_size(value, label: str) -> int:
    if value is None:
        return 0
    n = parse_size(value, what=label)
    if n not in FOLIO_SIZES:
        raise PerfsimError(f"{label}: {fmt_size(n)} is not an mTHP folio size; allowed: "
                           f"{', '.join(fmt_size(s) for s in FOLIO_SIZES)}")
    return n


def _hugepage_size(value, label: str, arch) -> int:
    if value is None:
        return 0
    n = parse_size(value, what=label)
    if n not in (arch.pmd_size, arch.pud_size):
        raise PerfsimError(f"{label}: {fmt_size(n)} is not a huge page size of {arch.name}; "
                           f"allowed: {fmt_size(arch.pmd_size)} or {fmt_size(arch.pud_size)}")
    return n


def _population(value, seed: int, label: str) -> Population:
    try:
        return Population.parse(str(value), seed=int(seed))
    except PerfsimError as exc:
        raise PerfsimError(str(exc).replace("--populate", label, 1)) from None


def vma_specs(tables: list[dict], target: Target, bases: dict[str, int], seed: int,
              label: Label) -> list[VmaSpec]:
    """The ``[[vma]]`` tables as :class:`~perfsim.mm.build.VmaSpec` values."""
    arch, out = target.arch, []
    for i, t in enumerate(tables, 1):
        lab = f"{label('vma')} #{i}"
        start = parse_address(t["start"], bases=bases, what=f"{lab} start")
        length = parse_size(t["size"], what=f"{lab} size")
        if start % arch.page_size or length % arch.page_size or length == 0:
            raise PerfsimError(f"{lab}: start and size must be non-zero multiples of the page "
                               f"size {fmt_size(arch.page_size)}; got {start:#x}, {length:#x}")
        _check_range(f"{lab} start", start, length, "size", arch.user_va_top, arch.name)
        thp = t.get("thp", False)
        out.append(VmaSpec(
            start, length, backing=t.get("backing", "anon"), prot=t.get("prot", "rw"),
            populate=_population(t.get("populate", "full"), seed, f"{lab} populate"),
            thp=thp == "on" if isinstance(thp, str) else bool(thp),
            folio_size=_folio_size(t.get("folio_size"), f"{lab} folio_size"),
            pgoff=t.get("pgoff"), file=t.get("file"), uffd=t.get("uffd"),
            touched=t.get("touched", True), shared=_shared(t, lab),
            written_back=_written_back(t, lab), dirty=bool(t.get("dirty", False)),
            shmem_huge=_shmem_huge(t, lab), noreserve=bool(t.get("noreserve", False)),
            account=t.get("account"),
            hugepage_size=_hugepage_size(t.get("hugepage_size"), f"{lab} hugepage_size", arch),
            name=f"vma{i}"))
    return out


def _shared(table: dict, lab: str) -> bool:
    """A ``[[vma]]`` table's ``shared`` key: MAP_PRIVATE (false) means something only for a
    file or shmem backing; anonymous memory and hugetlb here are private."""
    shared = table.get("shared", True)
    backing = table.get("backing", "anon")
    if not shared and backing not in ("file", "shmem"):
        raise PerfsimError(f"{lab}: shared = false applies to file and shmem backings only, "
                           f"not {backing!r}")
    return bool(shared)


def _written_back(table: dict, lab: str) -> bool:
    """A ``[[vma]]`` table's ``written_back`` key: writeback cleans the pages of a shared
    file mapping only (shmem, anonymous memory and private copies have none)."""
    written_back = bool(table.get("written_back", False))
    if written_back and not (table.get("backing", "anon") == "file"
                             and table.get("shared", True)):
        raise PerfsimError(f"{lab}: written_back = true applies to a shared file mapping "
                           f"only (backing = 'file', shared = true), not "
                           f"{table.get('backing', 'anon')!r}"
                           + ("" if table.get("shared", True) else " with shared = false"))
    return written_back


def _shmem_huge(table: dict, lab: str) -> bool:
    """A ``[[vma]]`` table's ``shmem_huge`` key: a superblock's huge-page setting belongs to
    shmem and tmpfs only."""
    huge = bool(table.get("shmem_huge", False))
    if huge and table.get("backing", "anon") != "shmem":
        raise PerfsimError(f"{lab}: shmem_huge = true applies to backing = 'shmem' only, not "
                           f"{table.get('backing', 'anon')!r}")
    return huge


SPACE_KEYS = ("backing", "thp", "folio_size", "hugepage_size", "populate", "guard_below_src",
              "guard_below_dst")


def implicit_space(v: dict, target: Target, old_addr: int, old_len: int,
                   new_addr: int | None, lab: Label, cpus: int) -> AddressSpace:
    """One source VMA: the page-aligned range ``[old_addr, old_addr + old_len)`` (one page
    for old_len 0, so the kernel's own EINVAL is what the user sees), huge-page aligned for
    hugetlb; an unaligned old_addr gets an aligned VMA and the kernel's EINVAL."""
    arch = target.arch
    page, top = arch.page_size, arch.user_va_top
    hugepage_size = _hugepage_size(v["hugepage_size"], lab("hugepage_size"), arch)
    if hugepage_size and v["backing"] != "hugetlb":
        raise PerfsimError(f"{lab('hugepage_size')} needs --backing hugetlb")
    vma_start = old_addr - old_addr % page
    vma_len = max(_align(old_addr + old_len, page) - vma_start, page)
    if v["backing"] == "hugetlb":
        h = hugepage_size or arch.pmd_size
        vma_len = max(_align(vma_len, h), h)
    guard_dst = None
    if v["guard_below_dst"]:
        if new_addr is None:
            raise PerfsimError("--guard-below-dst needs a destination (--new-addr, or drop "
                               "--no-fixed)")
        guard_dst = new_addr - new_addr % page
        if guard_dst < page:
            raise PerfsimError("--guard-below-dst: no room below the destination")
    if vma_start + vma_len > top:
        raise PerfsimError(f"{lab('old_addr')}: the source VMA would end beyond TASK_SIZE {top:#x}")
    return single_move_space(
        target, src=vma_start, length=vma_len, backing=v["backing"], thp=bool(v["thp"]),
        populate=_population(v["populate"], v["seed"], lab("populate")),
        guard_below_src=bool(v["guard_below_src"]), guard_below_dst=guard_dst, cpus=cpus,
        hugepage_size=hugepage_size, folio_size=_folio_size(v["folio_size"], lab("folio_size")),
        guard_src_touched=False)


def _check_stack(v: dict, old_addr: int, new_addr: int | None, lab: Label) -> None:
    clash = [f for f in ("new_len", "dontunmap") if v[f]] + ([] if v["fixed"] else ["fixed"])
    if clash:
        names = ", ".join("--no-fixed" if c == "fixed" else lab(c) for c in clash)
        raise PerfsimError(f"--for-stack plans exec's relocate_vma_down, which takes no {names}")
    if new_addr is None or new_addr >= old_addr:
        raise PerfsimError(f"--for-stack: the stack moves down, so new_addr must lie below "
                           f"old_addr (old_addr {old_addr:#x}, new_addr "
                           f"{'unset' if new_addr is None else hex(new_addr)})")


def _cpus(v: dict, lab: Label) -> int:
    cpus = v["cpus"]
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= MAX_CPUS:
        raise PerfsimError(f"{lab('cpus')}: must be an integer from 1 to {MAX_CPUS} (the "
                           f"largest NR_CPUS a kernel can be built with), got {cpus!r}")
    return cpus


def resolve(v: dict, origin: dict[str, str], lab: Label) -> Resolved:
    """Turn the merged settings (defaults ← file ← options) into target, space and call."""
    target = target_of(v, lab)
    if v["cost_profile"]:
        _profile(str(v["cost_profile"]), lab("cost_profile"))
    arch = target.arch
    if v["old_len"] is None:
        raise PerfsimError("--old-len is required (or 'old_len' in the request file), e.g. "
                           "--old-len 1G")
    old_len = _size_within(v, "old_len", lab, target)
    new_len = _size_within(v, "new_len", lab, target)
    a, b = default_bases(arch)
    bases = {"A": a, "B": b}
    old_addr = a if v["old_addr"] is None else parse_address(v["old_addr"], bases=bases,
                                                             what=lab("old_addr"))
    new_addr = b if v["fixed"] else None
    if v["new_addr"] is not None:
        new_addr = parse_address(v["new_addr"], bases=bases, what=lab("new_addr"))
    top, page = arch.user_va_top, arch.page_size
    _check_range(lab("old_addr"), old_addr, _align(old_len, page), lab("old_len"), top,
                 arch.name)
    if new_addr is not None:
        _check_range(lab("new_addr"), new_addr,
                     _align(old_len if new_len is None else new_len, page),
                     lab("new_len") if new_len is not None else lab("old_len"), top, arch.name)
    cpus = _cpus(v, lab)
    if v["fail_alloc_at"] is not None and v["fail_alloc_at"] < 1:
        raise PerfsimError(f"{lab('fail_alloc_at')}: must be >= 1 (1 = the first allocation), "
                           f"got {v['fail_alloc_at']}")
    if v["for_stack"]:
        _check_stack(v, old_addr, new_addr, lab)
    if v.get("vma"):
        mixed = [k for k in SPACE_KEYS if origin.get(k, "default") != "default"]
        if mixed:
            raise PerfsimError(f"{', '.join(lab(k) for k in mixed)}: not with [[vma]] tables / "
                               "--vma, which describe the whole address space (give it per VMA)")
        space = build_space(target, vma_specs(v["vma"], target, bases, v["seed"], lab), cpus=cpus)
    else:
        space = implicit_space(v, target, old_addr, old_len, new_addr, lab, cpus)
    if v.get("mmap_base") is not None:
        space = _with_mmap_base(space, v["mmap_base"], bases, lab)
    for text in v.get("dontneed") or ():
        space = _dontneed(target, space, text, bases, lab)
    request = MoveRequest(old_addr=old_addr, old_len=old_len, new_len=new_len, new_addr=new_addr,
                          maymove=bool(v["maymove"]),
                          fixed=bool(v["fixed"]) and not v["for_stack"],
                          dontunmap=bool(v["dontunmap"]), for_stack=bool(v["for_stack"]),
                          fail_alloc_at=v["fail_alloc_at"])
    settings = dict(v, old_addr=old_addr, old_len=old_len, new_len=new_len, new_addr=new_addr,
                    cpus=cpus, populate=str(v["populate"]),
                    written_before=parse_size(v["written_before"], what=lab("written_before")))
    return Resolved(target, space, request, settings, origin)


def _with_mmap_base(space: AddressSpace, given, bases: dict[str, int], lab: Label
                    ) -> AddressSpace:
    """The space with ``mmap_base`` set: a page-aligned address inside user space."""
    arch = space.arch
    base = parse_address(given, bases=bases, what=lab("mmap_base"))
    if base % arch.page_size or not 0 < base <= arch.user_va_top:
        raise PerfsimError(f"{lab('mmap_base')}: must be a page-aligned address in (0, "
                           f"{arch.user_va_top:#x}] ({arch.name}), got {base:#x}")
    return replace(space, mmap_base_addr=base)


def _dontneed(target: Target, space: AddressSpace, text: str, bases: dict[str, int],
              lab: Label) -> AddressSpace:
    """The space after ``madvise(START, SIZE, MADV_DONTNEED)`` of a ``START:SIZE`` range
    (:func:`perfsim.planner.madvise.madvise_dontneed`): a page-aligned start, a size of at
    least a page, inside user space."""
    from perfsim.planner.madvise import madvise_dontneed

    arch = target.arch
    start_text, sep, size_text = str(text).rpartition(":")
    if not sep or not start_text or not size_text:
        raise PerfsimError(f"{lab('dontneed')}: {text!r} is not START:SIZE, e.g. A+2M:4M")
    start = parse_address(start_text, bases=bases, what=f"{lab('dontneed')} start")
    size = parse_size(size_text, what=f"{lab('dontneed')} size")
    if start % arch.page_size or size <= 0:
        raise PerfsimError(f"{lab('dontneed')}: {text!r}: the start must be page aligned and "
                           f"the size at least a page ({arch.page_size} bytes)")
    _check_range(lab("dontneed"), start, _align(size, arch.page_size), lab("dontneed"),
                 arch.user_va_top, arch.name)
    return madvise_dontneed(target, space, start, size).space


def labeller(origin: dict[str, str]) -> Label:
    """How a key is named in messages: ``--key`` for an option or a default, ``FILE: key``
    for a request file's key."""
    def label(key: str) -> str:
        src = origin.get(key)
        if src is None or src in ("cli", "default"):
            return "--" + key.replace("_", "-")
        return f"{src}: {key}"
    return label
