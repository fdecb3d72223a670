"""How busy the machine is right now, from /proc: is it fit to measure latencies on?

Timing a system call to a few percent needs the measuring threads to get their CPUs when they
want them. :func:`sample_load` reads ``/proc/loadavg`` (runnable tasks) and two snapshots of
``/proc/stat`` a moment apart (how much of the CPUs' time others used, and how much the
hypervisor stole); :func:`load_verdict` turns that into what calibration does about it:

* ``quiet``      measure as designed;
* ``busy``       measure with more repetitions (``extra_reps_factor``), and say so;
* ``overloaded`` refuse (one line), unless the user insists.

Pure functions on parsed text (:func:`parse_stat`, :func:`busy_fractions`) carry the logic so
tests can feed recorded /proc contents.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["LoadSample", "busy_fractions", "extra_reps_factor", "load_verdict", "parse_stat",
           "sample_load"]

#: busy share of all CPUs (others' work) at or above which a machine counts as busy
BUSY_AT = 0.25
#: ... and as overloaded (together with more runnable tasks than CPUs)
OVERLOADED_AT = 0.85
#: stolen share (hypervisor) at or above which a machine counts as busy
STEAL_BUSY_AT = 0.05


@dataclass(frozen=True)
class LoadSample:
    """``loadavg_1m``: 1-minute load average; ``runnable``: tasks runnable now (4th field of
    /proc/loadavg, minus this reader); ``busy``: share of all CPUs' time spent on work
    (user, nice, system, irq, softirq, steal) over the sampling interval; ``steal``: share
    stolen by the hypervisor; ``ncpus``."""

    loadavg_1m: float
    runnable: int
    busy: float
    steal: float
    ncpus: int
    interval_s: float

    def describe(self) -> str:
        return (f"load average {self.loadavg_1m:.2f} on {self.ncpus} CPUs, "
                f"{self.busy:.0%} busy, {self.steal:.0%} stolen over {self.interval_s:.1f} s")

    def as_dict(self) -> dict:
        return {"loadavg_1m": self.loadavg_1m, "runnable": self.runnable, "busy": self.busy,
                "steal": self.steal, "ncpus": self.ncpus, "interval_s": self.interval_s}


def parse_stat(text: str) -> tuple[int, int, int]:
    """(total, busy, steal) jiffies of the aggregate ``cpu`` line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            f += [0] * (8 - len(f))
            user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
            busy = user + nice + system + irq + softirq + steal
            return busy + idle + iowait, busy, steal
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def busy_fractions(before: str, after: str) -> tuple[float, float]:
    """(busy share, stolen share) of the CPUs' time between two /proc/stat snapshots."""
    t0, b0, s0 = parse_stat(before)
    t1, b1, s1 = parse_stat(after)
    dt = max(t1 - t0, 1)
    return max(0.0, (b1 - b0) / dt), max(0.0, (s1 - s0) / dt)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def sample_load(interval_s: float = 0.5) -> LoadSample:
    """Sample the machine's load over ``interval_s`` seconds (this process sleeps meanwhile,
    so what is busy is everybody else)."""
    s0 = _read("/proc/stat")
    time.sleep(interval_s)
    s1 = _read("/proc/stat")
    la = _read("/proc/loadavg").split()
    busy, steal = busy_fractions(s0, s1)
    runnable = int(la[3].split("/")[0]) - 1 if len(la) > 3 and "/" in la[3] else 0
    return LoadSample(float(la[0]), max(runnable, 0), round(busy, 3), round(steal, 3),
                      os.cpu_count() or 1, interval_s)


def load_verdict(s: LoadSample) -> tuple[str, str]:
    """(``quiet`` | ``busy`` | ``overloaded``, one line saying why)."""
    if s.busy >= OVERLOADED_AT and max(s.runnable, s.loadavg_1m) > s.ncpus:
        return "overloaded", f"machine overloaded ({s.describe()})"
    if s.busy >= BUSY_AT or s.steal >= STEAL_BUSY_AT or s.loadavg_1m >= s.ncpus:
        return "busy", f"machine busy ({s.describe()})"
    return "quiet", f"machine quiet ({s.describe()})"


def extra_reps_factor(verdict: str) -> int:
    """How many times the designed repetitions a run takes on a machine in this state."""
    return {"quiet": 1, "busy": 3}.get(verdict, 3)
