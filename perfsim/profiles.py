"""Architecture geometry and kernel profiles, as validated data.

An :class:`ArchProfile` says how the page tables of one architecture configuration are laid
out (page, PMD and PUD sizes, number of levels), whether it selects ``HAVE_MOVE_PMD`` /
``HAVE_MOVE_PUD``, and how it flushes TLBs. A :class:`KernelProfile` says what one kernel
version decides (realignment, rmap-lock rules, PTE batching, multi-VMA moves). A
:class:`Target` is the pair the planner works on. Both are loaded from TOML files shipped in
``perfsim/data`` (or given by path) and may be varied field by field for what-if studies
with :meth:`Target.with_changes`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from perfsim.errors import PerfsimError, describe_validation
from perfsim.schema import Address, StrictModel, load_model

_Frozen = StrictModel


class X86Tlb(_Frozen):
    """x86-64 ``flush_tlb_mm_range`` policy (docs/kernel-rules.md, TLB flush policy, T1–T7)."""

    kind: Literal["x86"] = "x86"
    single_page_flush_ceiling: int = Field(33, ge=0)
    """More than this many stride pages in one request → one full (PCID) flush."""
    freed_tables_ipi_lazy: bool = True
    """``flush_tlb_range`` passes ``freed_tables``: lazy-TLB CPUs are IPI'd too."""
    invlpgb: bool = False
    """AMD broadcast invalidation with a global ASID replaces IPIs (T6)."""
    pti: bool = False
    """Page-table isolation doubles per-page invalidations."""


class Arm64Tlb(_Frozen):
    """arm64 ``__flush_tlb_range`` policy (docs/kernel-rules.md, TLB flush policy, T8–T9)."""

    kind: Literal["arm64"] = "arm64"
    max_dvm_ops: int = Field(512, ge=1)
    tlbirange: bool = False
    max_tlbi_range_pages: int = Field(2097152, ge=1)


class RiscvTlb(_Frozen):
    """riscv ``flush_tlb_range`` policy: per-page up to a threshold, else whole ASID."""

    kind: Literal["riscv"] = "riscv"
    flush_all_threshold: int = Field(64, ge=0)


TlbPolicy = Annotated[X86Tlb | Arm64Tlb | RiscvTlb, Field(discriminator="kind")]


class ArchProfile(_Frozen):
    """Page-table geometry and TLB policy of one architecture configuration."""

    name: str
    description: str = ""
    page_shift: int = Field(ge=12, le=16)
    pmd_shift: int
    pud_shift: int
    p4d_shift: int
    pgd_shift: int
    levels: int = Field(ge=3, le=5)
    user_va_top: Address = Field(gt=0)
    have_move_pmd: bool = True
    have_move_pud: bool = True
    split_pmd_ptlocks: bool = True
    pud_lock_is_mm_lock: bool = True
    contpte_entries: int = Field(1, ge=1)
    tlb: TlbPolicy

    @model_validator(mode="after")
    def _check_shifts(self) -> ArchProfile:
        if not (self.page_shift < self.pmd_shift < self.pud_shift <= self.p4d_shift <= self.pgd_shift):
            raise ValueError("shifts must satisfy page < pmd < pud <= p4d <= pgd")
        if (self.pmd_shift - self.page_shift) != (self.page_shift - 3):
            raise ValueError("a PTE table must fill one page: pmd_shift - page_shift == page_shift - 3")
        if self.user_va_top % (1 << self.page_shift):
            raise ValueError(f"user_va_top {self.user_va_top:#x} must be page aligned; allowed: "
                             f"a multiple of {1 << self.page_shift:#x}")
        top = 1 << (self.pgd_shift + self.page_shift - 3)  # what a full top-level table maps
        if self.user_va_top > top:
            raise ValueError(f"user_va_top {self.user_va_top:#x} is above what {self.levels} "
                             f"levels map; allowed: at most {top:#x}")
        return self

    # Derived sizes, in bytes.
    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def pmd_size(self) -> int:
        return 1 << self.pmd_shift

    @property
    def pud_size(self) -> int:
        return 1 << self.pud_shift

    @property
    def ptrs_per_pte(self) -> int:
        return 1 << (self.pmd_shift - self.page_shift)

    @property
    def pud_folded(self) -> bool:
        """With 3 levels the PUD table *is* the PGD: it always exists, never allocated."""
        return self.levels < 4

    @property
    def p4d_folded(self) -> bool:
        return self.levels < 5


