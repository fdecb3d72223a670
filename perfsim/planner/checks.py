"""``mremap()``'s checks as pure functions, one per kernel function or predicate (R22).

Each takes the call state (:class:`~perfsim.planner.vma_remap.VmaRemap`) and answers
``None`` (go on) or a :class:`Refusal` naming the errno the kernel returns and why. Some
update the state as the kernel does (``check_prep_vma`` sets ``delta`` and
``remap_type``); none touches the address space. The order in which the syscall layer
calls them is the kernel's, so which errno wins is the kernel's too.

Versions read (``mm/mremap.c``): 6.6 (``do_mremap``/``mremap_to``/``vma_to_resize``) and
the ``vma_remap_struct`` version of 6.15/6.16 (``check_mremap_params`` gains the
destination alignment and map-count tests, before the VMA lookup) and the 6.17 rework as
6.18 has it (``check_mremap_params`` holds every argument check,
``check_prep_vma`` every per-VMA check, ``remap_move`` moves several VMAs;
``vma_multi_allowed`` trusts shmem, hugetlb and ``thp_get_unmapped_area``, and an
ineligible first VMA followed by others is refused before anything moves). perfsim's 6.17
and 6.18 profiles take the same path. Kernels before 6.15 run
:func:`check_mremap_params_pre617`, 6.15/6.16 :func:`check_mremap_params_615`, both then
:func:`mremap_to_checks_pre617`; the
per-VMA checks of ``vma_to_resize`` are the same predicates as ``check_prep_vma``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.vma import Vma
from perfsim.planner.vma_remap import EXPAND, NO_RESIZE, SHRINK, VmaRemap


@dataclass(frozen=True)
class Refusal:
    """The kernel refuses the call: ``errno`` (``"EINVAL"``...) and a one-line reason."""

    errno: str
    why: str


def page_align(n: int, page: int) -> int:
    """``PAGE_ALIGN``."""
    return (n + page - 1) // page * page


def vrm_implies_new_addr(vrm: VmaRemap) -> bool:
    """``vrm_implies_new_addr``: ``MREMAP_FIXED`` or ``MREMAP_DONTUNMAP`` (6.15+; the same
    test is inline in earlier kernels): the caller's ``new_addr`` is used."""
    return vrm.fixed or vrm.dontunmap


def vrm_overlaps(vrm: VmaRemap) -> bool:
    """``vrm_overlaps``: do ``[addr, addr + old_len)`` and ``[new_addr, new_addr + new_len)``
    intersect?"""
    return vrm.addr + vrm.old_len > vrm.new_addr and vrm.new_addr + vrm.new_len > vrm.addr


def vrm_remap_type(vrm: VmaRemap) -> str:
    """``vrm_remap_type``: no resize, shrink or expand."""
    if vrm.old_len == vrm.new_len:
        return NO_RESIZE
    return SHRINK if vrm.old_len > vrm.new_len else EXPAND


def vrm_will_map_new(vrm: VmaRemap) -> bool:
    """``vrm_will_map_new`` (6.17+): an expand or a move maps new address space."""
    return vrm.remap_type == EXPAND or vrm_implies_new_addr(vrm)


def vrm_move_only(vrm: VmaRemap) -> bool:
    """``vrm_move_only`` (6.17+): ``MREMAP_FIXED`` with an unchanged length takes
    ``remap_move``, which may span several VMAs. Kernels without multi-VMA moves never do."""
    return vrm.target.kernel.multi_vma_move and vrm.fixed and vrm.old_len == vrm.new_len


def map_count_ok_before_unmaps(vrm: VmaRemap) -> Refusal | None:
    """``check_mremap_params``'s (6.17+; ``mremap_to``'s before) map-count test: the two
    unmaps a fixed move may do can each split a VMA, so ``map_count + 2`` must stay below
    ``max_map_count - 3``."""
    if vrm.map_count + 2 >= vrm.max_map_count - 3:
        return Refusal("ENOMEM", f"map count {vrm.map_count} + 2 is not below "
                                 f"vm.max_map_count {vrm.max_map_count} - 3")
    return None


def _flags_addr_new_len(vrm: VmaRemap) -> Refusal | None:
    """The first three checks of ``check_mremap_params`` since 6.15: unknown flags, an
    unaligned ``addr``, a zero ``new_len`` (EINVAL)."""
    if vrm.extra_flags:
        return Refusal("EINVAL", "unknown flags")
    if vrm.addr % vrm.page_size:
        return Refusal("EINVAL", "old_addr is not page aligned")
    if vrm.new_len == 0:
        return Refusal("EINVAL", "new_len is 0")
    return None


def _new_addr_flags(vrm: VmaRemap) -> Refusal | None:
    """``check_mremap_params``' checks of a call with a ``new_addr`` since 6.15: aligned,
    MAYMOVE given, DONTUNMAP without a resize (EINVAL)."""
    if vrm.new_addr % vrm.page_size:
        return Refusal("EINVAL", "new_addr is not page aligned")
    if not vrm.maymove:
        return Refusal("EINVAL", "MREMAP_FIXED/MREMAP_DONTUNMAP require MREMAP_MAYMOVE")
    if vrm.dontunmap and vrm.old_len != vrm.new_len:
        return Refusal("EINVAL", "MREMAP_DONTUNMAP requires old_len == new_len")
    return None


