"""Stage 1 of calibration: measure the host kernel over a designed set of configurations.

The design is measured in ``rounds`` passes; each pass visits every configuration once, in
its own seeded shuffled order, so slow drifts of the machine (other tenants' load, cache and
memory state) spread over all configurations instead of biasing whichever were measured
together; a configuration's median pools its repetitions from every round.

1. **traced pass** (first round only; root + tracefs): ``warmup`` + ``traced_reps`` calls, each
   on a fresh layout, inside a :class:`~perfsim.host.trace.TlbTraceSession` opened for this
   configuration only (tracing costs 15-40 µs per call, so traced latencies are not used);
   records the whole-call and per-phase ``tlb:tlb_flush`` counts.
2. **latency pass** (every round; tracing closed): fresh layout per call, warm-up dropped,
   until ``reps / rounds`` *clean* repetitions or ``max_attempts / rounds`` calls. A final
   top-up pass adds calls to configurations with fewer than ``reps`` clean repetitions or
   whose median's relative standard error is above ``rse_target``. A repetition is
   *disturbed* when either measuring thread waited for its CPU or was switched out
   involuntarily around the call (``/proc/self/task/*/schedstat`` run_delay,
   ``nonvoluntary_ctxt_switches``); a traced one when the mremap thread was switched out
   during the call or, with the spinner, a flush went without IPI. Disturbed repetitions are
   kept in the data, flagged, and left out of the statistics whenever at least ``min_clean``
   clean ones exist.

Two **conditions** (``MeasureSettings.conditions``), each configuration measured in both
within every round, in a shuffled order:

* ``isolated``: the layout in a private address window far below the mmap area, the caller
  pinned to ``main_cpu`` and both threads at nice -20 when allowed (restored afterwards) —
  the cleanest numbers the machine gives;
* ``ordinary``: as a program sees it — the layout where mmap(NULL) puts it (the normal mmap
  area, among the process's other mappings), default scheduling (nice unchanged, the caller
  not pinned except in 2-thread configurations, which need a second CPU running the mm),
  **timed by a C program** (``probes/calibrate/timer.c``, :mod:`perfsim.calibrate.timer`;
  ``settings.ordinary_timer = "python"`` times it in this process as before): a C loop
  keeps the kernel's code and data as warm as any C program's, which a Python process
  between its ctypes calls does not. Every repetition records its ``timer``.

With ``threads=2`` a :class:`~perfsim.host.spinner.Spinner` of the same process spins on
``spinner_cpu``; if it cannot get its CPU (a busy machine), the repetition is retried and,
after ``max_stalls`` stalls, the configuration is skipped with that reason. Every repetition
is appended to a spool file as soon as it is measured, so an interrupted run still leaves its
data behind.

Everything the run changes is put back on the way out (``finally``), also on Ctrl-C:
tracefs (by the session), ``vm.nr_hugepages`` (:class:`HugetlbReservation`), affinity, nice.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfsim.calibrate.design import Config, fmt_size
from perfsim.calibrate.layouts import LayoutMismatch, build
from perfsim.calibrate.timer import TIMER_NAME, helper_record, run_timer, timer_entry_ns
from perfsim.host import syscalls as sc
from perfsim.host.measure import host_info, mem_available, syscall_entry_ns, timed_move
from perfsim.host.spinner import Spinner, SpinnerStalled
from perfsim.host.trace import (
    TlbTraceSession,
    TraceResult,
    TracingBusy,
    TracingUnavailable,
    tracing_status,
)

__all__ = ["CONDITIONS", "MeasureSettings", "MeasureRun", "HugetlbReservation",
           "machine_info", "measure_configs", "trace_plan"]

#: measuring conditions, in the order they are reported
CONDITIONS = ("ordinary", "isolated")

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
#: the data's ``timer`` field for latencies timed in this process (ctypes)
PYTHON_TIMER = "python"


@dataclass
class MeasureSettings:
    reps: int = 9              #: clean latency repetitions wanted (over all rounds)
    rounds: int = 3            #: passes over the whole design (latency reps interleaved)
    traced_reps: int = 2       #: traced repetitions (flush counts are deterministic)
    warmup: int = 1            #: dropped repetitions at the start of each pass
    min_clean: int = 3         #: below this, statistics use every repetition (flagged)
    max_attempts: int = 0      #: latency-pass calls per config over all rounds (0: 3 x reps)
    rse_target: float = 0.03   #: keep going while the median's relative std. error is above
    trace: str = "auto"        #: auto | off | required
    main_cpu: int = 0
    spinner_cpu: int = 1
    nice: int | None = -20
    seed: int = 0              #: shuffles the measuring order (a new order every round)
    conditions: tuple[str, ...] = ("isolated",)  #: isolated and/or ordinary (module doc)
    max_stalls: int = 3        #: spinner stalls tolerated per configuration and pass
    mem_headroom: float = 1.5  #: need MemAvailable >= headroom x size + 1 GiB
    #: who times the ordinary condition: ``c-helper`` (probes/calibrate/timer.c, default) or
    #: ``python`` (this process through ctypes, as before the helper existed)
    ordinary_timer: str = "c-helper"

    def attempts(self) -> int:
        return self.max_attempts or 3 * self.reps


@dataclass
class MeasureRun:
    """What a measurement produced: per-repetition records, what was skipped and why."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  #: {config_id, reason}
    notes: list[str] = field(default_factory=list)  #: run-wide things that were skipped
    trace_status: str = ""
    started: str = ""
    duration_s: float = 0.0
    status: str = "complete"  #: complete | partial | interrupted
    timers: dict[str, str] = field(default_factory=dict)  #: condition -> who timed it


