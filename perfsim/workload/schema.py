"""The workload file (``workloads/*.toml``), validated.

A workload says *who* calls ``mremap()`` (processes, their threads and the CPUs they run on),
*what* they ask for (streams of requests drawn from distributions, explicit calls, or a
recorded trace), *when* (arrival process), and *who else* is around (rmap walkers, user
threads that TLB-shootdown IPIs interrupt). See ``docs/workloads.md`` for every key.

Everything is checked when the file is read: unknown keys, wrong types, values out of range,
names that refer to nothing, and impossible layouts (overlapping VMAs, a request outside its
VMA). Every problem is one :class:`~perfsim.errors.PerfsimError` whose message names the file,
the field (``streams[0].size.min``) and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from perfsim.errors import describe_validation, read_toml
from perfsim.schema import Address, DurationNs, SizeBytes, StrictModel, load_model
from perfsim.workload.dist import CategoryDist, DurationDist, NumDist, SizeDist

BACKINGS = ("anon", "shmem", "file", "hugetlb")
ALIGNS = ("pud", "pmd", "page", "random")
DST_ALIGNS = ("same", "pud", "pmd", "page", "random")
OPS = ("move", "grow", "stack")

_Model = StrictModel

MAX_USER_ADDRESS = 1 << 56
"""No shipped arch has a user address range above 2**56 (the largest ``user_va_top`` of
``perfsim/data/arch``, x86-64 with LA57); a VMA ending above it exists on none."""
MAX_POPULATED_BYTES = 4 << 40
"""The most bytes of one VMA faulted in (``size * populate``): the simulated page tables
take memory in proportion to them."""


# --------------------------------------------------------------------------- processes
class VmaBase(_Model):
    """A VMA ``[start, start + size)``, the keys every VMA table has (a workload's
    ``[[processes.vmas]]``, a scenario's, in the same words)."""

    name: str = Field(min_length=1)
    start: Address
    size: SizeBytes = Field(gt=0)
    backing: Literal["anon", "shmem", "file", "hugetlb"] = "anon"
    file: str | None = None
    """rmap identity: the file (``i_mmap_rwsem``) or anon family (``anon_vma``); default: name."""
    thp: bool = False
    populate: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of its pages faulted in."""

    @model_validator(mode="after")
    def _placed(self) -> VmaBase:
        """Page aligned, inside the largest user address space of any shipped arch, and
        not more faulted in than the simulator can hold (its page tables take memory in
        proportion to the bytes populated: 16T took 1.9 GB on 2026-12-02, 1P ran out of
        memory)."""
        if self.start % 4096 or self.size % 4096:
            raise ValueError(f"start {self.start:#x} and size {self.size:#x} must be page "
                             "aligned; allowed: multiples of 4K")
        if self.end > MAX_USER_ADDRESS:
            raise ValueError(f"the VMA [{self.start:#x}, {self.end:#x}) ends above "
                             f"{MAX_USER_ADDRESS:#x}; allowed: an end inside the user address "
                             "range")
        if self.size * self.populate > MAX_POPULATED_BYTES:
            raise ValueError(f"populating {self.populate:g} of {self.size:#x} bytes is more "
                             f"than the simulator holds; allowed: at most "
                             f"{MAX_POPULATED_BYTES:#x} bytes (4T) faulted in per VMA (lower "
                             "populate or size)")
        return self

    @property
    def end(self) -> int:
        return self.start + self.size


class VmaSpec(VmaBase):
    """One VMA of an explicit layout: ``[start, start + size)``."""

    hugepage_size: SizeBytes = 0
    folio_size: SizeBytes = 0
    uffd_wp: bool = False


class Process(_Model):
    """One process (an mm): ``threads`` threads, thread *i* on CPU ``cpus[i % len(cpus)]``."""

    name: str = Field(min_length=1)
    threads: int = Field(1, ge=1, le=4096)
    cpus: list[int] | None = None
    """CPU of each thread; default: thread *i* on CPU *i* mod the machine's CPUs."""
    user_work: bool = True
    """Threads that issue no mremap run user work in quanta that IPIs interrupt."""
    quantum_ns: DurationNs = Field(100_000, gt=0)
    vmas: list[VmaSpec] = []

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v):
        if v is not None and (not v or any(c < 0 for c in v)):
            raise ValueError("cpus must be a non-empty list of CPU numbers >= 0")
        return v


