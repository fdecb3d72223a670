"""The C timing helper of the ``ordinary`` calibration condition (``probes/calibrate/timer.c``).

A Python process that builds a layout, calls ``mremap()`` through ctypes and then does its
own bookkeeping leaves the kernel's code and data cold between calls; a C program's tight
loop keeps them warm, and small calls differ by ~2x (docs/calibration.md, "Small calls").
So the ordinary condition, which is to describe what programs see, takes its latencies
from a C helper: one helper process per batch of repetitions of one configuration builds
the layout where ``mmap(NULL)`` puts it, populates it, (with 2 threads) runs its own
spinner thread on the other CPU, times the call with ``CLOCK_MONOTONIC`` and prints one
JSON line per repetition. Python keeps everything else (design, rounds, shuffling, load,
tracing, THP verification, statistics, fit).

The helper is *not* the validation probe (``probes/latency/probe.c``); the two share no
code, so the probe stays an independent check of what calibration measured.
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from perfsim.calibrate.cbuild import build_c_program
from perfsim.calibrate.design import Config
from perfsim.calibrate.layouts import LayoutMismatch
from perfsim.errors import PerfsimError
from perfsim.host.spinner import SpinnerStalled
from perfsim.shipped import data_dir

__all__ = ["TIMER_NAME", "HELPER_FIELDS", "TimerFailed", "timer_source", "build_timer",
           "parse_timer_line", "run_timer", "helper_record", "timer_entry_ns"]

#: what the data's ``timer`` field says for latencies this helper measured
TIMER_NAME = "c-helper"
#: the keys of one repetition line of ``timer move``
HELPER_FIELDS = ("rep", "src", "dst", "latency_ns", "populate_ns", "thp_kb", "hugetlb_kb",
                 "cpu_before", "cpu_after", "cpu_last", "cpus_seen", "main_run_delay_ns",
                 "main_pcount", "main_nivcsw", "spin_run_delay_ns", "spin_pcount")
#: exit status of the helper when its spinner did not get its CPU for 5 s
EXIT_STALLED = 3


class TimerFailed(OSError):
    """The helper failed (a system call it makes failed, or it printed something that is not
    a repetition): the configuration is recorded as skipped with this message."""


def timer_source() -> Path:
    """``probes/calibrate/timer.c``: the checkout's, or the copy installed with the package."""
    p = data_dir("probes") / "calibrate" / "timer.c"
    if not p.is_file():
        raise PerfsimError(f"calibration timer source {p} not found (a broken install: "
                           "reinstall perfsim)")
    return p


def build_timer(source: Path | None = None) -> Path:
    """Compile the helper (once per source version) into perfsim's cache directory."""
    return build_c_program(source or timer_source(), "calibrate-timer",
                           "the calibration timer (probes/calibrate/timer.c)",
                           libs=("-pthread",))