class StableChange(_Frozen):
    """A decision a stable release of the line changed: releases before ``since`` (the
    line's ``MAJOR.MINOR.PATCH``) had ``before`` for ``field``; the profile's own value is
    the line's from ``since`` on."""

    since: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)],
                 Annotated[int, Field(ge=1)]]
    field: str
    before: bool | str


class KernelProfile(_Frozen):
    """What one kernel version decides in ``mremap()`` (docs/kernel-rules.md, Versions)."""

    name: str
    description: str = ""
    version: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]
    realign_pmd: bool
    """``try_realign_addr(pmc, PMD_MASK)`` (6.7+)."""
    realign_pud: bool = False
    """What-if only: a PUD-level realignment the kernel does not have."""
    realign_reach_pmd: bool = True
    """Realign only when the range reaches the next PMD boundary (rule R4a). What-if knob."""
    realign_for_stack_relaxation: bool = True
    """``can_align_down`` permits in-VMA alignment for the exec stack (R4d)."""
    rmap_locks_always_for_normal_moves: bool = True
    """NORMAL_PMD/PUD moves always take rmap locks (2021 fix, S26)."""
    pte_batching: Literal["none", "folio", "hint"] = "none"
    """``mremap_folio_pte_batch``: none (pre-6.17), folio (f822a9a81a31), hint (6.17 gate)."""
    multi_vma_move: bool = False
    file_large_folios: bool = False
    """A regular file's page cache is kept in large folios, so a file VMA advised
    MADV_HUGEPAGE (``Vma.thp``) is read ahead in PMD-order folios (``do_sync_mmap_readahead``,
    ``page_cache_ra_order``), and a truncation inside one splits it, unmapping every PTE of
    it (R25a): ext4 from 6.16 ("ext4: enable large folio for regular file"; xfs had them
    from 5.18, not modelled apart). False before."""
    shmem_huge_any_vma: bool = False
    """shmem gives a MADV_HUGEPAGE VMA PMD-size folios (``huge=advise``) even where the VMA
    cannot map them by PMD (too small, or its address not congruent with the file offset):
    no ``shmem_suitable_orders`` check (added in 6.11 with shmem mTHP), so a truncation
    inside such a folio splits it and unmaps all of it (R25a). True for 6.1-6.7."""
    zap_pte_batching: bool = False
    """``zap_present_ptes`` batches the consecutive present PTEs of one large folio
    (``folio_pte_batch``) and clears them as one (``zap_present_folio_ptes``: one rmap
    removal, one ``__tlb_remove_folio_pages`` gather entry of two slots): 6.9+ ("mm/memory:
    optimize unmap/zap with PTE-mapped THP"). False before: one PTE per step (6.1, 6.6,
    6.7). R24a."""
    anon_thp_align: Literal["none", "any_length", "pmd_span", "pmd_multiple"] = "pmd_multiple"
    """Where ``get_unmapped_area`` puts a private anonymous range the kernel chooses the
    address of (an mremap growth that cannot stay in place, DONTUNMAP without an address;
    :mod:`perfsim.planner.unmapped_area`):

    * ``none``: the plain top-down search (6.1.176; 6.6, assumed: the alignment is a 6.7
      feature and no stable backport of it was found);
    * ``any_length``: every such range goes through ``thp_get_unmapped_area`` with the
      ``pgoff`` mremap passes (the VMA's own, so a range of at least a PMD lands congruent
      with where it was): "mm: align larger anonymous mappings on THP boundaries"
      (efa7df3e3bb5), in 6.7 as released (a report of January 2024 reverts it "on top of
      6.7" and quotes that form; "mm: thp_get_unmapped_area must honour topdown
      preference", January 2024, then zeroed ``pgoff`` for anonymous memory: if a 6.7.y
      stable release took it, its ranges start on a PMD boundary instead); not read in a
      6.7 source;
    * ``pmd_span``: every such range goes through ``thp_get_unmapped_area`` with ``pgoff``
      taken as 0, so one of at least a PMD, whatever its length, starts on a PMD boundary
      (the hint kept where the padded range is free there): 6.8 to 6.10, and 6.11 before
      6.11.7 ("mm: thp_get_unmapped_area must honour topdown preference" zeroed ``pgoff``
      for anonymous memory in 6.8; the 6.10/6.11 form, ``thp_get_unmapped_area_vmflags``
      under ``IS_ENABLED(CONFIG_TRANSPARENT_HUGEPAGE)`` alone, is what the 6.12-rc patch
      below edits; docs/kernels.md);
    * ``pmd_multiple``: only a length that is a whole number of PMDs, without a hint, with
      ``pgoff`` taken as 0, so the range starts on a PMD boundary (6.12.117 and 7.3.4's
      ``__get_unmapped_area``: "mm, mmap: limit THP alignment of anonymous mappings to
      PMD-aligned sizes", d4148aeab412, 6.12-rc, pushed to linux-6.11.y on 2024-11-06,
      and the no-hint condition of late 2024)."""
    thp_honours_topdown: bool = True
    """``__thp_get_unmapped_area`` on a top-down mm takes a padded start that is already
    congruent one PMD higher, so the padding lies below the range ("mm:
    thp_get_unmapped_area must honour topdown preference", January 2024, for 6.8, the patch
    that also made ``pgoff`` 0 for anonymous memory): 6.12.117 and 7.3.4 do; 6.1.176 does
    not, nor 6.6 and 6.7 as released (false)."""
    uffd_checks_new_vma: bool = False
    uffd_wp_table_move_gate: Literal["none", "move_page_tables", "move_normal"] = "move_normal"
    """Where ``mremap()`` keeps a VMA registered for uffd write-protect without the remap
    event from moving whole page tables (so that ``move_ptes`` can clear its uffd-wp bits):

    * ``none``: nowhere; such a VMA's PMD/PUD tables move whole and keep their uffd-wp
      bits (6.1, 6.6, 6.7: before "mm: clear uffd-wp PTE/PMD state on mremap()",
      0cef0bb836e3, 6.13, which reached 6.12.11 and no older stable line);
    * ``move_page_tables``: a condition of the loop, tested before ``move_pgt_entry`` is
      called for NORMAL_PUD/NORMAL_PMD, so no attempt is made and no rmap lock is taken
      (6.12.117's ``uffd_supports_move``);
    * ``move_normal``: inside ``move_normal_pmd``/``move_normal_pud``, after
      ``move_pgt_entry`` took the rmap locks: the attempt is made and refused (mainline
      from 6.13; ``uffd_supports_page_table_move`` in 7.2/7.3)."""
    freed_tables_in_flush_range: bool = True
    arm64_tlbi_range_limit: Literal["ge", "gt", "gt_if_tlbirange"] = "gt_if_tlbirange"
    """When arm64 ``__flush_tlb_range`` flushes the whole ASID because the range is too long
    for range TLBIs, counting the range in base pages (whatever the stride):

    * ``ge``: at ``MAX_TLBI_RANGE_PAGES`` base pages or more, on every system (6.1.176;
      6.6 and 6.7, before 73301e464a72);
    * ``gt``: only above ``MAX_TLBI_RANGE_PAGES``, on every system ("arm64: tlb: Allow
      range operation for MAX_TLBI_RANGE_PAGES", 73301e464a72, 6.10; 6.12.117's
      ``__flush_tlb_range_nosync``);
    * ``gt_if_tlbirange``: above ``MAX_TLBI_RANGE_PAGES``, and only with FEAT_TLBIRANGE;
      without it only the ``MAX_DVM_OPS`` stride limit applies
      (``__flush_tlb_range_limit_excess``: absent in 6.12.117, present in 7.2.12/7.3.4)."""
    supports_move_pmd: bool = True
    supports_move_pud: bool = True
    platform: Literal["bare-metal", "kvm-guest"] = "kvm-guest"
    """What the kernel runs on, where that changes flushes or IPIs (x86):

    * ``kvm-guest``: a KVM guest with paravirtual TLB flush (``KVM_FEATURE_PV_TLB_FLUSH``,
      set up by ``kvm_guest_init``). Remote flushes go through ``kvm_flush_tlb_multi``,
      which sends no IPI to a preempted vCPU (it marks it to flush on re-entry instead);
      and page-table pages are freed through the mmu_gather table batch
      (``tlb_remove_table``), whose filling forces a flush (``tlb_table_flush``).
    * ``bare-metal``: a real machine, or an emulated one (QEMU's TCG offers no paravirtual
      interface). Every CPU in ``mm_cpumask`` gets its IPI. Before
      :attr:`rcu_table_free_on_bare_metal` kernels, page-table pages are freed as ordinary
      pages (``native_tlb_remove_table`` -> ``tlb_remove_page``): no flush when a table
      batch fills, only when the gather runs out of page batches.

    The default is ``kvm-guest``: the machine perfsim's host measurements come from (and on
    6.15+ kernels both platforms free tables the same way)."""
    rcu_table_free_on_bare_metal: bool = True
    """x86 frees page tables through the RCU table batch on bare metal too: from 6.14 when
    ``CONFIG_PT_RECLAIM`` (default y on x86-64) made ``native_tlb_remove_table`` call
    ``tlb_remove_table``, and unconditionally from 6.15 ("x86/mm: make
    MMU_GATHER_RCU_TABLE_FREE unconditional"). False for 6.13 and older."""

    pt_reclaim: Literal["none", "x86", "rcu_table_free"] = "rcu_table_free"
    """Where ``MADV_DONTNEED`` frees a PTE table it emptied whole (``CONFIG_PT_RECLAIM``:
    ``zap_pte_range`` with ``zap_details.reclaim_pt``, when the zap of one VMA covers the
    table's whole PMD range; docs/kernel-rules.md R27):

    * ``none``: nowhere; the table stays, empty (6.13 and older: 6.1.176 and 6.12.117 have
      no ``reclaim_pt``);
    * ``x86``: on x86-64 only ("mm: pgtable: reclaim empty PTE page in
      madvise(MADV_DONTNEED)", 6.14, for ``ARCH_SUPPORTS_PT_RECLAIM``, which only x86
      selects; Debian's 6.16.12, 6.17.13 and 6.18.15 amd64 configs have
      ``CONFIG_PT_RECLAIM=y``, and so has this project's 6.18.44 machine, where a whole-PMD
      ``MADV_DONTNEED`` lowers ``VmPTE`` by 4 kB);
    * ``rcu_table_free``: on every architecture with ``MMU_GATHER_RCU_TABLE_FREE`` (x86-64,
      arm64, RISC-V SMP: 7.3.4's ``mm/Kconfig``, where ``PT_RECLAIM`` depends on it and on
      no ``HAVE_ARCH_TLB_REMOVE_TABLE``; "mm: make PT_RECLAIM depends on
      MMU_GATHER_RCU_TABLE_FREE", queued for 7.0)."""

    stable_changes: tuple[StableChange, ...] = ()
    """What the line's stable releases changed (the profile is the line as of its newest
    release read or dated): :meth:`at_release` gives an earlier release's decisions."""

    @model_validator(mode="after")
    def _check_stable_changes(self) -> KernelProfile:
        for c in self.stable_changes:
            if tuple(c.since[:2]) != tuple(self.version):
                raise ValueError(f"stable_changes: since {'.'.join(map(str, c.since))} is not "
                                 f"a release of {self.version[0]}.{self.version[1]}")
            if c.field in ("name", "description", "version", "stable_changes") or \
                    c.field not in type(self).model_fields:
                raise ValueError(f"stable_changes: {c.field!r} is not a decision field of "
                                 "a kernel profile")
        return self

    def at_release(self, patch: int) -> KernelProfile:
        """The decisions of the line's release ``MAJOR.MINOR.patch``: each stable change
        made after it undone. The profile itself where none was; else a copy named after
        the release."""
        undone = {c.field: c.before for c in sorted(self.stable_changes,
                                                     key=lambda c: c.since, reverse=True)
                  if c.since[2] > patch}
        if not undone:
            return self
        doc = self.model_dump()
        doc.update(undone, name=f"{self.version[0]}.{self.version[1]}.{patch}",
                   stable_changes=[])
        return type(self)(**doc)

    @property
    def tables_freed_through_batch(self) -> bool:
        """Do freed page-table pages go through ``tlb_remove_table`` (so that a full
        ``mmu_table_batch`` of ``MAX_TABLE_BATCH`` pages forces a flush)?"""
        return self.platform == "kvm-guest" or self.rcu_table_free_on_bare_metal

    @property
    def ipi_skips_preempted_vcpus(self) -> bool:
        """Does a remote flush skip CPUs whose vCPU is preempted (``kvm_flush_tlb_multi``)?"""
        return self.platform == "kvm-guest"