# --------------------------------------------------------------------------- arrivals
class Closed(_Model):
    """Closed loop: the next call follows the previous one's return after ``think_ns``."""

    kind: Literal["closed"] = "closed"
    think_ns: DurationDist = 0


class Poisson(_Model):
    """Open loop: calls arrive at ``rate_per_s`` on average (exponential gaps); a call that
    arrives while the thread is still in the previous one starts when it returns."""

    kind: Literal["poisson"] = "poisson"
    rate_per_s: float = Field(ge=1e-6, le=1e12, allow_inf_nan=False)
    """Bounded so that the mean gap (``1e9 / rate_per_s`` ns) and its exponential draws fit
    the simulator's integer nanoseconds (a rate of 1e-300 overflowed them)."""


class Periodic(_Model):
    """One call every ``interval_ns`` (a GC cycle, a resize timer)."""

    kind: Literal["periodic"] = "periodic"
    interval_ns: DurationNs = Field(gt=0)


Arrival = typing.Annotated[Closed | Poisson | Periodic, Field(discriminator="kind")]


# --------------------------------------------------------------------------- streams
class _StreamBase(_Model):
    name: str = Field(min_length=1)
    process: str
    thread: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1, le=10_000_000)
    """Number of calls; default: as many as fit in the workload's ``duration_ns``."""
    arrival: Arrival = Closed()
    start_ns: DurationNs = 0


class SyntheticStream(_StreamBase):
    """Requests drawn from distributions; each call moves a freshly laid-out region."""

    kind: Literal["synthetic"] = "synthetic"
    op: CategoryDist(*OPS) = "move"
    """``move``: mremap(src, len, len, MAYMOVE|FIXED?, dst); ``grow``: mremap(src, len,
    len*growth, MAYMOVE) which expands in place or moves; ``stack``: exec's
    relocate_vma_down by ``shift``."""
    size: SizeDist = "2M"
    growth: NumDist = 2.0
    grow_in_place: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that the range after a growing block is free (no move needed)."""
    shift: SizeDist = "16M"
    """Stack only: how far the stack moves down (bytes, rounded up to pages)."""
    fixed: float = Field(1.0, ge=0.0, le=1.0)
    """Probability that a move passes MREMAP_FIXED with a chosen destination."""
    dontunmap: float = Field(0.0, ge=0.0, le=1.0)
    backing: CategoryDist(*BACKINGS) = "anon"
    file: str | None = None
    """rmap identity of the moved regions (file or anon family); default: the stream name.
    Walkers that name the same file contend with these moves."""
    thp: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a region is THP-backed (PMD-mapped where whole PMDs fit)."""
    populate: NumDist = 1.0
    """Fraction of pages faulted in (1.0: all)."""
    src_align: CategoryDist(*ALIGNS) = "page"
    """Source placement: 1 GiB-aligned, 2 MiB-aligned (not 1 GiB), a random page offset
    inside the PMD (not 0), or ``random`` (any page)."""
    dst_align: CategoryDist(*DST_ALIGNS) = "same"
    """Destination placement; ``same`` = mutually aligned with the source (same offset
    within the PMD, same class)."""
    guard_below_src: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of a VMA just below the source in its PMD (refuses realignment, E3)."""
    guard_below_dst: float = Field(0.0, ge=0.0, le=1.0)
    hugepage_size: SizeBytes = "2M"
    folio_size: SizeBytes = 0


class Call(_Model):
    """One explicit call. ``vma`` + ``offset`` or an absolute ``old_addr``."""

    op: Literal["mremap", "mmap", "munmap"] = "mremap"
    vma: str | None = None
    offset: SizeBytes = 0
    old_addr: Address | None = None
    old_len: SizeBytes = Field(gt=0)
    new_len: SizeBytes | None = None
    new_addr: Address | None = None
    fixed: bool = False
    maymove: bool = True
    dontunmap: bool = False
    for_stack: bool = False
    backing: Literal["anon", "shmem", "file", "hugetlb"] = "anon"
    """mmap only."""
    populate: float = Field(1.0, ge=0.0, le=1.0)
    """mmap only: fraction faulted in after the mmap."""
    at_ns: DurationNs | None = None
    """Issue time (traces); default: the stream's arrival process."""

    @model_validator(mode="after")
    def _where(self) -> Call:
        if self.op == "mremap" and (self.vma is None) == (self.old_addr is None):
            raise ValueError("give exactly one of vma (with offset) or old_addr")
        if self.op != "mremap" and self.old_addr is None:
            raise ValueError(f"{self.op} needs old_addr (the mapping's address)")
        if self.fixed and self.new_addr is None:
            raise ValueError("fixed = true needs new_addr")
        return self