def parse_timer_line(line: str) -> dict[str, int]:
    """One ``timer move`` repetition line → its fields (all integers); raises
    :class:`TimerFailed` naming what is wrong."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TimerFailed(errno.EPROTO, f"calibration timer printed a line that is not JSON "
                          f"({e.msg}): {line[:80]!r}") from None
    missing = [k for k in HELPER_FIELDS if k not in obj]
    if not isinstance(obj, dict) or missing:
        raise TimerFailed(errno.EPROTO, f"calibration timer line lacks {', '.join(missing)}: "
                          f"{line[:80]!r}")
    if not all(isinstance(obj[k], int) for k in HELPER_FIELDS):
        raise TimerFailed(errno.EPROTO, f"calibration timer line has a non-integer field: "
                          f"{line[:80]!r}")
    return {k: int(obj[k]) for k in HELPER_FIELDS}


def timer_args(exe: Path, cfg: Config, reps: int, *, main_cpu: int = 0,
               spinner_cpu: int = 1) -> list[str]:
    args = [str(exe), cfg.op, cfg.align, str(cfg.size), str(reps), cfg.populate, cfg.backing,
            "thp" if cfg.thp else "nothp", str(cfg.threads)]
    if cfg.threads == 2:
        args += [str(main_cpu), str(spinner_cpu)]
    return args


def run_timer(exe: Path, cfg: Config, reps: int, *, main_cpu: int = 0, spinner_cpu: int = 1,
              timeout_s: float = 600) -> list[dict[str, int]]:
    """``reps`` repetitions of ``cfg`` in one helper process (its first ones are the caller's
    warm-up). Raises :class:`SpinnerStalled` when its spinner did not run (exit 3) and
    :class:`TimerFailed` on any other failure."""
    try:
        r = subprocess.run(timer_args(exe, cfg, reps, main_cpu=main_cpu,
                                      spinner_cpu=spinner_cpu),
                           capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimerFailed(errno.ETIMEDOUT, f"calibration timer took more than {timeout_s:g} s "
                          f"on {cfg.id}") from None
    msg = (r.stderr.strip().splitlines() or ["no message"])[-1][:200]
    if r.returncode == EXIT_STALLED:
        raise SpinnerStalled(msg.removeprefix("timer: "))
    if r.returncode != 0:
        raise TimerFailed(errno.EIO, f"calibration timer failed on {cfg.id} (exit "
                          f"{r.returncode}): {msg}")
    out = [parse_timer_line(x) for x in r.stdout.splitlines() if x.strip()]
    if len(out) != reps:
        raise TimerFailed(errno.EIO, f"calibration timer printed {len(out)} of {reps} "
                          f"repetitions of {cfg.id}")
    return out


def check_backing(cfg: Config, h: dict[str, int]) -> None:
    """The THP / hugetlb verification of :mod:`perfsim.calibrate.layouts`, on what the helper
    read from its own ``/proc/self/smaps`` (``-1``: not read for this repetition)."""
    if cfg.backing == "hugetlb":
        if h["hugetlb_kb"] >= 0 and cfg.populate == "full" and h["hugetlb_kb"] != cfg.size // 1024:
            raise LayoutMismatch(f"{cfg.id}: hugetlb backing {h['hugetlb_kb']} kB, expected "
                                 f"{cfg.size // 1024} kB (calibration timer)")
        return
    want = cfg.expected_thp_kb()
    if h["thp_kb"] >= 0 and h["thp_kb"] != want:
        raise LayoutMismatch(f"{cfg.id}: THP backing {h['thp_kb']} kB, expected {want} kB "
                             "(/proc/self/smaps AnonHugePages, calibration timer)")


def helper_record(cfg: Config, h: dict[str, int], *, condition: str = "ordinary"
                  ) -> dict[str, Any]:
    """A data-file repetition record from one helper line (checked with
    :func:`check_backing`).

    Disturbed, like perfsim's own measurement: the caller waited for its CPU or was switched
    out involuntarily during the call (run_delay, nivcsw), or it **moved to another CPU**
    since its previous call or during this one (on x86 the CPU it left stays in the mm's CPU
    mask until a flush IPIs it, which the plan does not include); the spinner waited for its
    CPU or was switched out (run_delay, pcount)."""
    check_backing(cfg, h)
    migrated = h["cpu_before"] != h["cpu_after"] or (h["cpu_last"] >= 0
                                                   and h["cpu_last"] != h["cpu_before"])
    main_d = h["main_run_delay_ns"] > 0 or h["main_nivcsw"] > 0 or migrated
    spin_d = (h["spin_run_delay_ns"] > 0 or h["spin_pcount"] > 0) if cfg.threads == 2 \
        else None
    thp_kb = 0 if cfg.backing == "hugetlb" else h["thp_kb"]  # as perfsim.calibrate.layouts
    return {"src": h["src"], "dst": h["dst"], "latency_ns": h["latency_ns"],
            "thp_kb": thp_kb if thp_kb >= 0 else cfg.expected_thp_kb(),
            "hugetlb_kb": h["hugetlb_kb"] if h["hugetlb_kb"] >= 0 else None,
            "populate_method": "touch" if cfg.populate == "full" else
            ("every:16" if cfg.populate == "sparse" else "none"),
            "populate_ns": h["populate_ns"], "main_disturbed": bool(main_d),
            "spinner_disturbed": spin_d, "disturbed": bool(main_d or bool(spin_d)),
            "migrated": bool(migrated), "cpu": h["cpu_before"], "cpus_seen": h["cpus_seen"],
            "run_delay_ns": h["main_run_delay_ns"], "nivcsw": h["main_nivcsw"],
            "condition": condition, "timer": TIMER_NAME}


def timer_entry_ns(exe: Path, reps: int = 201) -> dict[str, Any]:
    """The cost of entering and leaving mremap() as the helper times it: the median, p10 and
    p90 of ``reps`` calls rejected with EINVAL before ``mmap_lock`` (``timer entry``)."""
    r = subprocess.run([str(exe), "entry", str(reps)], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise TimerFailed(errno.EIO, "calibration timer entry failed: "
                          + (r.stderr.strip() or "no message")[:200])
    lat = np.sort(np.array(json.loads(r.stdout)["latency_ns"], dtype=np.int64))
    return {"median_ns": int(lat[len(lat) // 2]), "p10_ns": int(lat[len(lat) // 10]),
            "p90_ns": int(lat[(9 * len(lat)) // 10]), "reps": int(len(lat)),
            "how": "mremap(old_address=1) -> EINVAL before mmap_lock, timed in a C loop by "
                   "the calibration timer", "timer": TIMER_NAME}