class Target(_Frozen):
    """A kernel profile on an architecture: everything the planner needs to decide."""

    arch: ArchProfile
    kernel: KernelProfile

    @property
    def have_move_pmd(self) -> bool:
        return self.arch.have_move_pmd and self.kernel.supports_move_pmd

    @property
    def have_move_pud(self) -> bool:
        return self.arch.have_move_pud and self.kernel.supports_move_pud and self.arch.levels > 2

    @property
    def pt_reclaim(self) -> bool:
        """Does ``MADV_DONTNEED`` free the PTE tables it empties whole on this target
        (:attr:`KernelProfile.pt_reclaim`)?"""
        where = self.kernel.pt_reclaim
        return where == "rcu_table_free" or (where == "x86" and self.arch.tlb.kind == "x86")

    @cached_property
    def digest(self) -> str:
        """Content hash (sha256, 16 hex digits) of the effective profile, for provenance."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_changes(self, **changes: Any) -> Target:
        """Return a copy with fields changed, validated. Keys are ``kernel.X``, ``arch.X``,
        ``arch.tlb.X`` or a bare field name found in exactly one of them."""
        kern = self.kernel.model_dump()
        arch = self.arch.model_dump()
        for key, value in changes.items():
            path = key.split(".")
            if path[0] == "kernel" and len(path) == 2 and path[1] in kern:
                kern[path[1]] = value
            elif path[0] == "arch" and len(path) == 2 and path[1] in arch:
                arch[path[1]] = value
            elif path[:2] == ["arch", "tlb"] and len(path) == 3 and path[2] in arch["tlb"]:
                arch["tlb"][path[2]] = value
            elif len(path) == 1 and path[0] in kern:
                kern[path[0]] = value
            elif len(path) == 1 and path[0] in arch:
                arch[path[0]] = value
            elif len(path) == 1 and path[0] in arch["tlb"]:
                arch["tlb"][path[0]] = value
            else:
                valid = sorted(
                    [f"kernel.{k}" for k in kern]
                    + [f"arch.{k}" for k in arch if k != "tlb"]
                    + [f"arch.tlb.{k}" for k in arch["tlb"]]
                )
                raise PerfsimError(f"unknown profile field {key!r}; valid fields: {', '.join(valid)}")
        try:
            return Target(arch=ArchProfile(**arch), kernel=KernelProfile(**kern))
        except ValidationError as exc:
            raise PerfsimError(_one_line(exc)) from None


def _data_names(sub: str) -> list[str]:
    return list(builtin_names(sub))


@functools.cache
def builtin_names(sub: str) -> tuple[str, ...]:
    """The names of the built-in profiles in ``perfsim/data/<sub>`` (their ``.toml`` files),
    sorted. Listed once per process: they are files of the installed package, not the
    user's, and listing the folder through ``importlib.resources`` took ~60 us, asked ~7
    times by every run of a workload (2026-12-02)."""
    folder = resources.files("perfsim") / "data" / sub
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml")))


def arch_names() -> list[str]:
    return _data_names("arch")


def _version_key(name: str) -> tuple[int, ...]:
    """``"6.19"`` -> ``(6, 19)``: a kernel profile's name in version order."""
    return tuple(int(x) for x in name.split("."))


