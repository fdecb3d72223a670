"""One ``mremap()`` request: its keys, defaults and help (listed once), how it is read from
a TOML file or ``perfsim plan``'s options, and how it becomes what the planner takes.

A request file says the same as the options, keys spelled like them (``-`` or ``_``). The
call's keys are the syscall's own argument names, as in workloads, scenarios, the trace CSV
and :class:`~perfsim.planner.result.MoveRequest`::

    # examples/plan/e2.toml: docs/kernel-rules.md, Worked examples E2 (realignment possible)
    description = "E2: 1 GiB, old_addr = A+2M+4K, new_addr = B+6M+4K"
    old_addr = "A+2M+4K"   # A: the default source base 0x7f0000000000
    old_len = "1G"
    new_addr = "B+6M+4K"   # B: the default destination base 0x7f4000000000

The former keys ``src``, ``len`` and ``dst`` are refused with a line naming the new key
(:data:`FORMER_KEYS`); ``perfsim plan`` still takes ``--src``, ``--len`` and ``--dst`` as
short spellings of ``--old-addr``, ``--old-len`` and ``--new-addr``.

Addresses mean what they say: a plain number (``0x7f0000201000``) is the address; an
offset from a default base needs the base's name (``A+2M+4K``, ``B+6M+8K``). Sizes are
``"1G+4K"``-style strings or integers.

The address space is one source VMA ``[old_addr, old_addr + old_len)`` (populated,
optionally guarded), unless the file has ``[[vma]]`` tables (or the command line ``--vma``
options): then they are the whole address space::

    [[vma]]
    start = "A"
    size = "64M"           # a VMA's extent is its size, as in workloads and scenarios
    backing = "shmem"      # anon | shmem | file | hugetlb
    populate = "every:512" # full | none | 0.25 | every:K | first:SIZE | aligned:K
    thp = true

Every problem is a :class:`~perfsim.errors.PerfsimError` whose one-line message names the
file (or option), the table and key, and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from perfsim.errors import PerfsimError
from perfsim.mm.build import POPULATE_HELP
from perfsim.mm.vma import BACKINGS
from perfsim.schema import StrictModel, load_model

SizeLike = str | int
"""``"1G+4K"``, ``"0x200000"`` or a non-negative integer number of bytes, kept as written:
sizes and addresses of a request (``A+2M+4K`` names a base the target decides) are parsed,
like ``perfsim plan``'s options, by :mod:`perfsim.planner.request` with
:func:`perfsim.units.parse_size` / :func:`~perfsim.units.parse_address`, the parser behind
:data:`perfsim.schema.SizeBytes`."""

PROT_HELP = 'a protection such as "rw", "r", "rwx" or "none"'


def _opt(default: Any, help: str, metavar: str | None = None, group: str = "request",
         cli: bool = True, **kw) -> Any:
    """A request key: its default and help, and how ``perfsim plan`` shows it."""
    return Field(default, description=help,
                 json_schema_extra={"metavar": metavar, "group": group, "cli": cli}, **kw)


def _no_bool_or_float_size(v: Any) -> Any:
    if isinstance(v, bool | float):
        raise ValueError("expected a size such as \"1G+4K\" or an integer number of bytes")
    return v


def _strict_int(v: Any) -> Any:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError("expected an integer")
    return v


def _thp(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


def _populate(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected " + POPULATE_HELP)
    return v


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=False)


class VmaTable(_Strict):
    """One ``[[vma]]`` table (or ``--vma START:SIZE[:key=value,...]``): one mapping."""

    start: SizeLike = _opt(..., "the VMA's start address (A+..., B+... or an address)")
    size: SizeLike = _opt(..., "its size in bytes")
    backing: Literal["anon", "shmem", "file", "hugetlb"] = _opt("anon", "what maps it")
    prot: str = _opt("rw", PROT_HELP)
    populate: str | float = _opt("full", f"which pages were touched: {POPULATE_HELP}")
    thp: bool | Literal["on", "off"] = _opt(False, "THP enabled (PMD-size folios where the "
                                                   "kernel can map them)")
    folio_size: SizeLike | None = _opt(None, "mTHP folio size, 16K…1M (default: base pages)")
    pgoff: int | None = Field(None, ge=0, description="page offset in its file (default: 0 "
                              "for files, the start's page number for anon)")
    file: str | None = _opt(None, "a name: VMAs naming the same file (or anon family) share it")
    uffd: Literal["missing", "wp"] | None = _opt(None, "registered with userfaultfd in this mode")
    touched: bool = _opt(True, "false: mapped but never faulted in (like a guard page)")
    shared: bool = _opt(True, "false: MAP_PRIVATE (file and shmem backings only; its written "
                              "pages are anonymous copies)")
    hugepage_size: SizeLike | None = _opt(None, "hugetlb page size (default: the PMD size)")
    written_back: bool = _opt(False, "true: a shared file's written pages were written back "
                                     "since (msync, or the flusher after dirty_expire): "
                                     "clean PTEs, so a zap of them forces no flush")
    dirty: bool = _opt(False, "true: a VMA without write permission was written before "
                              "mprotect took it away (its PTEs stay dirty)")
    shmem_huge: bool = _opt(False, "true: a shmem VMA on a superblock that allows huge pages "
                                   "(shmem_enabled or tmpfs huge= not never): a range the "
                                   "kernel places for it is PMD-aligned in the file")
    noreserve: bool = _opt(False, "true: mapped MAP_NORESERVE (VM_NORESERVE: never merges "
                                  "with a mapping without it)")
    account: bool | None = _opt(None, "VM_ACCOUNT (default: what mmap gives, true for a "
                                      "private writable mapping without noreserve); false: "
                                      "a mapping opened writable only by mprotect after "
                                      "MAP_NORESERVE, or made read-only before it was faulted")

    _sizes = field_validator("start", "size", "folio_size", "hugepage_size",
                             mode="before")(_no_bool_or_float_size)
    _ints = field_validator("pgoff", mode="before")(_strict_int)
    _thp = field_validator("thp", mode="before")(_thp)
    _populate = field_validator("populate", mode="before")(_populate)

    @field_validator("prot")
    @classmethod
    def _prot(cls, v: str) -> str:
        v = v.strip().lower()
        if v != "none" and (not v or set(v) - set("rwx") or len(set(v)) != len(v)):
            raise ValueError("expected " + PROT_HELP)
        return v


class PlanRequest(_Strict):
    """The keys a request may hold, with their defaults and help (``perfsim plan``'s
    options are made from this list)."""

    description: str | None = _opt(None, "free text, kept in the JSON 'request'", cli=False)
    old_addr: SizeLike | None = _opt(None, "the source address (default A, the source "
                                     "base)", "ADDR")
    old_len: SizeLike | None = _opt(None, "bytes to move (required), e.g. 1G", "SIZE")
    new_len: SizeLike | None = _opt(None, "the mapping's size after the call (default: "
                                    "--old-len)", "SIZE")
    new_addr: SizeLike | None = _opt(None, "the destination address (default B with --fixed; "
                                     "without MREMAP_FIXED the kernel picks the place)", "ADDR")
    maymove: bool = _opt(True, "pass MREMAP_MAYMOVE (default)")
    fixed: bool = _opt(True, "pass MREMAP_FIXED (default); --no-fixed makes --new-addr unused")
    dontunmap: bool = _opt(False, "pass MREMAP_DONTUNMAP")
    for_stack: bool = _opt(False, "plan exec's relocate_vma_down: the whole source VMA moves "
                           "down, so --new-addr must lie below --old-addr")
    fail_alloc_at: int | None = _opt(None, "fail the K-th page-table allocation (1-based) to "
                                     "exercise the partial move and its revert", "K", ge=1)
    backing: Literal["anon", "shmem", "file", "hugetlb"] = _opt(
        "anon", "source VMA kind", group="space")
    thp: bool | Literal["on", "off"] = _opt(False, "source mapped with PMD-size THPs where the "
                                            "kernel can map them", group="space")
    folio_size: SizeLike | None = _opt(None, "mTHP folio size of the source, 16K…1M", "SIZE",
                                       group="space")
    hugepage_size: SizeLike | None = _opt(None, "hugetlb page size for --backing hugetlb "
                                          "(default: the PMD size)", "SIZE", group="space")
    populate: str | float = _opt("full", POPULATE_HELP, "HOW", group="space")
    seed: int = _opt(0, "seed for --populate FRACTION", "N", group="space", ge=0)
    guard_below_src: bool = _opt(False, "map a one-page, never-touched VMA right below the "
                                 "source (blocks realignment, E3)", group="space")
    guard_below_dst: bool = _opt(False, "map a one-page, never-touched VMA right below the "
                                 "destination", group="space")
    cpus: int = _opt(1, "the mm's threads run on N CPUs: each flush IPIs the other N-1", "N",
                     group="space", ge=1)
    mmap_base: SizeLike | None = _opt(None, "where the kernel's top-down search for a range it "
                                      "places starts (mm->mmap_base; 0x7ffff7fff000 for an "
                                      "x86-64 process run with setarch -R and an 8 MiB stack "
                                      "rlimit); default: 1 GiB below the top of user space",
                                      "ADDR", group="space")
    vma: list[VmaTable] | None = _opt(None, "a VMA of the address space, START:SIZE[:key=value,"
                                      "...] with the [[vma]] keys; repeat for each; given, "
                                      "they are the whole address space",
                                      "START:SIZE[:K=V,...]", group="space")
    dontneed: list[str] | None = _opt(None, "before the call, madvise(START, SIZE, "
                                      "MADV_DONTNEED): the pages zapped, page tables kept but "
                                      "those of whole PMDs where the kernel frees them "
                                      "(CONFIG_PT_RECLAIM, R27); repeat for each range",
                                      "START:SIZE", group="space")
    arch: str = _opt("x86_64", "architecture name or TOML path", "NAME", group="target")
    kernel: str = _opt("6.18", "kernel profile name or TOML path", "NAME", group="target")
    platform: Literal["bare-metal", "kvm-guest"] | None = _opt(
        None, "what the kernel runs on, where flushes differ: bare-metal (also an emulated "
        "TCG guest) or kvm-guest (paravirtual flush); default: the kernel profile's",
        "bare-metal|kvm-guest", group="target")
    cost_profile: str | None = _opt(None, "also predict the call's duration with this cost "
                                    "profile (name or TOML path); it must declare the arch",
                                    "NAME|PATH", group="target")
    force_cost_profile: bool = _opt(False, "use a cost profile that does not declare the arch "
                                    "among its archs (a what-if, not a prediction)",
                                    group="target")
    written_before: SizeLike = _opt(0, "bytes the program wrote just before the call (e.g. "
                                    "populating the source): a cost profile with a "
                                    "[cold_cache] table charges the cold caches; 0: warm",
                                    "SIZE", group="target")

    _sizes = field_validator("old_addr", "old_len", "new_addr", "new_len", "folio_size",
                             "hugepage_size", "written_before", "mmap_base",
                             mode="before")(_no_bool_or_float_size)
    _ints = field_validator("seed", "cpus", "fail_alloc_at", mode="before")(_strict_int)
    _thp = field_validator("thp", mode="before")(_thp)
    _populate = field_validator("populate", mode="before")(_populate)

    def given(self) -> dict[str, Any]:
        """The keys actually set, ``thp`` as a bool, ``vma`` as a list of dicts."""
        out = self.model_dump(exclude_unset=True, exclude_none=True)
        if isinstance(out.get("thp"), str):
            out["thp"] = out["thp"] == "on"
        return out


KEYS: tuple[str, ...] = tuple(PlanRequest.model_fields)
VMA_KEYS: tuple[str, ...] = tuple(VmaTable.model_fields)
DEFAULTS: dict[str, Any] = {k: f.default for k, f in PlanRequest.model_fields.items()}
FORMER_KEYS: dict[str, str] = {"src": "old_addr", "len": "old_len", "dst": "new_addr"}
"""Keys a request file used to spell the call with, and the syscall's argument names that
replaced them. A file still using one is refused with a line naming the new key;
``perfsim plan`` keeps ``--src``, ``--len`` and ``--dst`` as short spellings of the options."""

_ALLOWED_HINTS = {
    "backing": "one of " + ", ".join(BACKINGS),
    "thp": 'true/false or "on"/"off"',
    "populate": POPULATE_HELP,
    "cpus": "an integer >= 1",
    "fail_alloc_at": "an integer >= 1",
    "seed": "an integer >= 0",
    "pgoff": "an integer >= 0",
    "old_len": 'a size such as "1G+4K" or an integer',
    "size": 'a size such as "64M" or an integer',
    "new_len": 'a size such as "1G+4K" or an integer',
    "hugepage_size": 'a size such as "2M" or an integer',
    "folio_size": 'a size such as "64K" or an integer',
    "old_addr": 'an address such as "0x7f0000201000" or "A+2M+4K"',
    "new_addr": 'an address such as "0x7f4000601000" or "B+6M+4K"',
    "mmap_base": 'an address such as "0x7ffff7fff000"',
    "dontneed": 'a list of "START:SIZE" ranges such as ["A+2M:4M"]',
    "start": 'an address such as "0x7f0000201000" or "A+2M+4K"',
    "uffd": '"missing" or "wp"',
    "touched": "true or false",
    "prot": PROT_HELP,
}


def describe(exc: ValidationError, origin: str) -> str:
    """One line: ``origin: [table] key 'k': got v; allowed: ...`` for each problem; a
    former key (:data:`FORMER_KEYS`) is named alone with its new name:
    ``plan request origin: key 'src' is now 'old_addr'``."""
    parts: list[str] = []
    seen: set[tuple] = set()
    former = [f"key {e['loc'][0]!r} is now {FORMER_KEYS[e['loc'][0]]!r}" for e in exc.errors()
              if e["type"] == "extra_forbidden" and len(e["loc"]) == 1
              and e["loc"][0] in FORMER_KEYS]
    if former:
        return f"plan request {origin}: " + "; ".join(former)
    for err in exc.errors():
        loc = tuple(err["loc"])
        table = ""
        if len(loc) >= 2 and loc[0] == "vma" and isinstance(loc[1], int):
            table, loc = f"[[vma]] #{loc[1] + 1}: ", loc[2:]
        key = str(loc[0]) if loc else ""
        if (table, key) in seen:  # a union reports one error per alternative: keep the first
            continue
        seen.add((table, key))
        if err["type"] == "extra_forbidden":
            allowed = VMA_KEYS if table else KEYS
            parts.append(f"{table}unknown key {key!r}; allowed keys: {', '.join(allowed)}")
            continue
        if err["type"] == "missing":
            parts.append(f"{table}key {key!r} is required")
            continue
        hint = _ALLOWED_HINTS.get(key, err["msg"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("greater_than_equal", "value_error") and hint in msg:
            hint = msg
        elif err["type"] in ("greater_than_equal", "value_error") and hint != err["msg"]:
            hint = f"{msg}; allowed: {hint}"
        elif hint != err["msg"]:
            hint = f"allowed: {hint}"
        parts.append(f"{table}key {key!r}: got {err.get('input')!r}; {hint}")
    return f"{origin}: " + "; ".join(parts)


def _normalise(data: dict) -> dict:
    """A ``[request]`` table unwrapped; keys spelled with ``-`` or ``_`` between words."""
    def norm(d):
        return {str(k).replace("-", "_"): v for k, v in d.items()}

    if isinstance(data.get("request"), dict) and set(data) <= {"request", "vma"}:
        data = dict(data["request"], **({"vma": data["vma"]} if "vma" in data else {}))
    data = norm(data)
    if isinstance(data.get("vma"), list):
        data["vma"] = [norm(t) if isinstance(t, dict) else t for t in data["vma"]]
    return data


def parse_request(text: str, origin: str = "<string>") -> PlanRequest:
    """Parse request TOML text; ``origin`` names it in error messages."""
    return load_model(text, PlanRequest, "request", origin=origin, prepare=_normalise,
                      describe=describe)


def validate(data: dict, origin: str) -> PlanRequest:
    """A request from a dict of keys (``-`` or ``_`` between words)."""
    return load_model(data, PlanRequest, "request", origin=origin, prepare=_normalise,
                      describe=describe)


def load_request(path: str | Path) -> PlanRequest:
    """Read and validate a request file; a missing, unreadable or non-UTF-8 file is a
    PerfsimError naming it."""
    return load_model(Path(path), PlanRequest, "request", prepare=_normalise,
                      describe=describe)


def parse_vma_option(text: str, index: int) -> dict:
    """``--vma START:SIZE[:key=value,...]`` (SIZE: the VMA's size) as a ``[[vma]]`` dict (validated later)."""
    label = f"--vma #{index}"
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise PerfsimError(f"{label}: expected START:SIZE[:key=value,...], got {text!r}")
    out: dict[str, Any] = {"start": parts[0].strip(), "size": parts[1].strip()}
    for item in (parts[2].split(",") if len(parts) == 3 and parts[2].strip() else []):
        key, eq, value = item.partition("=")
        if not eq:
            raise PerfsimError(f"{label}: expected key=value, got {item!r}; keys: "
                               f"{', '.join(VMA_KEYS)}")
        key, value = key.strip().replace("-", "_"), value.strip()
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif key == "pgoff":
            try:
                out[key] = int(value, 0)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out
