#!/usr/bin/env python3
"""Measure this machine's mremap costs and fit the ``kvm-host`` cost profile.

    sudo python3 scripts/measure_costs.py                 # measure, fit, print
    sudo python3 scripts/measure_costs.py --write         # ... and write perfsim/data/cost/kvm-host.toml
    python3 scripts/measure_costs.py --quick              # fewer sizes and repetitions

What it does, in three separate stages (measurement -> fit -> profile):

1. **Measure.** Time real ``mremap(MAYMOVE|FIXED)`` calls of the worked-example shapes of
   kernel-model.md §4 (E1 ``pud_aligned``, E2 ``realignable``, E3 ``blocked``, E4
   ``unaligned``, E5b ``small``) at a few sizes, fully populated anonymous memory, THP off,
   with ``perfsim.host.measure.measure_shape`` (fresh layout per repetition, caller pinned to
   CPU 0). Each configuration runs with 1 thread and with a second thread of the same process
   spinning on CPU 1 (``threads=2``), which puts CPU 1 in ``mm_cpumask`` so every flush IPIs it.
2. **Count.** Plan the same shapes with ``perfsim.planner.plan_mremap`` (kernel 6.18, x86_64)
   and count, per configuration, how many times each cost parameter is paid
   (``perfsim.cost.param_counts``).
3. **Fit.** Median latency = sum(count x cost). The parameters the shapes identify
   (``syscall_ns``, ``pte_present_ns``, ``pmd_move_ns`` with ``pud_move_ns`` tied to it, and
   ``ipi_round_trip_ns``) are solved by least squares on relative error; every other parameter
   keeps its ``x86_64-generic`` value and says so in its provenance.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfsim.cost import PARAM_NAMES, load_cost_profile, param_counts  # noqa: E402
from perfsim.cost.model import ipi_targets  # noqa: E402
from perfsim.mm import AddressSpace, PageTables, Vma  # noqa: E402
from perfsim.planner import MoveRequest, plan_mremap  # noqa: E402
from perfsim.profiles import resolve_target  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# Source/destination offsets inside their 1 GiB regions, as perfsim.host.layout builds them.
OFFSETS = {
    "pud_aligned": (0, 0),
    "realignable": (2 * MiB + 4 * KiB, 6 * MiB + 4 * KiB),
    "blocked": (2 * MiB + 4 * KiB, 6 * MiB + 4 * KiB),
    "unaligned": (2 * MiB + 4 * KiB, 6 * MiB + 8 * KiB),
    "small": (2 * MiB + 512 * KiB, 6 * MiB + 512 * KiB),
}
FULL = [("small", 4 * KiB), ("small", 64 * KiB), ("small", 1 * MiB),
        ("pud_aligned", 1 * GiB), ("pud_aligned", 2 * GiB),
        ("realignable", 64 * MiB), ("realignable", 256 * MiB), ("realignable", 1 * GiB),
        ("blocked", 1 * GiB),
        ("unaligned", 16 * MiB), ("unaligned", 64 * MiB), ("unaligned", 256 * MiB),
        ("unaligned", 1 * GiB)]
QUICK = [("small", 4 * KiB), ("pud_aligned", 1 * GiB), ("realignable", 256 * MiB),
         ("unaligned", 64 * MiB), ("unaligned", 256 * MiB)]
FIT_LOCAL = ("syscall_ns", "pte_present_ns", "pmd_move_ns")
FIT_IPI = ("ipi_round_trip_ns", "ipi_wakeup_ns")
FITTED = FIT_LOCAL + FIT_IPI
TIED = {"pud_move_ns": "pmd_move_ns"}  # same work (R16c); one PUD move is not resolvable


def plan_counts(shape: str, size: int, threads: int, profile) -> dict[str, int]:
    """Total times each parameter is paid by the planned call (kernel 6.18, x86_64)."""
    target = resolve_target("6.18", "x86_64")
    base = 0x300000000000
    span = -(-(size + 8 * MiB) // GiB) * GiB
    soff, doff = OFFSETS[shape]
    src, dst = base + soff, base + span + GiB + doff
    vmas = [Vma(src, src + size, name="src")]
    pt = PageTables.empty(target.arch).populate(src, src + size)
    if shape == "blocked":
        vmas.append(Vma(src - 4 * KiB, src, prot="r", name="guard"))
        pt = pt.populate(src - 4 * KiB, src)
    space = AddressSpace(tuple(vmas), pt, cpus=threads)
    plan = plan_mremap(space, MoveRequest(old_addr=src, old_len=size, new_addr=dst), target)
    if plan.errno:
        raise RuntimeError(f"planner rejected {shape} {size}: {plan.errno}")
    counts = param_counts(plan.steps, ipi_targets(plan.steps, profile, None))
    return {k: int(v.sum()) for k, v in counts.items()}


def measure(configs, reps: int, threads_list) -> list[dict]:
    from perfsim.host.measure import measure_shape

    out = []
    for shape, size in configs:
        for threads in threads_list:
            recs = measure_shape(shape, size, threads=threads, reps=reps, warmup=1, trace="off")
            lat = np.array([r["latency_ns"] for r in recs], dtype=np.int64)
            out.append({"shape": shape, "size": size, "threads": threads,
                        "median_ns": int(np.median(lat)), "min_ns": int(lat.min()),
                        "max_ns": int(lat.max()), "reps": len(lat), "samples": lat.tolist()})
            print(f"  {shape:12s} {size // KiB:>8d} KiB  threads={threads}  median "
                  f"{int(np.median(lat)):>10,d} ns  (min {int(lat.min()):,}, max {int(lat.max()):,})",
                  flush=True)
    return out


def _lstsq(rows, cols, prior, known: dict[str, int]):
    """Weighted (relative-error) least squares of median latency over ``cols``; every other
    parameter is taken from ``known`` or else ``prior``."""
    a = np.zeros((len(rows), len(cols)))
    y = np.zeros(len(rows))
    for i, r in enumerate(rows):
        c = r["counts"]
        rest = 0
        for name in PARAM_NAMES:
            if name in cols or name == "ipi_receiver_ns":
                continue
            if name in TIED and TIED[name] in cols:
                a[i, cols.index(TIED[name])] += c[name]
            else:
                rest += c[name] * known.get(name, prior.value(name))
        for j, name in enumerate(cols):
            a[i, j] += c[name]
        y[i] = r["median_ns"] - rest
    w = 1.0 / np.array([r["median_ns"] for r in rows], dtype=float)
    sol, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    return dict(zip(cols, np.maximum(np.rint(sol), 0).astype(np.int64).tolist(), strict=False))


def predicted(r, values: dict[str, int], prior) -> int:
    return int(sum(r["counts"][n] * values.get(n, prior.value(n)) for n in PARAM_NAMES
                   if n != "ipi_receiver_ns"))


def fit(rows: list[dict], prior) -> tuple[dict[str, int], np.ndarray]:
    """Two stages: single-threaded calls give the CPU-local costs (FIT_LOCAL); the extra time
    of the same calls with a second thread gives the IPI costs (FIT_IPI). Returns the values
    and every configuration's relative error."""
    one = [r for r in rows if r["threads"] == 1]
    two = [r for r in rows if r["threads"] == 2]
    values = _lstsq(one, list(FIT_LOCAL), prior, {})
    for k, v in TIED.items():
        values[k] = values[v]
    values.update(_lstsq(two, list(FIT_IPI), prior, values))
    meas = np.array([r["median_ns"] for r in rows], dtype=float)
    pred = np.array([predicted(r, values, prior) for r in rows], dtype=float)
    return values, (pred - meas) / meas