def kernel_names() -> list[str]:
    names = _data_names("kernels")
    return sorted(names, key=_version_key)


def _one_line(exc: ValidationError, root=None) -> str:
    return describe_validation(exc, root)


@functools.lru_cache(maxsize=64)
def _parse_builtin(text: str, model: type[_Frozen], what: str, origin: str):
    """``load_model(text, model, what, origin=origin)``, once per distinct text: a profile
    is a frozen value of its text alone, so every run that names a built-in profile shares
    one (a run used to parse its arch and kernel profiles, ~0.15 ms each, twice: once for
    the workload's default cost profile, once for its target). The text is read each
    time, so an edited file is parsed again; a text that fails raises each time (nothing
    is cached for it)."""
    return load_model(text, model, what, origin=origin)


def _load(sub: str, name_or_path: str, model: type[_Frozen], names: list[str], what: str):
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a name ({', '.join(names)}) or a path to a .toml "
                        f"file, got {name_or_path!r} ({type(name_or_path).__name__})")
    path = Path(name_or_path)
    if name_or_path in names:
        text = (resources.files("perfsim") / "data" / sub / f"{name_or_path}.toml").read_text()
        return _parse_builtin(text, model, what, f"built-in {what} {name_or_path!r}")
    if path.suffix == ".toml" and path.exists():  # a directory or unreadable: said so
        return load_model(path, model, what)
    raise PerfsimError(f"unknown {what} {name_or_path!r}; valid names: {', '.join(names)} "
                       "(or a path to a .toml file)")