# --------------------------------------------------------------------------------------------
# Machine description


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def machine_info() -> dict[str, Any]:
    """Kernel release, CPU model, CPUs, memory, THP modes, virtualisation, PTI, load."""
    info = host_info()
    flags = ""
    mhz = "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = line
                if line.startswith("cpu MHz") and mhz == "?":
                    mhz = line.split(":", 1)[1].strip()
    virt = "none"
    if shutil.which("systemd-detect-virt"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True,
                               timeout=5)
            virt = r.stdout.strip() or "none"
    if virt == "none" and " hypervisor" in flags:
        virt = "hypervisor (unknown)"
    mem_kb = 0
    with contextlib.suppress(OSError):
        m = re.search(r"^MemTotal:\s+(\d+)", _read("/proc/meminfo"), re.M)
        mem_kb = int(m.group(1)) if m else 0
    ceiling = _read("/sys/kernel/debug/x86/tlb_single_page_flush_ceiling")
    info.update({
        "virtualization": virt,
        "hypervisor_flag": " hypervisor" in flags,
        "pcid": " pcid" in flags,
        "invlpgb": " invlpgb" in flags,
        "cpu_mhz": mhz,
        "mem_total_kb": mem_kb,
        "meltdown": _read("/sys/devices/system/cpu/vulnerabilities/meltdown"),
        "tlb_single_page_flush_ceiling": ceiling if ceiling != "?" else "unreadable (assumed 33)",
        "loadavg": _read("/proc/loadavg"),
        "python": platform.python_version(),
        "euid": os.geteuid(),
    })
    return info


# --------------------------------------------------------------------------------------------
# hugetlb reservation