def log_sigma(samples: list[int]) -> float:
    """Robust log-space spread (MAD x 1.4826) of repeated calls, rounded to 0.01."""
    lg = np.log(np.asarray(samples, dtype=float))
    return round(float(1.4826 * np.median(np.abs(lg - np.median(lg)))), 2)


def render_profile(values: dict[str, int], sigma: float, prior, machine: str, when: str,
                   cmd: str) -> str:
    src = f"measured on {machine} by scripts/measure_costs.py on {when} ({cmd})"
    lines = [
        "# Costs of THIS machine (a KVM guest), fitted by scripts/measure_costs.py.",
        "# Re-run:  sudo python3 scripts/measure_costs.py --write",
        "# Parameters the measured shapes do not identify keep their x86_64-generic value;",
        "# their source says so. See docs/cost-model.md (\"kvm-host\").",
        'name = "kvm-host"',
        f'description = "x86-64 KVM guest, {platform.release()}, {os.cpu_count()} CPUs; fitted from timed mremap calls"',
        'arch = "x86_64"',
        "ipi_shootdown = true",
        f'machine = "{machine}"',
    ]
    for name in PARAM_NAMES:
        lines.append("")
        lines.append(f"[params.{name}]")
        if name in values:
            lines.append(f"ns = {values[name]}")
            if name == "syscall_ns" and sigma > 0:
                lines.append('dist = "lognormal"')
                lines.append(f"sigma = {sigma}")
            how = ("fitted (relative least squares over E1-E5b at several sizes, 1 thread)"
                   if name in FIT_LOCAL else
                   "fitted (extra time of the same calls with a 2nd thread spinning on CPU 1)")
            if name in TIED:
                how = f"tied to {TIED[name]} (same work, R16c; a single PUD move is below the noise)"
            lines.append(f'source = "{how}; {src}"')
        else:
            p = prior.param(name)
            lines.append(f"ns = {p.ns}")
            lines.append(f'source = "not identified by the measured shapes: x86_64-generic value ({p.source})"')
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per configuration (default 7, quick 3)")
    ap.add_argument("--write", action="store_true", help="write perfsim/data/cost/kvm-host.toml")
    ap.add_argument("--raw", type=Path, default=None, help="write the raw measurements as JSON here")
    ap.add_argument("--from-raw", type=Path, default=None,
                    help="skip measuring: refit from a JSON file written by --raw")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else FULL
    reps = args.reps or (3 if args.quick else 7)
    prior = load_cost_profile("x86_64-generic")
    from perfsim.host.measure import host_info

    info = host_info()
    machine = f"{info['cpu_model']}, {info['ncpus']} vCPUs, KVM guest, Linux {info['kernel']}"
    when = _dt.date.today().isoformat()
    if args.from_raw:
        raw = json.loads(args.from_raw.read_text())
        rows, machine, when = raw["rows"], raw["machine"], raw["date"]
        print(f"refitting {len(rows)} configurations measured on {machine} on {when}")
    else:
        print(f"measuring on {machine}; THP {info['thp_enabled']}", flush=True)
        rows = measure(configs, reps, (1, 2))
    for r in rows:
        r["counts"] = plan_counts(r["shape"], r["size"], r["threads"], prior)
    values, resid = fit(rows, prior)
    # Call-to-call spread of the smallest call (4 KiB, 1 thread) -> jitter of syscall_ns.
    sigma = log_sigma([s for r in rows if r["shape"] == "small" and r["threads"] == 1
                       and r["size"] == 4 * KiB for s in r["samples"]])
    print("\nfitted (ns):", json.dumps(values))
    print("syscall_ns log-sigma (4 KiB calls, 1 thread):", sigma)
    print("\nconfiguration                       measured      fitted   error")
    for r, e in zip(rows, resid, strict=False):
        print(f"  {r['shape']:12s} {r['size'] // KiB:>8d} KiB t={r['threads']}  "
              f"{r['median_ns']:>12,d}  {int(round(r['median_ns'] * (1 + e))):>12,d}  {e:+7.1%}")
    cmd = "sudo python3 scripts/measure_costs.py" + (" --quick" if args.quick else "") + " --write"
    text = render_profile(values, sigma, prior, machine, when, cmd)
    if args.raw:
        args.raw.write_text(json.dumps({"machine": machine, "date": when, "rows": rows,
                                        "fitted": values}, indent=1))
    if args.write:
        out = ROOT / "perfsim" / "data" / "cost" / "kvm-host.toml"
        tmp = out.with_name(".kvm-host.tmp.toml")
        tmp.write_text(text)
        load_cost_profile(str(tmp))  # validate before replacing
        tmp.replace(out)
        print(f"\nwrote {out}")
    else:
        print("\n(dry run; --write to save the profile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