class CallStream(_StreamBase):
    """Explicit calls, replayed in order against the process's evolving address space."""

    kind: Literal["calls"] = "calls"
    calls: list[Call] = Field(min_length=1)
    repeat: int = Field(1, ge=1)


class TraceStream(_StreamBase):
    """A recorded trace: a CSV of calls (``format = "csv"``) or raw ``strace`` output."""

    kind: Literal["trace"] = "trace"
    path: str
    """Relative to the workload file."""
    format: Literal["csv", "strace"] = "csv"
    populate: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of each mapping faulted in before it is moved (traces do not record it)."""
    timing: Literal["recorded", "arrival"] = "recorded"
    """``recorded``: keep the trace's timestamps; ``arrival``: use the arrival process."""
    thp_enabled: Literal["always", "madvise", "never"] = "madvise"
    """``/sys/kernel/mm/transparent_hugepage/enabled`` where the trace was recorded: which
    anonymous memory the program's faults map with THPs (``madvise``: only what it advised
    MADV_HUGEPAGE; ``always``: everything not advised MADV_NOHUGEPAGE)."""


def _default_kind(v: Any) -> Any:
    if isinstance(v, dict) and "kind" not in v:
        return {**v, "kind": "synthetic"}
    return v


Stream = typing.Annotated[SyntheticStream | CallStream | TraceStream,
                          Field(discriminator="kind"), BeforeValidator(_default_kind)]


# --------------------------------------------------------------------------- contenders
class Walker(_Model):
    """rmap walkers (reclaim, migration): each takes an rmap rwsem for read every
    ``interval_ns`` (mean of exponential gaps if ``poisson``) and holds it ``hold_ns``."""

    name: str = Field(min_length=1)
    file: str | None = None
    """Contend on ``i_mmap_rwsem`` of this file (a stream's or VMA's ``file``)."""
    anon: str | None = None
    """Contend on the ``anon_vma`` root rwsem of this anon family."""
    cpus: list[int] = Field(min_length=1)
    """One walker per CPU listed."""
    interval_ns: DurationNs = Field(gt=0)
    hold_ns: DurationNs = Field(gt=0)
    hold_sigma: float = Field(0.0, ge=0.0, le=3.0)
    poisson: bool = True

    @model_validator(mode="after")
    def _one_lock(self) -> Walker:
        if (self.file is None) == (self.anon is None):
            raise ValueError("give exactly one of file or anon (the rwsem the walker reads)")
        return self

    @property
    def lock(self) -> str:
        return f"i_mmap:{self.file}" if self.file is not None else f"anon_vma:{self.anon}"


