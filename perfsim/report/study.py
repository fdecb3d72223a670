"""What a report studies: the study file (``studies/*.toml``), validated.

A study names the single calls to price (sizes × alignment classes × kernels × cost
profiles × threads × backings × THP), the contention runs that measure rmap-lock holds and
walker waits, the shipped workload scenarios to run in paired kernel arms, what-if tunings,
and which calls to export as Chrome traces. Every section has a default, so an empty file
(or no file: :func:`default_study`) is the default report of ``perfsim report``::

    name = "default"
    seed = 1
    arch = "x86_64"
    kernels = ["6.6", "6.18"]             # first = baseline (no realignment), last = new
    cost_profiles = ["x86_64-generic", "kvm-host"]
    reference_size = "1G"                 # the size of the per-class tables
    [calls]
    sizes = { min = "4K", max = "4G" }    # powers of two; or a list ["4K", "2M", "1G"]
    classes = ["pud", "pmd", "realignable", "blocked", "unaligned"]
    threads = [1, 4, 16]
    backings = ["anon", "shmem"]
    thp = [false, true]
    populate = "full"
    replications = 10                     # jitter draws per cell (confidence intervals)
    [contention]
    size = "64M"; calls = 20; classes = ["realignable", "unaligned"]; threads = [1, 4, 16]
    walker_interval_ns = 20000; walker_hold_ns = 3000; replications = 5
    [workloads]
    names = []                            # empty = every shipped scenario
    replications = 5
    [[tune]]                              # zero or more what-if tunings (docs/tune.md)
    [[traces]]                            # calls exported as Chrome trace-event JSON
    class = "unaligned"; size = "1G"; kernel = "6.18"

Unknown keys and bad values are one-line errors naming the file, the field and what is
allowed (``perfsim report --study FILE``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from perfsim.errors import PerfsimError, check_dir_name, describe_validation
from perfsim.schema import DurationNs, SizeBytes, StrictModel, load_model, to_size_bytes

#: The five alignment classes of a move, in report order (docs/kernel-rules.md, E1–E4).
CLASSES: tuple[str, ...] = ("pud", "pmd", "realignable", "blocked", "unaligned")
CLASS_DOCS: dict[str, str] = {
    "pud": "both PUD-aligned (E1: src 0x7f0000000000, dst 0x7f4000000000)",
    "pmd": "both PMD-aligned, not PUD-aligned (src A, dst B)",
    "realignable": "mutually aligned, realignable (E2: A+4K → B+4K, nothing below)",
    "blocked": "mutually aligned, blocked by a VMA below the source (E3)",
    "unaligned": "not mutually aligned (E4: A+4K → B+8K)",
}
BACKINGS = ("anon", "shmem", "file")


_M = StrictModel


def _size(v: Any) -> int:
    return to_size_bytes(v)


class SizeRange(_M):
    """Powers of two from ``min`` to ``max`` (``per_octave`` points per doubling, 1 or 2)."""

    min: SizeBytes = "4K"
    max: SizeBytes = "4G"
    per_octave: Literal[1, 2] = 1

    def values(self) -> list[int]:
        lo, hi = _size(self.min), _size(self.max)
        if lo < 4096 or hi < lo:
            raise ValueError("need 4K <= min <= max")
        out, v = [], lo
        while v <= hi:
            out.append(v)
            # (the midpoint of 4K..8K, 6K, is not whole pages: a move is of whole pages)
            if self.per_octave == 2 and v * 3 // 2 <= hi and (v * 3 // 2) % 4096 == 0:
                out.append(v * 3 // 2)
            v *= 2
        return sorted(set(out))


class Calls(_M):
    """The single-call grid, priced by the cost model's closed form (the engine equals it
    exactly when nothing contends) with ``replications`` seeded jitter draws per cell."""

    sizes: SizeRange | list[SizeBytes] = SizeRange()
    classes: list[Literal["pud", "pmd", "realignable", "blocked", "unaligned"]] = list(CLASSES)
    threads: list[int] = [1, 4, 16]
    backings: list[Literal["anon", "shmem", "file"]] = ["anon", "shmem"]
    thp: list[bool] = [False, True]
    populate: str = "full"
    replications: int = Field(10, ge=1, le=1000)

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: list[int]) -> list[int]:
        if not v or any(t < 1 or t > 1024 for t in v):
            raise ValueError("give 1 to 1024 threads per entry, at least one entry")
        return v

    @field_validator("classes", "backings", "thp")
    @classmethod
    def _nonempty(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one value")
        return v

    def size_values(self) -> list[int]:
        if isinstance(self.sizes, SizeRange):
            return self.sizes.values()
        return sorted({_size(s) for s in self.sizes})


class Contention(_M):
    """Engine runs with an rmap walker: one caller moves ``size`` back and forth ``calls``
    times while a reclaim-style walker read-locks the region's rmap lock and the mm's other
    threads do user work (they receive the shootdown IPIs)."""

    enabled: bool = True
    size: SizeBytes = "64M"
    calls: int = Field(20, ge=2, le=10_000)
    interval_ns: DurationNs = 100_000
    classes: list[Literal["pud", "pmd", "realignable", "blocked", "unaligned"]] = [
        "realignable", "unaligned"]
    backing: Literal["anon", "shmem", "file"] = "anon"
    threads: list[int] = [1, 4, 16]
    walker_interval_ns: DurationNs = Field(20_000, ge=100)
    walker_hold_ns: DurationNs = 3_000
    walker_hold_sigma: float = Field(0.5, ge=0, le=3)
    replications: int = Field(5, ge=1, le=1000)


class Workloads(_M):
    """The workload scenarios (shipped names or paths) run in two paired kernel arms: every
    replication of both arms uses the same seed (common random numbers)."""

    enabled: bool = True
    names: list[str] = []
    """Empty: every shipped scenario."""
    replications: int = Field(5, ge=2, le=1000)
    max_rows: int = Field(200_000, ge=1000)


class TraceCall(_M):
    """One call to export as Chrome trace-event JSON (``traces/<id>.json``)."""

    model_config = ConfigDict(populate_by_name=True)

    cls: Literal["pud", "pmd", "realignable", "blocked", "unaligned"] = Field("unaligned",
                                                                              alias="class")
    size: int | str = "1G"
    """A size as written (``perfsim report --trace-call CLASS:SIZE`` checks it against the
    target with its own message); a study checks it with :func:`~perfsim.schema.to_size_bytes`."""
    kernel: str = "6.18"
    cost_profile: str | None = None
    threads: int = Field(1, ge=1, le=1024)
    backing: Literal["anon", "shmem", "file"] = "anon"
    thp: bool = False

    @property
    def ident(self) -> str:
        s = _fmt(_size(self.size))
        parts = [self.cls, s, self.kernel, f"{self.threads}t", self.backing]
        if self.thp:
            parts.append("thp")
        if self.cost_profile:
            parts.append(Path(self.cost_profile).stem)
        return "-".join(parts)


def _fmt(n: int) -> str:
    from perfsim.units import fmt_size

    return fmt_size(n).replace(" ", "")


def _default_tunes() -> list:
    from perfsim.tune.spec import default_tune

    return [default_tune()]


def _default_traces() -> list[TraceCall]:
    return [TraceCall(cls="realignable", size="64M", kernel="6.18"),
            TraceCall(cls="realignable", size="64M", kernel="6.6"),
            TraceCall(cls="unaligned", size="64M", kernel="6.18"),
            TraceCall(cls="realignable", size="64M", kernel="6.18", threads=4)]


class Study(_M):
    name: str = "default"
    description: str = ("What realigned and unaligned mremap() moves cost on x86-64, "
                        "Linux 6.6 (no realignment) vs 6.18, and what a threshold change does.")
    seed: int = Field(1, ge=0)
    arch: str = "x86_64"
    kernels: list[str] = ["6.6", "6.18"]
    """Exactly two: the baseline first (e.g. 6.6, no realignment), the new kernel last."""
    cost_profiles: list[str] = ["x86_64-generic", "kvm-host"]
    reference_size: SizeBytes = "1G"
    calls: Calls = Calls()
    contention: Contention = Contention()
    workloads: Workloads = Workloads()
    tune: list[Any] = Field(default_factory=_default_tunes)
    traces: list[TraceCall] = Field(default_factory=_default_traces)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dir_name(v, "study")

    @field_validator("kernels")
    @classmethod
    def _two(cls, v: list[str]) -> list[str]:
        if len(v) != 2 or v[0] == v[1]:
            raise ValueError("give exactly two different kernels: baseline first, new last")
        return v

    @field_validator("cost_profiles")
    @classmethod
    def _profiles(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one cost profile")
        return v

    @field_validator("tune", mode="before")
    @classmethod
    def _tunes(cls, v: Any) -> list:
        from perfsim.tune.spec import TuneSpec

        out = []
        for i, item in enumerate(v or []):
            if isinstance(item, TuneSpec):
                out.append(item)
                continue
            try:
                out.append(TuneSpec.model_validate(item))
            except ValidationError as exc:
                raise ValueError(f"tune[{i}]: {_describe(exc)}") from None
        return out

    @model_validator(mode="after")
    def _sizes(self) -> Study:
        try:
            sizes = {"calls.sizes": self.calls.size_values(),
                     "reference_size": [_size(self.reference_size)],
                     "contention.size": [_size(self.contention.size)]}
            for i, t in enumerate(self.traces):
                sizes[f"traces[{i}].size"] = [_size(t.size)]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not sizes["calls.sizes"]:
            raise ValueError("calls.sizes: empty; give at least one size, e.g. [\"4K\", \"2M\"]")
        room = _move_room(self.arch, self.kernels[-1])
        for where, values in sizes.items():
            for v in values:
                if v < 4096 or v % 4096:
                    raise ValueError(f"{where}: {v:#x} is not a whole number of pages; allowed: "
                                     "multiples of 4K, at least 4K")
                if v > room:
                    raise ValueError(f"{where}: {v:#x} is too large: every alignment class's "
                                     f"move must end inside {self.arch}'s user address range; "
                                     f"allowed: at most {room:#x} bytes")
        for i, t in enumerate(self.traces):
            _known_kernel(t.kernel, f"traces[{i}].kernel")
        return self

    # convenience ------------------------------------------------------------------------
    @property
    def baseline(self) -> str:
        return self.kernels[0]

    @property
    def new(self) -> str:
        return self.kernels[-1]

    @property
    def ref_size(self) -> int:
        return _size(self.reference_size)

    @property
    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                          default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _move_room(arch: str, kernel: str) -> int:
    """The longest move of every alignment class (:data:`perfsim.report.shapes.SHAPES`,
    fixed source and destination) that ends inside ``arch``'s user address range."""
    from perfsim.report.shapes import SHAPES, target_for

    try:
        top = target_for(kernel, arch).arch.user_va_top
    except PerfsimError as exc:
        raise ValueError(str(exc)) from None
    return top - max(max(src, dst) for src, dst, _ in SHAPES.values())


def _known_kernel(name: str, where: str) -> None:
    from perfsim.profiles import load_kernel

    try:
        load_kernel(name)
    except PerfsimError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    return describe_validation(exc, Study)


def parse_study(data: dict, origin: str = "<study>") -> Study:
    """Validate a study dict; a :class:`PerfsimError` naming ``origin`` and the field on
    any problem."""
    return load_model(data, Study, "study", origin=origin,
                      describe=lambda exc, o: f"{o}: {_describe(exc)}")


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML file."""
    p = Path(path)

    def tunes_relative_to_the_study(data: dict) -> dict:
        tunes = data.get("tune")
        if isinstance(tunes, list):
            from perfsim.tune.spec import read_tune_dict

            data = dict(data, tune=[read_tune_dict(p.parent / t)[0] if isinstance(t, str)
                                    else t for t in tunes])
        return data

    return load_model(p, Study, "study", prepare=tunes_relative_to_the_study,
                      describe=lambda exc, o: f"{o}: {_describe(exc)}")


def default_study() -> Study:
    """The built-in default study of ``perfsim report`` (documented in docs/report.md)."""
    return Study()