def check_mremap_params(vrm: VmaRemap) -> Refusal | None:
    """``check_mremap_params`` (6.17, 6.18): every check that needs no VMA, in order.

    Unknown flags, an unaligned ``addr``, a zero ``new_len`` (after ``PAGE_ALIGN``) and a
    ``new_len`` beyond ``TASK_SIZE`` are EINVAL for every call; the rest applies only when
    the call has a ``new_addr`` (FIXED or DONTUNMAP): ``new_addr`` within ``TASK_SIZE`` and
    page aligned, ``MAYMOVE`` given, DONTUNMAP without a resize, no overlap (EINVAL), then
    the map-count headroom (ENOMEM).
    """
    first = _flags_addr_new_len(vrm)
    if first is not None:
        return first
    if vrm.new_len > vrm.task_size:
        return Refusal("EINVAL", "new_len exceeds TASK_SIZE")
    if not vrm_implies_new_addr(vrm):
        return None
    if vrm.new_addr > vrm.task_size - vrm.new_len:
        return Refusal("EINVAL", "new range beyond TASK_SIZE")
    dest = _new_addr_flags(vrm)
    if dest is not None:
        return dest
    if vrm_overlaps(vrm):
        return Refusal("EINVAL", "source and destination overlap")
    return map_count_ok_before_unmaps(vrm)


def check_mremap_params_pre617(vrm: VmaRemap, raw_old_len: int, raw_new_len: int) -> Refusal | None:
    """``do_mremap``'s argument checks of 6.6–6.14, before the VMA lookup:
    unknown flags, FIXED without MAYMOVE, DONTUNMAP without MAYMOVE or with a resize (on the
    lengths as passed), an unaligned ``addr``, a zero ``new_len`` after ``PAGE_ALIGN``.
    The destination checks are :func:`mremap_to_checks_pre617`'s, after the lookup."""
    if vrm.extra_flags:
        return Refusal("EINVAL", "unknown flags")
    if vrm.fixed and not vrm.maymove:
        return Refusal("EINVAL", "MREMAP_FIXED requires MREMAP_MAYMOVE")
    if vrm.dontunmap and (not vrm.maymove or raw_old_len != raw_new_len):
        return Refusal("EINVAL", "MREMAP_DONTUNMAP requires MREMAP_MAYMOVE and old_len == new_len")
    if vrm.addr % vrm.page_size:
        return Refusal("EINVAL", "old_addr is not page aligned")
    if vrm.new_len == 0:
        return Refusal("EINVAL", "new_len is 0")
    return None


def check_mremap_params_615(vrm: VmaRemap) -> Refusal | None:
    """``check_mremap_params`` as the ``vma_remap_struct`` rework first had it (6.15, 6.16):
    unknown flags, unaligned ``addr``, zero ``new_len``; then, with FIXED or DONTUNMAP, an
    unaligned ``new_addr``, no MAYMOVE, DONTUNMAP with a resize (EINVAL) and the map-count
    headroom (ENOMEM) — all before the VMA lookup; the ``TASK_SIZE`` and overlap tests stay
    in ``mremap_to`` (:func:`mremap_to_checks_pre617` with ``vrm_checks=True``)."""
    first = _flags_addr_new_len(vrm)
    if first is not None:
        return first
    if not vrm_implies_new_addr(vrm):
        return None
    dest = _new_addr_flags(vrm)
    if dest is not None:
        return dest
    return map_count_ok_before_unmaps(vrm)


def mremap_to_checks_pre617(vrm: VmaRemap, *, vrm_checks: bool = False) -> Refusal | None:
    """``mremap_to``'s first checks before 6.17: (6.6–6.14 only: ``new_addr`` aligned) the
    new range within ``TASK_SIZE``, no overlap (EINVAL), (6.6–6.14 only: the map-count
    headroom, ENOMEM). ``vrm_checks``: 6.15/6.16, where :func:`check_mremap_params_615`
    already made the others."""
    if not vrm_checks and vrm.new_addr % vrm.page_size:
        return Refusal("EINVAL", "new_addr is not page aligned")
    if vrm.new_len > vrm.task_size or vrm.new_addr > vrm.task_size - vrm.new_len:
        return Refusal("EINVAL", "new range beyond TASK_SIZE")
    if vrm_overlaps(vrm):
        return Refusal("EINVAL", "source and destination overlap")
    return None if vrm_checks else map_count_ok_before_unmaps(vrm)