def load_arch(name_or_path: str) -> ArchProfile:
    """Load an architecture by built-in name (``x86_64``, ``arm64-4k``, ...) or TOML path."""
    return _load("arch", name_or_path, ArchProfile, arch_names(), "arch")


#: a kernel release as ``uname -r`` prints it: ``6.18.44``, ``6.12.117+deb13-amd64``,
#: ``6.8.0-45-generic``, ``7.0-rc3``
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?([-+~_].*)?")


def release_patch(name) -> int | None:
    """The patch level of a kernel release name where it says one: ``6.12.5`` -> 5,
    ``6.13.7-200.fc41.x86_64`` -> 7, ``6.11.0`` -> 0; None for a line alone (``6.12``) and
    for a distribution's ``X.Y.0-N`` (Ubuntu's numbering: its ``.0`` is not the stable
    release its kernel carries)."""
    m = isinstance(name, str) and _RELEASE.fullmatch(name)
    if not m or m[3] is None or (m[3] == "0" and (m[4] or "")[:1] == "-"
                                 and m[4][1:2].isdigit()):
        return None
    return int(m[3])


def kernel_series(name) -> str | None:
    """``"MAJOR.MINOR"`` of a kernel release name (``"6.8.0-45-generic"`` -> ``"6.8"``),
    or None when ``name`` is not shaped like one (a path, a typo)."""
    if not isinstance(name, str):
        return None
    m = _RELEASE.fullmatch(name)
    return f"{int(m[1])}.{int(m[2])}" if m else None


