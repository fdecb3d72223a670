"""Cost profiles: how many nanoseconds each kernel operation takes, with provenance.

A profile is a TOML file (``perfsim/data/cost/<name>.toml`` or any path) validated into a
:class:`CostProfile`. Every parameter is a :class:`CostParam`: a value in integer
nanoseconds, optionally a distribution around it (per-row jitter, see
:mod:`perfsim.cost.sampling`), and a ``source`` string saying where the number came from
(an anchor A1–A12 of ``docs/kernel-rules.md`` §7, or the command and machine that measured it).

The parameter set is fixed (:data:`PARAM_NAMES`); a profile must give every one of them, so a
typo or a forgotten number fails at load time with the field's name, except a parameter
added after profiles were written (:data:`FALLBACKS`: ``zap_huge_pmd_ns``), which an older
file may leave out: it gets a documented fallback made from the file's own numbers and
:attr:`CostProfile.fallbacks` names it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from perfsim.errors import PerfsimError, describe_validation
from perfsim.profiles import builtin_names
from perfsim.schema import DurationNs, StrictModel, load_model

#: Every cost parameter, with the one-line meaning shown in docs and errors.
PARAM_DOCS: dict[str, str] = {
    # fixed work around move_page_tables
    "syscall_ns": "do_mremap fixed work: entry/exit, checks, mmap_lock, vma_lookup, copy_vma "
                  "(once per call; an unmap it makes is unmap_ns)",
    "unmap_ns": "do_vmi_munmap's VMA work for a range that holds a mapping: a move's source, "
                "a mapped MREMAP_FIXED destination, a shrink's tail (once per do_vmi_munmap row)",
    "zap_pte_ns": "zap one present PTE (unmap_vmas)",
    "extent_ns": "one move_page_tables loop step: cond_resched, get_extent, table walk "
                 "(every MOVE/REVERT extent, skips included)",
    # PTE path
    "move_ptes_call_ns": "one move_ptes call: map both PTE tables, lazy-MMU enter/leave",
    "pte_present_ns": "move one present PTE (get_and_clear, move_pte, set_ptes of 1)",
    "pte_empty_ns": "walk one empty (none) PTE slot in move_ptes",
    "contpte_pte_ns": "each further PTE of a multi-PTE batch (arm64 contpte; unused on x86)",
    "hugetlb_entry_ns": "move one hugetlb entry (move_huge_pte)",
    # page-table entry moves
    "pmd_move_ns": "move_normal_pmd body: clear source, set destination (locks, flush excluded)",
    "pud_move_ns": "move_normal_pud / move_huge_pud body (locks, flush excluded)",
    "thp_move_ns": "move_huge_pmd body incl. deposit withdraw (locks, flush excluded)",
    "thp_split_ns": "split_huge_pmd of an anonymous THP incl. its own flush",
    # page-table pages
    "table_alloc_ns": "allocate and install one page-table page (p4d/pud/pmd/pte)",
    "table_free_ns": "free one page-table page (free_pgtables)",
    # TLB
    "tlb_flush_call_ns": "flush_tlb_mm_range bookkeeping (tlb_gen, flush info), once per flush",
    "tlb_invlpg_ns": "one per-page invalidation (INVLPG / TLBI VAE1IS) on the local CPU",
    "tlb_full_flush_ns": "one full PCID/ASID flush on the local CPU (refill cost excluded)",
    "ipi_round_trip_ns": "sender's wait for a shootdown IPI to one other CPU (send + ack)",
    "ipi_extra_target_ns": "sender's extra wait per additional IPI target",
    "ipi_wakeup_ns": "sender's extra wait, once per call that sends IPIs, for targets that were "
                     "idle (a halted vCPU must be woken by the hypervisor before it acks)",
    "ipi_receiver_ns": "time stolen on each IPI target: interrupt entry/exit + flush_tlb_func "
                       "overhead (the target's own invalidations are added on top)",
    # locks
    "rmap_acquire_ns": "down_write of one rmap rwsem, uncontended",
    "rmap_release_ns": "up_write of one rmap rwsem, uncontended",
    "ptl_ns": "lock + unlock of one page-table spinlock, uncontended",
    "notifier_pair_ns": "mmu_notifier invalidate_range start + end with no subscribers",
    # first flush (appended last: jitter is drawn in this order, so older draws keep their values)
    "tlb_first_flush_ns": "once per call, on its first TLB flush: the work a call pays only when "
                          "it changes a mapping at all (first PCID flush, gather set-up; fitted "
                          "per machine, not separable in the published anchors)",
    # large-folio mechanisms (appended last, like tlb_first_flush_ns; perfsim.cost.batching)
    "folio_lookup_ns": "one vm_normal_folio + folio_test_large in mremap_folio_pte_batch, per "
                       "batch it looks up (6.17 gate 'folio'; gate 'hint' on arm64 contpte "
                       "only): reads the folio's struct page, usually a cache miss",
    "contpte_unfold_ns": "one contpte_try_unfold of a source contiguous block (arm64, 6.9+, "
                         "PTE-by-PTE clearing before 6.17): repaint 16 PTEs + range TLBI + DSB",
    "contpte_fold_ns": "one contpte_try_fold of a destination block (arm64, 6.9+, PTE-by-PTE "
                       "writes before 6.17): check the block, repaint it + range TLBI + DSB",
    # appended last, like the ones above
    "zap_huge_pmd_ns": "zap one PMD-mapped THP whole (zap_huge_pmd: clear the PMD, free the "
                       "deposited page table, drop the rmap and the mm counters; the folio "
                       "freed by tlb_finish_mmu; R24)",
}
PARAM_NAMES: tuple[str, ...] = tuple(PARAM_DOCS)


MAX_PARAM_NS = 10**12
"""The largest cost of one operation a profile may give (1000 s): the model sums costs times
counts in 64-bit integers, and ``ns = 99999999999999999999`` ended in an OverflowError
traceback (a large value below 2**63 would wrap round silently)."""


class CostParam(StrictModel):
    """One cost: ``ns`` (integer nanoseconds) and how it varies.

    ``dist``:
      * ``fixed`` — always ``ns``;
      * ``lognormal`` — median ``ns``, log-space standard deviation ``sigma``;
      * ``normal`` — mean ``ns``, standard deviation ``sigma * ns``, truncated to
        ``[0, 2 * ns]`` (so the mean stays ``ns``).
    ``source`` names where the number came from (required, non-empty).
    """

    ns: DurationNs = Field(le=MAX_PARAM_NS)
    dist: Literal["fixed", "lognormal", "normal"] = "fixed"
    sigma: float = Field(0.0, ge=0.0, le=3.0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _sigma_matches_dist(self) -> CostParam:
        if self.dist == "fixed" and self.sigma != 0.0:
            raise ValueError("sigma must be 0 (or omitted) when dist = 'fixed'")
        if self.dist != "fixed" and self.sigma == 0.0:
            raise ValueError(f"dist = {self.dist!r} needs sigma > 0")
        return self

    @property
    def is_fixed(self) -> bool:
        return self.dist == "fixed"


class CostParams(StrictModel):
    """The full parameter set; every field is required."""

    syscall_ns: CostParam
    unmap_ns: CostParam
    zap_pte_ns: CostParam
    extent_ns: CostParam
    move_ptes_call_ns: CostParam
    pte_present_ns: CostParam
    pte_empty_ns: CostParam
    contpte_pte_ns: CostParam
    hugetlb_entry_ns: CostParam
    pmd_move_ns: CostParam
    pud_move_ns: CostParam
    thp_move_ns: CostParam
    thp_split_ns: CostParam
    table_alloc_ns: CostParam
    table_free_ns: CostParam
    tlb_flush_call_ns: CostParam
    tlb_invlpg_ns: CostParam
    tlb_full_flush_ns: CostParam
    ipi_round_trip_ns: CostParam
    ipi_extra_target_ns: CostParam
    ipi_wakeup_ns: CostParam
    ipi_receiver_ns: CostParam
    rmap_acquire_ns: CostParam
    rmap_release_ns: CostParam
    ptl_ns: CostParam
    notifier_pair_ns: CostParam
    tlb_first_flush_ns: CostParam
    folio_lookup_ns: CostParam
    contpte_unfold_ns: CostParam
    contpte_fold_ns: CostParam
    zap_huge_pmd_ns: CostParam  #: optional in a file: :data:`FALLBACKS`

    @model_validator(mode="before")
    @classmethod
    def _fill_fallbacks(cls, data):
        """A profile written before a parameter of :data:`FALLBACKS` existed gets its
        documented fallback (marked by :data:`FALLBACK_MARK` in its ``source``)."""
        if not isinstance(data, dict):
            return data
        for name, (fallback, _why) in FALLBACKS.items():
            if name not in data:
                got = fallback(data)
                if got is not None:
                    data = {**data, name: got}
        return data


assert tuple(CostParams.model_fields) == PARAM_NAMES

#: The PTEs a zap row counted for a whole huge PMD before ``zap_huge_pmd_ns`` existed (a
#: 2 MiB PMD of 4 KiB pages; every shipped profile's arch but arm64-16k/64k).
OLD_PTES_PER_HUGE_PMD = 512

#: What a parameter's ``source`` starts with when the profile did not give it and
#: :data:`FALLBACKS` did (:attr:`CostProfile.fallbacks` lists them).
FALLBACK_MARK = "fallback, not in the profile: "


def _zap_huge_pmd_fallback(params: dict) -> dict | None:
    """``zap_huge_pmd_ns`` of a profile that predates it: 512 × its ``zap_pte_ns``, with
    the same distribution, which is exactly what a whole-PMD zap cost before (its 512
    PTEs at ``zap_pte_ns`` each). None when ``zap_pte_ns`` is missing or malformed too (its
    own validation then names it)."""
    pte = params.get("zap_pte_ns")
    if not isinstance(pte, dict) or isinstance(pte.get("ns"), bool) \
            or not isinstance(pte.get("ns"), int):
        return None
    ns = OLD_PTES_PER_HUGE_PMD * pte["ns"]
    if ns > MAX_PARAM_NS:
        raise ValueError(f"zap_huge_pmd_ns is not given, and its fallback, "
                         f"{OLD_PTES_PER_HUGE_PMD} x zap_pte_ns = {ns} ns, is above the "
                         f"{MAX_PARAM_NS} ns a parameter may cost: give zap_huge_pmd_ns")
    out = {"ns": ns, "source": FALLBACK_MARK + FALLBACKS["zap_huge_pmd_ns"][1]}
    for key in ("dist", "sigma"):
        if key in pte:
            out[key] = pte[key]
    return out


#: Parameters a profile file may leave out, added after it was first written: name ->
#: (the fallback made from the file's other parameters, what it is). docs/cost-model.md,
#: "Cost profile files".
FALLBACKS: dict = {
    "zap_huge_pmd_ns": (_zap_huge_pmd_fallback,
                        "512 x zap_pte_ns, the price of a whole-PMD THP zap before "
                        "zap_huge_pmd_ns (2026-12-02): its 512 PTEs at zap_pte_ns each; "
                        "measured on one KVM guest it is ~20x the kernel's (docs/"
                        "calibration.md, 'Zapping written memory'): give zap_huge_pmd_ns"),
}


class ColdCache(StrictModel):
    """What a call costs extra when the caller's own memory traffic just before it evicted
    the kernel's working set from the CPU caches (optional ``[cold_cache]`` table).

    Not a kernel function: a property of the machine's caches, charged once per call.
    Evidence (docs/calibration.md, "The cold-cache cost"): on the project's KVM guest the
    same 2 MiB PMD move takes ~11 us right after populating it and ~25-50 us when the
    program wrote 64 MiB of other memory first; an unpopulated move goes from 3 to ~39 us.
    The charge grows linearly with the bytes the caller wrote just before the call (for a
    freshly populated source: the bytes it populated, which the kernel zeroed) and saturates
    at ``saturation_bytes``: ``ns * min(1, touched_bytes / saturation_bytes)``.

    Kernel versions: any (it is not a kernel rule); fitted by ``perfsim calibrate`` from
    C-timed latencies only, where the caller's traffic before a call is known.
    """

    ns: DurationNs
    saturation_bytes: int = Field(gt=0)
    source: str = Field(min_length=1)

    def charge_ns(self, touched_bytes: int) -> int:
        """The extra ns of one call after the caller wrote ``touched_bytes``."""
        if touched_bytes <= 0:
            return 0
        return round(self.ns * min(1.0, touched_bytes / self.saturation_bytes))


class CostProfile(StrictModel):
    """A named set of costs for one architecture.

    ``ipi_shootdown``: remote TLBs are invalidated by IPIs (x86-64, riscv) rather than by
    hardware broadcast (arm64 TLBI ...IS); the engine and :func:`~perfsim.cost.predict` use it
    to derive IPI fan-out from the number of CPUs in the mm.
    """

    name: str = Field(min_length=1)
    description: str = ""
    arch: str = Field(min_length=1)
    archs: tuple[str, ...] = Field(min_length=1)
    ipi_shootdown: bool = True
    machine: str = ""
    params: CostParams
    cold_cache: ColdCache | None = None  #: optional; see :class:`ColdCache`

    @model_validator(mode="before")
    @classmethod
    def _default_archs(cls, data):
        """A profile without ``archs`` is for every built-in arch of its ISA family
        (``arch = "arm64"`` → arm64-4k, arm64-16k, arm64-64k)."""
        if isinstance(data, dict) and "archs" not in data and isinstance(data.get("arch"), str):
            fam = data["arch"]
            data = {**data, "archs": tuple(n for n in _arch_names()
                                           if n == fam or n.startswith(fam + "-"))}
        return data

    @field_validator("archs")
    @classmethod
    def _known_archs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = _arch_names()
        bad = [a for a in v if a not in names]
        if bad:
            raise ValueError(f"unknown arch {bad[0]!r}; valid: {', '.join(names)}")
        return v

    def is_for(self, arch_name: str) -> bool:
        """True when the profile declares ``arch_name`` among its :attr:`archs`."""
        return arch_name in self.archs

    def param(self, name: str) -> CostParam:
        return getattr(self.params, name)

    def value(self, name: str) -> int:
        return self.param(name).ns

    @functools.cached_property
    def is_fixed(self) -> bool:
        """True when no parameter has jitter: every run of one plan takes the same time
        (computed once: a profile is frozen)."""
        return all(self.param(n).is_fixed for n in PARAM_NAMES)

    @functools.cached_property
    def medians_ns(self) -> tuple[int, ...]:
        """Every parameter's ``ns`` as a plain int, in :data:`PARAM_NAMES` order: what a
        jitter-free pricing multiplies (read once per profile, not once per plan)."""
        return tuple(int(self.param(n).ns) for n in PARAM_NAMES)

    @functools.cached_property
    def fallbacks(self) -> tuple[str, ...]:
        """The parameters this profile did not give, priced by their :data:`FALLBACKS`
        (the profile predates them)."""
        return tuple(n for n in FALLBACKS if self.param(n).source.startswith(FALLBACK_MARK))

    @functools.cached_property
    def digest(self) -> str:
        """Content hash (sha256, 16 hex digits) for provenance (computed once: a profile is
        frozen; every simulation records it). A parameter filled by its fallback is left
        out, so a file that predates it hashes as it always did."""
        data = self.model_dump(mode="json")
        if data.get("cold_cache") is None:  # profiles without one hash as they always did
            data.pop("cold_cache", None)
        for name in self.fallbacks:
            data["params"].pop(name, None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def model_copy(self, *, update=None, deep: bool = False) -> CostProfile:
        """pydantic's copy, without the values computed once from the fields
        (:attr:`is_fixed`, :attr:`medians_ns`, :attr:`digest`): an ``update`` may change
        them."""
        copied = super().model_copy(update=update, deep=deep)
        for name in _COMPUTED_ONCE:
            copied.__dict__.pop(name, None)
        return copied

    def with_values(self, **ns: int) -> CostProfile:
        """A copy with some parameters' ``ns`` replaced (what-if studies, tests). A
        parameter the profile got from its fallback (:attr:`fallbacks`) is made again from
        the changed values unless it is given itself (then it is the what-if's value)."""
        data = self.model_dump()
        for name in self.fallbacks:
            if name in ns:
                data["params"][name]["source"] = "a what-if value (the profile predates it)"
            else:
                del data["params"][name]
        for k, v in ns.items():
            if k not in data["params"]:
                raise PerfsimError(f"unknown cost parameter {k!r}; valid: {', '.join(PARAM_NAMES)}")
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise PerfsimError(f"cost parameter {k!r}: {v!r} is not a finite number of "
                                   "nanoseconds")
            data["params"][k]["ns"] = int(v)
        return _validate(data, f"cost profile {self.name!r} with changes")

    def cold_cache_ns(self, touched_bytes: int) -> int:
        """:meth:`ColdCache.charge_ns` of this profile's ``[cold_cache]`` (0 without one)."""
        return self.cold_cache.charge_ns(touched_bytes) if self.cold_cache else 0

    def fixed(self) -> CostProfile:
        """A copy with every distribution collapsed to its ``ns`` (no jitter)."""
        data = self.model_dump()
        for p in data["params"].values():
            p["dist"], p["sigma"] = "fixed", 0.0
        return _validate(data, f"cost profile {self.name!r} (fixed)")


#: :class:`CostProfile`'s cached properties (computed once from a frozen profile).
_COMPUTED_ONCE = ("is_fixed", "medians_ns", "digest", "fallbacks")


def _cost_dir():
    return resources.files("perfsim") / "data" / "cost"


def cost_profile_names() -> list[str]:
    """Names of the built-in cost profiles (listed once per process:
    :func:`perfsim.profiles.builtin_names`)."""
    return list(builtin_names("cost"))


def _param_hint(err: dict) -> str:
    """What a missing cost parameter is (its documentation)."""
    loc = err["loc"]
    if err["type"] == "missing" and len(loc) == 2 and loc[0] == "params":
        return f" ({PARAM_DOCS.get(str(loc[1]), '')})"
    return ""


def _one_line(exc: ValidationError) -> str:
    return describe_validation(exc, CostProfile, hint=_param_hint)


def _describe(exc: ValidationError, origin: str) -> str:
    return f"{origin}: {_one_line(exc)}"


def _validate(data: dict, origin: str) -> CostProfile:
    return load_model(data, CostProfile, "cost profile", origin=origin, describe=_describe)


def parse_cost_profile(text: str, origin: str = "<string>") -> CostProfile:
    """Validate TOML text into a :class:`CostProfile`; raise :class:`PerfsimError` naming the
    field on any problem.

    Memoised on ``(text, origin)`` (the last 64 distinct pairs used): the same text gives the
    same frozen profile, so a run that asks for its default profile several times
    (``default_cost_profile`` then ``load_cost_profile``) validates it once. A profile's
    fields are immutable (tuples, strings, frozen models) and its computed-once values depend
    only on them, so sharing one instance is invisible to callers. A text that fails is not
    remembered: it is validated, and raises the same one-line error, on every call."""
    return _parse_cost_profile(text, origin)


@functools.lru_cache(maxsize=64)
def _parse_cost_profile(text: str, origin: str) -> CostProfile:
    return load_model(text, CostProfile, "cost profile", origin=origin, describe=_describe)


def _arch_names() -> list[str]:
    from perfsim.profiles import arch_names

    return arch_names()


def _looks_like_path(key: str) -> bool:
    return key.endswith(".toml") or "/" in key or key.startswith(".")


def load_cost_profile(name_or_path: str | Path | CostProfile) -> CostProfile:
    """Load a built-in cost profile by name (``x86_64-generic``, ``arm64-generic``,
    ``kvm-host``, ...) or a TOML path.

    An unknown name raises :class:`PerfsimError` listing the valid names; a path that does not
    exist (or is a directory, unreadable, not UTF-8) says so in one line naming the file.
    """
    if isinstance(name_or_path, CostProfile):
        return name_or_path
    names = cost_profile_names()
    key = str(name_or_path)
    if key in names:
        text = (_cost_dir() / f"{key}.toml").read_text()
        return parse_cost_profile(text, f"built-in cost profile {key!r}")
    path = Path(key)
    if isinstance(name_or_path, Path) or _looks_like_path(key) or path.exists():
        return load_model(path, CostProfile, "cost profile", describe=_describe)
    raise PerfsimError(f"unknown cost profile {key!r}; valid names: {', '.join(names)} "
                       "(or a path to a .toml file)")


def default_cost_profile(arch_name: str) -> str:
    """The built-in cost profile used for ``arch_name`` when none is given: the
    ``*-generic`` profile declaring it (x86_64 → ``x86_64-generic``, arm64-4k →
    ``arm64-generic``). An arch no built-in profile is for is a :class:`PerfsimError`."""
    names = cost_profile_names()
    # The generic profiles first (in name order), then the others: the first that is for the
    # arch is the answer, so the rest are never parsed (each parse is milliseconds, and
    # every workload loaded asks).
    for n in [n for n in names if n.endswith("-generic")] + \
            [n for n in names if not n.endswith("-generic")]:
        if load_cost_profile(n).is_for(arch_name):
            return n
    raise PerfsimError(f"no built-in cost profile is for arch {arch_name!r} (profiles: "
                       + ", ".join(f"{n} ({'/'.join(load_cost_profile(n).archs)})"
                                   for n in names)
                       + "); give one with --cost-profile")


def default_cost_profile_of(data: dict) -> dict:
    """``data`` (a workload's or scenario's parsed table) with ``cost_profile`` set to its
    ``arch``'s default (:func:`default_cost_profile`) when it gives none; an ``arch`` given as
    a path is read for its name. For model validators (``mode="before"``)."""
    if not isinstance(data, dict) or data.get("cost_profile") is not None:
        return data
    from perfsim.profiles import load_arch

    arch = data.get("arch", "x86_64")
    if not isinstance(arch, str):
        return data  # the arch field's own validation says what is wrong
    return {**data, "cost_profile": default_cost_profile(load_arch(arch).name)}


def resolve_cost_profile(name_or_path: str | Path | CostProfile | None, *,
                         arch: str | None = None, force: bool = False) -> CostProfile:
    """The cost profile to price moves on ``arch`` (an arch profile's name) with.

    ``None`` → :func:`default_cost_profile` of ``arch``. A profile that does not declare
    ``arch`` among its ``archs`` is refused with one line unless ``force`` (its costs were
    measured or derived for another architecture: a what-if, not a prediction)."""
    if name_or_path is None:
        if arch is None:
            raise PerfsimError("resolve_cost_profile: give a cost profile or an arch")
        return load_cost_profile(default_cost_profile(arch))
    prof = load_cost_profile(name_or_path)
    if arch is not None and not force and not prof.is_for(arch):
        try:
            alt = f"; the default for {arch} is {default_cost_profile(arch)}"
        except PerfsimError:
            alt = ""
        raise PerfsimError(f"cost profile {prof.name!r} is for {', '.join(prof.archs)}, not "
                           f"{arch}{alt} (force it with --force-cost-profile)")
    return prof