def align_hugetlb(vrm: VmaRemap) -> Refusal | None:
    """``align_hugetlb`` (6.15+; inline in ``do_mremap`` before): round both lengths up to
    the huge page size; the addresses must be huge-page aligned and the mapping may not
    grow (EINVAL)."""
    vma = vrm.vma
    h = vma.hugepage_size or vrm.target.arch.pmd_size
    vrm.old_len, vrm.new_len = page_align(vrm.old_len, h), page_align(vrm.new_len, h)
    if vrm.addr % h or vrm.new_addr % h:
        return Refusal("EINVAL", "hugetlb addresses must be huge-page aligned")
    if vrm.new_len > vrm.old_len:
        return Refusal("EINVAL", "hugetlb mappings cannot grow")
    return None


def is_shared(vma: Vma) -> bool:
    """``VM_SHARED | VM_MAYSHARE``: shmem, file and hugetlb VMAs are modelled as shared
    mappings, anonymous ones as private."""
    return vma.backing != "anon"


def vma_range_checks(vrm: VmaRemap) -> Refusal | None:
    """The per-VMA checks for a call that maps new space (``check_prep_vma``'s second half,
    6.17+; ``vma_to_resize`` before): duplicating a private mapping (``old_len == 0``) is
    EINVAL; the range kept (``new_len`` for a shrink) must not cross the VMA's end (EFAULT).
    A growing range's remaining tests (pgoff overflow, ``VM_DONTEXPAND``/``VM_PFNMAP``,
    mlock and ``may_expand_vm`` limits) cannot fail on the mappings perfsim models."""
    vma = vrm.vma
    if vrm.old_len == 0 and not is_shared(vma):
        return Refusal("EINVAL", "old_len 0 duplicates only shared mappings")
    kept = vrm.new_len if vrm.remap_type == SHRINK else vrm.old_len
    if kept > vma.end - vrm.addr:
        return Refusal("EFAULT", "old range is not inside one VMA")
    return None


def check_prep_vma(vrm: VmaRemap) -> Refusal | None:
    """``check_prep_vma`` (6.17, 6.18): a VMA at ``addr`` (EFAULT), hugetlb alignment, then
    ``delta``/``remap_type``; when the call maps new space, :func:`vma_range_checks`.
    Without FIXED/DONTUNMAP ``new_addr`` is set to ``addr`` (the kernel's convenience)."""
    if vrm.vma is None:
        return Refusal("EFAULT", "no VMA at old_addr")
    if vrm.vma.is_hugetlb and (r := align_hugetlb(vrm)):
        return r
    vrm.delta = abs(vrm.old_len - vrm.new_len)
    vrm.remap_type = vrm_remap_type(vrm)
    if not vrm_implies_new_addr(vrm):
        vrm.new_addr = vrm.addr
    if not vrm_will_map_new(vrm):
        return None
    return vma_range_checks(vrm)


def vma_multi_allowed(vma: Vma) -> bool:
    """``vma_multi_allowed`` (6.17+): may this VMA be one of several moved by one call?
    Not when userfaultfd-armed (the uffd notification would have to drop the mmap lock), nor
    for a file whose ``f_op->get_unmapped_area`` is not known to obey MREMAP_FIXED. Known
    good: none at all, shmem, hugetlb and ``thp_get_unmapped_area``, which is what ext4,
    xfs, btrfs, ext2, fuse and erofs files use (7.3.4's ``fs/``), so perfsim's ``file``
    backing (a regular file) may be moved with others. Refused, and not expressible here:
    ramfs, procfs and device files with handlers of their own. (6.17's first form trusted
    only shmem and hugetlb besides no handler; ``thp_get_unmapped_area`` was added by a
    patch posted for 6.17 in August 2025, before its -rc1, and is taken as in 6.17.) Held
    against 6.18.44 here: ext4 and tmpfs files split in two by ``mprotect`` move in one
    call (docs/groundtruth.md, the ``files`` grid)."""
    return not vma.userfaultfd_armed


def prep_move_vma(vrm: VmaRemap) -> Refusal | None:
    """``prep_move_vma`` (6.15+; the head of ``move_vma`` before): the copy may add one VMA
    and the source unmap split another, so ``map_count`` must be below
    ``max_map_count - 3`` (ENOMEM). ``may_split`` and KSM unmerging cannot fail here."""
    if vrm.map_count >= vrm.max_map_count - 3:
        return Refusal("ENOMEM", f"map count {vrm.map_count} is not below "
                                 f"vm.max_map_count {vrm.max_map_count} - 3")
    return None


def vma_expandable(vrm: VmaRemap) -> bool:
    """``vma_expandable``: nothing is mapped in ``[vm_end, vm_end + delta)`` and the grown
    VMA still fits below ``TASK_SIZE`` (``get_unmapped_area`` with MAP_FIXED)."""
    vma = vrm.vma
    end = vma.end + vrm.delta
    if end > vrm.task_size:
        return False
    i, j = vrm.space.intersecting_span(vma.end, end)
    return i == j  # (nothing mapped there)


def vrm_can_expand_in_place(vrm: VmaRemap) -> bool:
    """``vrm_can_expand_in_place``: the range ends exactly at the VMA's end and the VMA can
    grow there."""
    return vrm.vma.end - vrm.addr == vrm.old_len and vma_expandable(vrm)