def profile_name(name) -> str:
    """The built-in kernel profile ``name`` stands for: ``name`` itself where a profile has
    that name; a release of a series with a profile (what ``uname -r`` prints on the
    machine measured: ``6.18.44``, ``6.12.117+deb13-amd64``) that series' profile, which
    is the series as of the newest stable release read (docs/kernels.md: where a stable
    release changed a decision, the profile's comment says from which); else ``name``
    unchanged (a path, or a version without a profile, which :func:`load_kernel` refuses)."""
    names = builtin_names("kernels")
    if name in names:
        return name
    series = kernel_series(name)
    return series if series in names else name


def load_kernel(name_or_path: str) -> KernelProfile:
    """Load a kernel profile by built-in name (``6.6``, ``6.18``, ...), by a release of
    a series that has one (``6.18.44``: :func:`profile_name`) or by TOML path. An unknown
    version between two profiles says which two (docs/kernels.md says what changed between
    them)."""
    names = kernel_names()
    release = name_or_path
    name_or_path = profile_name(name_or_path)
    try:
        profile = _load("kernels", name_or_path, KernelProfile, names, "kernel profile")
        patch = release_patch(release) if name_or_path != release else None
        return profile if patch is None else profile.at_release(patch)
    except PerfsimError as exc:
        hint = between_profiles(name_or_path, names)
        if hint is None:
            raise
        raise PerfsimError(f"{exc}; {hint}") from None


def between_profiles(name, names: list[str] | None = None) -> str | None:
    """``"V lies between the profiles A and B (...)"`` for a version ``V`` with no profile
    of its own between two that have one, else None (a user of 7.1 is told of 6.19 and 7.3)."""
    got = _bracket(name, kernel_names() if names is None else names)
    if got is None:
        return None
    return (f"{name} lies between the profiles {got[0]} and {got[1]} (docs/kernels.md: "
            "what changed between them)")


def _bracket(name, names: list[str]) -> tuple[str, str] | None:
    """The profiles just below and just above the version ``name`` (``MAJOR.MINOR``, or a
    release of that series: :func:`kernel_series`), or None when it is not such a version
    or not between two of ``names`` (in version order)."""
    series = kernel_series(name)
    if series is None:
        return None
    v = _version_key(series)
    below = [n for n in names if _version_key(n) < v]
    above = [n for n in names if _version_key(n) > v]
    return (below[-1], above[0]) if below and above else None


def resolve_target(kernel: str = "6.18", arch: str = "x86_64") -> Target:
    """The :class:`Target` for a kernel profile and an architecture, by name or path."""
    return _target_of(load_arch(arch), load_kernel(kernel))


@functools.lru_cache(maxsize=64)
def _target_of(arch: ArchProfile, kernel: KernelProfile) -> Target:
    """``Target(arch=arch, kernel=kernel)``, one per distinct pair of (frozen, equal by
    value) profiles, so that its :attr:`Target.digest` (a JSON dump and a hash, ~0.15 ms)
    is computed once, not once per run."""
    return Target(arch=arch, kernel=kernel)