class HugetlbReservation:
    """Raise ``vm.nr_hugepages`` by what the hugetlb configurations need and put the old value
    back on exit. ``ok`` is False (with ``reason``) when pages cannot be reserved."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.old: int | None = None
        self.ok = False
        self.reason = ""

    def __enter__(self) -> HugetlbReservation:
        if self.pages <= 0:
            self.reason = "no hugetlb configuration"
            return self
        try:
            self.old = int(_read(NR_HUGEPAGES))
        except ValueError:
            self.reason = f"{NR_HUGEPAGES} unreadable"
            return self
        if os.geteuid() != 0:
            self.reason = "not root: cannot reserve hugetlb pages (vm.nr_hugepages)"
            self.old = None
            return self
        try:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(self.old + self.pages))
        except OSError as e:
            self.reason = f"cannot write {NR_HUGEPAGES}: {e}"
            self.old = None
            return self
        m = re.search(r"^HugePages_Free:\s+(\d+)", _read("/proc/meminfo"), re.M)
        free = int(m.group(1)) if m else 0
        if free < self.pages:
            self.reason = f"only {free} of {self.pages} 2 MiB hugetlb pages could be reserved"
            self._restore()
            return self
        self.ok = True
        return self

    def _restore(self) -> None:
        if self.old is not None:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(self.old))
            self.old = None

    def __exit__(self, *exc: object) -> None:
        self._restore()


# --------------------------------------------------------------------------------------------
# One configuration


def _set_nice(tid: int, value: int | None) -> None:
    if value is None:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, value)


def _rse_of_median(lat: list[int]) -> float:
    """Relative standard error of the median from the MAD (normal approximation)."""
    if len(lat) < 3:
        return float("inf")
    a = np.asarray(lat, float)
    med = float(np.median(a))
    mad = 1.4826 * float(np.median(np.abs(a - med)))
    return 1.2533 * mad / np.sqrt(len(a)) / med if med > 0 else float("inf")


class ShrinkCall:
    """The timed call of a ``shrink`` configuration on a built layout:
    ``mremap(src, size, size / 2, 0)`` (nothing moves; the tail half is unmapped), offered
    as the ``do_move`` :func:`perfsim.host.measure.timed_move` times. The layout's own
    ``cleanup`` still unmaps what is left (the head; the tail is already gone)."""

    def __init__(self, lay) -> None:
        self.lay = lay

    def do_move(self) -> int:
        lay = self.lay
        r = sc.mremap_raw(lay.src, lay.size, lay.size // 2, 0)
        if r != lay.src:
            import ctypes
            import errno
            err = ctypes.get_errno()
            raise OSError(err, f"mremap shrink of {lay.shape} failed: "
                          f"{errno.errorcode.get(err, err)}")
        return r


def _one_call(cfg: Config, session: TlbTraceSession | None, spinner: Spinner | None,
              tid: int, condition: str = "isolated") -> tuple[dict[str, Any], TraceResult]:
    lay = build(cfg, ordinary=condition == "ordinary")
    call = ShrinkCall(lay) if cfg.op == "shrink" else lay  # (dontunmap: lay.keep_source)
    try:
        res, main_d, spin_d = timed_move(call, session, spinner, tid, untraced="latency pass")
    finally:
        lay.cleanup()
    rec = {"src": lay.src, "dst": lay.src if cfg.op == "shrink" else lay.dst,
           "thp_kb": lay.thp_kb,
           "populate_method": lay.populate_method, "populate_ns": lay.populate_ns,
           "latency_ns": res.latency_ns, "main_disturbed": bool(main_d),
           "spinner_disturbed": spin_d,
           "disturbed": bool(main_d or bool(spin_d)), "condition": condition}
    return rec, res


@contextlib.contextmanager
def scheduling(settings: MeasureSettings, condition: str, threads: int, tid: int,
               default_affinity: set[int], default_nice: int):
    """The calling thread's CPU and priority for one pass: ``isolated`` pins it to
    ``main_cpu`` at ``settings.nice``; ``ordinary`` leaves the process's own affinity and
    nice, pinning only a 2-thread configuration's caller (its spinner needs the other CPU).
    Restored on exit."""
    if condition == "ordinary":
        if threads == 2:
            sc.pin_current_thread(settings.main_cpu)
        else:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, default_affinity)
        _set_nice(tid, default_nice)
    try:
        yield settings.nice if condition == "isolated" else None
    finally:
        if condition == "ordinary":
            sc.pin_current_thread(settings.main_cpu)
            _set_nice(tid, settings.nice)


def _retrying(fn, settings: MeasureSettings):
    """``fn()``, retried when the spinner stalls; :class:`SpinnerStalled` after
    ``max_stalls`` stalls in a row."""
    for attempt in range(settings.max_stalls):
        try:
            return fn()
        except SpinnerStalled:
            if attempt == settings.max_stalls - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _trace_fields(res: TraceResult) -> dict[str, Any]:
    tr = res.as_dict()
    s = tr.get("summary") or {}
    return {"kernel_us": tr.get("kernel_us"), "summary": s,
            "summary_by_phase": tr.get("summary_by_phase"),
            "phases_known": tr.get("phases_known"), "trace_overrun": tr.get("overrun"),
            "foreign_events": tr.get("foreign_events"),
            "ipi_coverage": (round(s["ipi_rounds"] / max(1, s["flush_calls"]), 4)
                             if s else None)}


def traced_pass(cfg: Config, settings: MeasureSettings,
                emit: Callable[[dict[str, Any]], None]) -> str | None:
    """``warmup`` + ``traced_reps`` traced calls in a session opened for this configuration
    only. Returns a note when the session could not trace a call."""
    tid = sc.gettid()
    base = cfg.as_dict()
    note = None
    with contextlib.ExitStack() as stack:
        spinner = (stack.enter_context(Spinner(settings.spinner_cpu, nice=settings.nice))
                   if cfg.threads == 2 else None)
        session = stack.enter_context(TlbTraceSession(required=True))
        for i in range(settings.warmup + settings.traced_reps):
            rec, res = _retrying(lambda: _one_call(cfg, session, spinner, tid), settings)
            if i < settings.warmup:
                continue
            if not res.available:
                note = res.skipped
            rec.update(base, kind="rep", phase="traced", round=0, rep=i - settings.warmup,
                       traced=res.available, **_trace_fields(res))
            emit(rec)
    return note


def latency_pass(cfg: Config, settings: MeasureSettings, *, want_clean: int, attempts: int,
                 round_no: int, emit: Callable[[dict[str, Any]], None],
                 prior_clean: list[int] | None = None, condition: str = "isolated",
                 spinner_nice: int | None = -20, timer_exe: Path | None = None) -> list[int]:
    """Untraced calls (``warmup`` dropped) until ``want_clean`` clean ones or ``attempts``
    calls; with ``prior_clean`` (earlier rounds) also stops once the pooled median's relative
    standard error is below ``rse_target``. Returns this round's clean latencies. The
    ordinary condition with ``timer_exe`` is timed by the C helper
    (:func:`helper_latency_pass`); everything else in this process."""
    if condition == "ordinary" and timer_exe is not None:
        return helper_latency_pass(cfg, settings, timer_exe, want_clean=want_clean,
                                   attempts=attempts, round_no=round_no, emit=emit,
                                   prior_clean=prior_clean)
    tid = sc.gettid()
    base = cfg.as_dict()
    clean: list[int] = []
    with contextlib.ExitStack() as stack:
        spinner = (stack.enter_context(Spinner(settings.spinner_cpu, nice=spinner_nice))
                   if cfg.threads == 2 else None)
        for i in range(settings.warmup + attempts):
            rec, _res = _retrying(lambda: _one_call(cfg, None, spinner, tid, condition),
                                  settings)
            if i < settings.warmup:
                continue
            rec.update(base, kind="rep", phase="latency", round=round_no,
                       rep=i - settings.warmup, traced=False, timer=PYTHON_TIMER)
            emit(rec)
            if not rec["disturbed"]:
                clean.append(rec["latency_ns"])
            if len(clean) >= want_clean:
                break
            if prior_clean is not None:
                pooled = prior_clean + clean
                if len(pooled) >= settings.reps and _rse_of_median(pooled) <= settings.rse_target:
                    break
    return clean


def helper_latency_pass(cfg: Config, settings: MeasureSettings, exe: Path, *, want_clean: int,
                        attempts: int, round_no: int, emit: Callable[[dict[str, Any]], None],
                        prior_clean: list[int] | None = None) -> list[int]:
    """:func:`latency_pass` of the ordinary condition, timed by the C helper
    (:mod:`perfsim.calibrate.timer`): batches of ``warmup`` + (clean repetitions still
    wanted) calls, each batch one helper process whose first ``warmup`` calls are dropped,
    until ``want_clean`` clean ones or ``attempts`` calls (same stopping rules). The helper
    inherits the caller's scheduling (:func:`scheduling`: default for one thread); with two
    threads it pins itself to ``main_cpu`` and its spinner to ``spinner_cpu``."""
    base = cfg.as_dict()
    clean: list[int] = []
    calls = 0
    while calls < attempts and len(clean) < want_clean:
        n = min(want_clean - len(clean), attempts - calls)
        lines = _retrying(lambda n=n: run_timer(exe, cfg, settings.warmup + n,
                                                main_cpu=settings.main_cpu,
                                                spinner_cpu=settings.spinner_cpu), settings)
        for h in lines[settings.warmup:]:
            rec = helper_record(cfg, h)
            rec.update(base, kind="rep", phase="latency", round=round_no, rep=calls,
                       traced=False)
            emit(rec)
            calls += 1
            if not rec["disturbed"]:
                clean.append(rec["latency_ns"])
        if prior_clean is not None:
            pooled = prior_clean + clean
            if len(pooled) >= settings.reps and _rse_of_median(pooled) <= settings.rse_target:
                break
    return clean


# --------------------------------------------------------------------------------------------
# The run


def trace_plan(mode: str) -> tuple[bool, str]:
    """(trace?, why) for ``--trace`` mode ``auto``/``off``/``required``; raises
    :class:`TracingBusy` when somebody else uses tracing (we refuse to touch it) and
    ``mode='required'`` makes missing tracing an error."""
    if mode == "off":
        return False, "tracing off (--no-trace): flush counts not measured"
    ok, why = tracing_status()
    if not ok:
        if why.startswith("tracing in use"):
            raise TracingBusy(why)
        if mode == "required":
            raise TracingUnavailable(why)
        return False, f"flush counts not measured: {why}"
    return True, why


def measure_configs(configs: Iterable[Config], settings: MeasureSettings, *,
                    spool_path: str | None = None, progress: bool = True,
                    trace_mode: str = "auto", log: Callable[[str], None] | None = None,
                    timer_exe: Path | None = None) -> MeasureRun:
    """Measure every configuration; see the module docstring. Interruptions (Ctrl-C) end the
    run early with ``status='interrupted'``: the records so far are returned (and are in the
    spool file), every setting is restored, and the exception is re-raised by the caller's
    choice (:class:`KeyboardInterrupt` is caught here and reported in ``status``)."""
    configs = list(configs)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    run = MeasureRun(machine=machine_info(), settings=asdict(settings),
                     started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    trace_ok, why = trace_plan(trace_mode)
    run.trace_status = why
    if not trace_ok:
        run.notes.append(why)
        log(f"perfsim calibrate: {why}")
    if os.geteuid() != 0:
        run.notes.append("not root: threads not reniced to -20")
    order = list(configs)
    random.Random(settings.seed).shuffle(order)
    hpages = max((c.size // (2 << 20) for c in order if c.backing == "hugetlb"), default=0)
    spool = open(spool_path, "a") if spool_path else None  # noqa: SIM115

    def emit(rec: dict[str, Any]) -> None:
        run.records.append(rec)
        if spool:
            spool.write(json.dumps(rec, sort_keys=True) + "\n")
            spool.flush()

    t_start = time.monotonic()
    old_aff = os.sched_getaffinity(0)
    tid = sc.gettid()
    old_nice = os.getpriority(os.PRIO_PROCESS, tid)
    bar = None
    try:
        with HugetlbReservation(hpages) as huge:
            if hpages and not huge.ok:
                run.notes.append(f"hugetlb skipped: {huge.reason}")
                log(f"perfsim calibrate: hugetlb configurations skipped: {huge.reason}")
            ncpu = os.cpu_count() or 1
            if ncpu < 2:
                run.notes.append("only one CPU: 2-thread (IPI) configurations skipped")
            sc.pin_current_thread(settings.main_cpu)
            _set_nice(tid, settings.nice)
            run.machine["syscall_entry"] = syscall_entry_ns()
            conds = tuple(settings.conditions) or ("isolated",)
            helper = timer_exe if "ordinary" in conds else None
            if helper is not None:
                run.machine["syscall_entry_c_helper"] = timer_entry_ns(helper)
            run.timers = {k: (TIMER_NAME if k == "ordinary" and helper is not None
                              else PYTHON_TIMER) for k in conds}
            weights = {c.id: 1.0 + c.size / (64 << 20) for c in order}
            rounds = max(1, settings.rounds)
            per_round = -(-settings.reps // rounds)
            per_round_attempts = max(per_round, -(-settings.attempts() // rounds))
            bar = None
            if progress:
                from perfsim.progress import progress as make_progress

                bar = make_progress(round(sum(weights.values()) * (rounds + 0.2)), desc="calibrate",
                                    unit="w", bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                                         "{elapsed}<{remaining} {postfix}")
            skipped: dict[str, str] = {}
            clean: dict[tuple[str, str], list[int]] = {(c.id, k): [] for c in order
                                                       for k in conds}

            def step(cfg: Config, label: str, fn) -> None:
                nonlocal trace_ok
                if cfg.id in skipped:
                    return
                if bar is not None:
                    bar.set_description_str(f"{label} {len(run.records):5d} calls")
                    bar.set_postfix_str(cfg.id)
                reason = None
                try:
                    fn(cfg)
                except LayoutMismatch as e:
                    reason = str(e)
                except TracingBusy as e:
                    trace_ok = False
                    run.notes.append(f"tracing stopped at {cfg.id}: {e}")
                    log(f"perfsim calibrate: {e}; continuing without tracing")
                except SpinnerStalled as e:
                    reason = f"2-thread measurement skipped: {e}"
                except OSError as e:
                    reason = f"{type(e).__name__}: {e}"
                if reason:
                    skipped[cfg.id] = reason
                    run.skipped.append({"config_id": cfg.id, "reason": reason})

            for cfg in order:
                reason = None
                if cfg.backing == "hugetlb" and not huge.ok:
                    reason = f"hugetlb: {huge.reason}"
                elif cfg.threads == 2 and ncpu < 2:
                    reason = "needs 2 CPUs"
                elif mem_available() < settings.mem_headroom * cfg.size + (1 << 30):
                    reason = (f"not enough memory: {fmt_size(cfg.size)} needs "
                              f"{settings.mem_headroom} x size + 1 GiB MemAvailable, have "
                              f"{mem_available() >> 20} MiB")
                if reason:
                    skipped[cfg.id] = reason
                    run.skipped.append({"config_id": cfg.id, "reason": reason})

            def do_traced(cfg: Config) -> None:
                if trace_ok and settings.traced_reps > 0:
                    note = traced_pass(cfg, settings, emit)
                    if note:
                        run.notes.append(f"{cfg.id}: {note}")

            # Round r measures every configuration once, in its own shuffled order, so that
            # the machine's slow drifts (other tenants' load) spread over all of them.
            for r in range(rounds):
                rorder = list(order)
                random.Random(settings.seed * 1000 + r).shuffle(rorder)
                for cfg in rorder:
                    if r == 0:
                        step(cfg, "traced", do_traced)

                    for k in random.Random(settings.seed * 7919 + r).sample(conds, len(conds)):
                        def do_lat(c: Config, r: int = r, k: str = k) -> None:
                            with scheduling(settings, k, c.threads, tid, old_aff,
                                            old_nice) as nice:
                                clean[c.id, k] += latency_pass(
                                    c, settings, want_clean=per_round,
                                    attempts=per_round_attempts, round_no=r, emit=emit,
                                    condition=k, spinner_nice=nice, timer_exe=helper)
                        step(cfg, f"round {r + 1}/{rounds} {k}", do_lat)
                    if bar is not None:
                        bar.update(round(weights[cfg.id]))
            # Top-up: configurations still short of clean repetitions or of a stable median.
            for cfg in order:
                for k in conds:
                    c = clean[cfg.id, k]
                    if cfg.id in skipped or (len(c) >= settings.reps
                                             and _rse_of_median(c) <= settings.rse_target):
                        continue

                    def do_top(cc: Config, k: str = k) -> None:
                        with scheduling(settings, k, cc.threads, tid, old_aff,
                                        old_nice) as nice:
                            clean[cc.id, k] += latency_pass(
                                cc, settings,
                                want_clean=max(settings.reps - len(clean[cc.id, k]), 1),
                                attempts=per_round_attempts, round_no=rounds, emit=emit,
                                prior_clean=clean[cc.id, k], condition=k,
                                spinner_nice=nice, timer_exe=helper)
                    step(cfg, f"top-up {k}", do_top)
            if bar is not None:
                bar.update(bar.total - bar.n)
    except KeyboardInterrupt:
        run.status = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        if spool:
            spool.close()
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, old_aff)
        _set_nice(tid, old_nice)
        run.duration_s = round(time.monotonic() - t_start, 1)
        run.machine["loadavg_end"] = _read("/proc/loadavg")
    if run.status != "interrupted" and (run.skipped or not trace_ok):
        run.status = "partial"
    return run