# --------------------------------------------------------------------------- workload
class Workload(_Model):
    """A whole workload (see module docstring)."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    kernel: str = "6.18"
    arch: str = "x86_64"
    cost_profile: str
    """Name or path; if not given, the arch's own (:func:`perfsim.cost.default_cost_profile`:
    x86_64-generic on x86-64, arm64-generic on arm64)."""
    cpus: int = Field(1, ge=1, le=4096)
    """CPUs of the machine."""
    duration_ns: DurationNs | None = Field(None, gt=0)
    """Stop time; streams without ``count`` run until then. Default: until all finish."""
    processes: list[Process] = Field(min_length=1)
    streams: list[Stream] = Field(min_length=1)
    walkers: list[Walker] = []

    @model_validator(mode="before")
    @classmethod
    def _default_cost_profile(cls, data):
        from perfsim.cost.profile import default_cost_profile_of

        return default_cost_profile_of(data)

    @model_validator(mode="after")
    def _cross_check(self) -> Workload:
        _unique("processes", [p.name for p in self.processes])
        _unique("streams", [s.name for s in self.streams])
        _unique("walkers", [w.name for w in self.walkers])
        procs = {p.name: p for p in self.processes}
        for i, p in enumerate(self.processes):
            for c in p.cpus or []:
                if c >= self.cpus:
                    raise _FieldError(f"processes[{i}].cpus", f"CPU {c} does not exist",
                                      f"0..{self.cpus - 1} (the machine has cpus = {self.cpus})")
            _check_layout(i, p)
        for i, s in enumerate(self.streams):
            if s.process not in procs:
                raise _FieldError(f"streams[{i}].process", f"no process named {s.process!r}",
                                  ", ".join(procs))
            if s.thread >= procs[s.process].threads:
                raise _FieldError(f"streams[{i}].thread", f"thread {s.thread} does not exist",
                                  f"0..{procs[s.process].threads - 1}")
            if s.count is None and self.duration_ns is None and not isinstance(s, (CallStream, TraceStream)):
                raise _FieldError(f"streams[{i}].count", "a synthetic stream needs a count "
                                  "(or the workload a duration_ns)", "an integer >= 1")
            if isinstance(s, CallStream):
                _check_calls(i, s, procs[s.process])
            if isinstance(s, SyntheticStream):
                _check_synthetic(i, s)
        _check_open_loop(self)
        for i, w in enumerate(self.walkers):
            for c in w.cpus:
                if c >= self.cpus:
                    raise _FieldError(f"walkers[{i}].cpus", f"CPU {c} does not exist",
                                      f"0..{self.cpus - 1}")
        return self

    # -- identity -------------------------------------------------------------------
    def canonical(self) -> dict:
        """The validated workload as JSON data; a trace file is named by its content hash, so
        the identity does not depend on where the file lives."""
        data = self.model_dump(mode="json")
        for s in data["streams"]:
            if s.get("kind") == "trace":
                try:
                    blob = Path(s["path"]).read_bytes()
                    s["path"] = "sha256:" + hashlib.sha256(blob).hexdigest()[:16]
                except OSError:
                    pass
        return data

    @property
    def digest(self) -> str:
        """Content hash (sha256, 16 hex digits) of the validated workload."""
        blob = json.dumps(self.canonical(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class _FieldError(ValueError):
    def __init__(self, field: str, problem: str, allowed: str):
        super().__init__(f"{field}: {problem}; allowed: {allowed}")
        self.field, self.problem, self.allowed = field, problem, allowed


def _unique(what: str, names: list[str]) -> None:
    seen = set()
    for i, n in enumerate(names):
        if n in seen:
            raise _FieldError(f"{what}[{i}].name", f"duplicate name {n!r}", "unique names")
        seen.add(n)


def _check_layout(i: int, p: Process) -> None:
    vmas = sorted(enumerate(p.vmas), key=lambda t: t[1].start)
    for (_, a), (jb, b) in zip(vmas, vmas[1:], strict=False):
        if a.end > b.start:
            raise _FieldError(
                f"processes[{i}].vmas[{jb}]",
                f"VMA {b.name!r} [{b.start:#x}, {b.end:#x}) overlaps VMA {a.name!r} "
                f"[{a.start:#x}, {a.end:#x})", f"a start >= {a.end:#x} or non-overlapping VMAs")
    for j, v in enumerate(p.vmas):
        if v.backing == "hugetlb":
            h = v.hugepage_size or (2 << 20)
            if v.start % h or v.size % h:
                raise _FieldError(f"processes[{i}].vmas[{j}]", "a hugetlb VMA must be aligned "
                                  "to its huge page size", f"multiples of {h:#x}")


def _check_calls(i: int, s: CallStream, p: Process) -> None:
    vmas = {v.name: v for v in p.vmas}
    for k, c in enumerate(s.calls):
        if c.op != "mremap":
            continue
        if c.vma is not None:
            if c.vma not in vmas:
                raise _FieldError(f"streams[{i}].calls[{k}].vma", f"no VMA named {c.vma!r} in "
                                  f"process {p.name!r}", ", ".join(vmas) or "(the process has no vmas)")
            v = vmas[c.vma]
            if c.offset + c.old_len > v.size:
                raise _FieldError(
                    f"streams[{i}].calls[{k}]",
                    f"the request [{v.start + c.offset:#x}, {v.start + c.offset + c.old_len:#x}) "
                    f"lies outside VMA {v.name!r} [{v.start:#x}, {v.end:#x})",
                    f"offset + old_len <= {v.size:#x}")
        elif p.vmas and not any(v.start <= c.old_addr and c.old_addr + c.old_len <= v.end
                                for v in p.vmas):
            mapped_before = any(o.op == "mmap" for o in s.calls[:k])
            if not mapped_before:
                raise _FieldError(
                    f"streams[{i}].calls[{k}].old_addr",
                    f"the request [{c.old_addr:#x}, {c.old_addr + c.old_len:#x}) lies outside "
                    f"every VMA of process {p.name!r}", "a range inside one of its vmas")


MAX_OPEN_LOOP_CALLS = 200_000
"""The most calls a workload's open-loop streams (``poisson`` and ``periodic`` arrivals) may
make in all. An arrival gets its simulated process when it comes (perfsim.engine.arrivals),
but one that comes while its thread is still busy waits for mmap_lock as a live process
(about 7 KB), and an open-loop stream faster than its calls builds that queue without
bound: 1,000,000 arrivals of ipi_storm's two Poisson streams held 6.2 GB after 3.5 minutes
on 2026-12-02 (every process then made before the run), and count = 10,000,000 grew by
about 100 MB a second without a line of progress until memory ran out. 200,000 arrivals
that do not queue (the same streams at 2,000 calls/s) peaked at 440 MB on 2026-12-02
(643 MB when every arrival's process was made before the run), most of it the calls'
records."""


def _open_loop_calls(s, duration_ns: int | None) -> int:
    """How many arrivals an open-loop stream makes: its count, or the arrivals expected in
    the workload's duration, whichever is fewer."""
    arr = s.arrival
    expected = None
    if duration_ns is not None:
        span_ns = max(0, duration_ns - s.start_ns)
        expected = (span_ns * arr.rate_per_s / 1e9 if isinstance(arr, Poisson)
                    else span_ns / arr.interval_ns)
    listed = (sum(c.op == "mremap" for c in s.calls) * s.repeat
              if isinstance(s, CallStream) else None)
    counts = [c for c in (s.count, expected, listed) if c is not None]
    return int(min(counts)) if counts else 0


def _check_open_loop(w: Workload) -> None:
    total = 0
    for i, s in enumerate(w.streams):
        if isinstance(s, (SyntheticStream, CallStream)) and isinstance(s.arrival,
                                                                       (Poisson, Periodic)):
            total += _open_loop_calls(s, w.duration_ns)
            if total > MAX_OPEN_LOOP_CALLS:
                raise _FieldError(
                    f"streams[{i}]", f"the open-loop ({s.arrival.kind}) streams up to this one "
                    f"make {total:,} calls, each simulated as a process of its own",
                    f"at most {MAX_OPEN_LOOP_CALLS:,} open-loop calls per workload (lower "
                    "count, rate_per_s or duration_ns, or use closed arrivals)")


def _check_synthetic(i: int, s: SyntheticStream) -> None:
    if s.size.lo <= 0:
        raise _FieldError(f"streams[{i}].size", "sizes must be > 0", "sizes >= 4K")
    if s.size.hi > (64 << 30):
        raise _FieldError(f"streams[{i}].size", f"{int(s.size.hi):#x} is too large",
                          "sizes <= 64G")
    if "grow" in s.op.support() and s.growth.lo < 1.0:
        raise _FieldError(f"streams[{i}].growth", "a growth factor below 1 shrinks",
                          "factors >= 1.0")
    if "stack" in s.op.support() and s.shift.lo <= 0:
        raise _FieldError(f"streams[{i}].shift", "a stack shift must be > 0", "sizes >= 4K")
    if s.populate.lo < 0 or s.populate.hi > 1:
        raise _FieldError(f"streams[{i}].populate", "a fraction outside [0, 1]", "0.0 .. 1.0")


# --------------------------------------------------------------------------- errors
def describe(exc: ValidationError, origin: str) -> str:
    """One line per problem: ``FILE: field: problem; allowed: ...``."""
    return describe_validation(exc, Workload, origin=origin)


def parse_workload(data: dict | str, origin: str = "<workload>") -> Workload:
    """Validate a workload from a TOML string or an already-parsed dict."""
    return load_model(data, Workload, "workload", origin=origin, describe=describe)


def read_workload_dict(path: str | Path) -> tuple[dict, Path]:
    p = Path(path)
    return read_toml(p, "workload"), p


def load_workload(path: str | Path) -> Workload:
    """Read and validate ``workloads/NAME.toml`` (or any path)."""
    p = Path(path)
    return load_model(p, Workload, "workload", prepare=lambda d: resolve_paths(d, p.parent),
                      describe=describe)


def resolve_paths(data: dict, base: Path) -> dict:
    """Make trace paths absolute (relative to the workload file) so the workload's content
    hash, and where it runs, do not depend on the working directory."""
    streams = data.get("streams")
    if isinstance(streams, list):
        out = []
        for s in streams:
            if isinstance(s, dict) and s.get("kind") == "trace" and isinstance(s.get("path"), str):
                s = dict(s, path=str((base / s["path"]).resolve()))
            out.append(s)
        data = dict(data, streams=out)
    return data
