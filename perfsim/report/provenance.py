"""Provenance of a report: what produced it, by name and content hash."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

import perfsim


def git_revision(path: Path | None = None) -> str:
    """``git describe``-like revision of the source tree, ``""`` outside a work tree."""
    root = Path(path or Path(perfsim.__file__).resolve().parents[1])
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> str:
    """Host, CPU model, CPU count, kernel and Python of this machine. The CPU model is
    ``/proc/cpuinfo``'s first ``model name``; only without one is ``platform.processor()``
    asked (on Linux it runs ``uname -p`` in a subprocess), then ``platform.machine()``."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if cpu is None:
        cpu = platform.processor() or platform.machine()
    return (f"{platform.node()} · {cpu} · {os.cpu_count()} CPUs · "
            f"{platform.system()} {platform.release()} · Python {platform.python_version()}")


def collect(results, *, date: str | None = None) -> dict:
    """Everything the provenance footer shows (JSON-serialisable)."""
    from perfsim.cost import load_cost_profile
    from perfsim.report.shapes import target_for
    from perfsim.workload import load_workload, resolve_workload

    s = results.study
    kernels = {k: target_for(k, s.arch).digest for k in s.kernels}
    profiles = {}
    for p in s.cost_profiles:
        cp = load_cost_profile(p)
        profiles[cp.name] = cp.digest
    workloads = {}
    if not results.workload_runs.empty:
        for name, dig in results.workload_runs[["workload", "workload_digest"]].drop_duplicates(
                ).itertuples(index=False):
            workloads[name] = dig
    elif s.workloads.enabled:
        for n in s.workloads.names:
            w = load_workload(resolve_workload(n))
            workloads[w.name] = w.digest
    tunes = {t.spec.name: {"digest": t.spec.digest, "workload": t.spec.workload,
                           "seed": t.spec.seed, "method": t.method}
             for t in results.tunes}
    return {
        "perfsim_version": perfsim.__version__,
        "git_revision": git_revision() or "(not a git work tree)",
        "study": s.name, "study_digest": s.digest,
        "arch": s.arch,
        "targets": {f"{k} on {s.arch}": d for k, d in kernels.items()},
        "cost_profiles": profiles,
        "workloads": workloads,
        "tunes": tunes,
        "seeds": {"study": s.seed,
                  "single calls": f"SeedSequence([{s.seed}, r]), r < {s.calls.replications}",
                  "contention": f"SeedSequence([{s.seed}, r]), r < {s.contention.replications}",
                  "workloads": f"SeedSequence([{s.seed}, workload seed, r]), "
                               f"r < {s.workloads.replications}"},
        "date": date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine(),
        "wall_s": round(results.wall_s, 1),
        "executor": f"{results.executor} × {results.workers}",
    }
