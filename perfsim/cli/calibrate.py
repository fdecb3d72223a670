"""``perfsim calibrate``: measure this machine's mremap() and fit a cost profile to it.

A thin shell over :func:`perfsim.calibrate.pipeline.calibrate`; see docs/calibration.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from perfsim.errors import PerfsimError

EPILOG = """\
examples:
  sudo .venv/bin/perfsim calibrate --quick --out reports/calibration/quick.toml     # ~3 min, 2 conditions
  sudo .venv/bin/perfsim calibrate --out reports/calibration/kvm-host.toml          # full design
  perfsim calibrate --from-data reports/calibration/kvm-host.data.jsonl --out /tmp/refit.toml
  perfsim calibrate --dry-run                                             # list the design

writes PROFILE.toml (a cost profile: load_cost_profile / --cost), PROFILE.data.jsonl (every
repetition, the machine, what was skipped; its sha256 is cited by the profile) and
PROFILE.fit.json (values, bootstrap intervals, residuals). Without root or tracefs the latency
is still measured and the missing flush counts are listed in the profile's description.

The design (--dry-run lists it) times moves in five alignment classes (written memory, one
and two threads), moves of sparse and unpopulated sources and of memfd, THP and hugetlb
mappings, and shrinks of written memory to half (the zap group, anonymous: what zap_pte_ns,
zapping and freeing a present page, is fitted from; memfd ones are measured, not fitted;
docs/calibration.md "Zapping written memory").

Bad input or environment (exit 2) is found before anything is measured: bad numbers, an
output under a file, unwritable or already there without --force, an unreadable or non-UTF-8
data file, tracing in use by someone else, an overloaded machine without --busy-ok.

The ordinary condition (what programs see, fitted by default) is timed by a C helper,
probes/calibrate/timer.c, built with the system C compiler into perfsim's cache directory
(--timer python: timed in this process, as kvm-host was); C-timed fits also fit the
cold-cache term (a profile's [cold_cache], docs/calibration.md).

On a busy machine (others use >= 25% of the CPUs, or the hypervisor steals >= 5%) every
configuration is measured with 3x the repetitions, and a line says so.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate", help="measure the host kernel's mremap() and fit a cost profile",
        description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="PROFILE.toml", help="profile to write (required unless "
                   "--dry-run)")
    p.add_argument("--quick", action="store_true", help="small design, few repetitions (~85 s per condition)")
    p.add_argument("--dontunmap", action="store_true",
                   help="also time MREMAP_FIXED|MREMAP_DONTUNMAP moves (the dontunmap group), "
                        "which unmap nothing, so that unmap_ns is fitted apart from syscall_ns "
                        "(an experiment: docs/calibration.md, 'The source's unmap')")
    p.add_argument("--from-data", metavar="DATA.jsonl", help="refit an earlier measurement "
                   "instead of measuring")
    p.add_argument("--dry-run", action="store_true", help="print the design and exit")
    p.add_argument("--reps", type=int, default=None, help="clean latency repetitions per "
                   "configuration (default 9, quick 5)")
    p.add_argument("--traced-reps", type=int, default=None, help="traced repetitions per "
                   "configuration (default 2, quick 1)")
    p.add_argument("--max-size", default=None, metavar="SIZE",
                   help="leave out configurations larger than this (e.g. 1G)")
    p.add_argument("--no-trace", action="store_true", help="do not count TLB flushes")
    p.add_argument("--require-trace", action="store_true",
                   help="fail instead of measuring latency only when tracing is unavailable")
    p.add_argument("--prior", default="x86_64-generic", help="cost profile giving the values "
                   "the design cannot identify (default x86_64-generic)")
    p.add_argument("--kernel", default="6.18", help="kernel profile to plan with (default 6.18)")
    p.add_argument("--name", default=None, help="profile name (default: the file's stem)")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap resamples for the parameter intervals (default 300, quick 100)")
    p.add_argument("--seed", type=int, default=0, help="measuring order and bootstrap seed")
    p.add_argument("--condition", choices=("both", "ordinary", "isolated"), default="both",
                   help="measure in an ordinary process layout (normal mmap area, default "
                        "scheduling), in an isolated one (private address window, pinned, "
                        "nice -20), or both (default)")
    p.add_argument("--fit-condition", choices=("ordinary", "isolated"), default=None,
                   help="condition to fit from (default: ordinary when measured)")
    p.add_argument("--estimator", choices=("staged", "joint"), default="staged",
                   help="staged: per-call terms from small calls, per-unit terms from large "
                        "ones (default); joint: all at once (how kvm-host was fitted)")
    p.add_argument("--timer", choices=("c-helper", "python"), default="c-helper",
                   help="who times the ordinary condition: the C helper "
                        "(probes/calibrate/timer.c, built with the system C compiler; "
                        "default) or this Python process (how kvm-host was measured)")
    p.add_argument("--busy-ok", action="store_true",
                   help="measure even on an overloaded machine (with 3x the repetitions)")
    p.add_argument("--force", action="store_true", help="replace an existing PROFILE.toml (and "
                   "its .data.jsonl / .fit.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from perfsim.calibrate.design import design, fmt_size, parse_size
    from perfsim.calibrate.measure import CONDITIONS, MeasureSettings
    from perfsim.calibrate.pipeline import calibrate, thp_available
    from perfsim.host.trace import TracingBusy, TracingUnavailable

    try:
        max_size = parse_size(args.max_size) if args.max_size else None
    except ValueError as e:
        raise PerfsimError(f"--max-size: {e}") from None
    check_numbers(args, max_size)
    if args.dry_run:
        cfgs = design(args.quick, max_size=max_size, thp_available=thp_available(),
                      dontunmap=args.dontunmap)
        if not cfgs:
            raise PerfsimError(f"--max-size {args.max_size}: leaves no configuration of the "
                               "design (the smallest is " + fmt_size(min(
                                   c.size for c in design(args.quick,
                                                          thp_available=thp_available())))
                               + ")")
        for c in cfgs:
            print(f"{c.group:10s} {c.id}")
        print(f"# {len(cfgs)} configurations, sizes "
              f"{', '.join(fmt_size(s) for s in sorted({c.size for c in cfgs}))}")
        return 0
    if not args.out:
        raise PerfsimError("--out PROFILE.toml is required (or --dry-run)")
    if args.no_trace and args.require_trace:
        raise PerfsimError("--no-trace and --require-trace contradict each other")
    check_outputs(args.out, force=args.force, from_data=args.from_data)
    if max_size is not None and not args.from_data and not design(
            args.quick, max_size=max_size, thp_available=thp_available(),
            dontunmap=args.dontunmap):
        raise PerfsimError(f"--max-size {args.max_size}: leaves no configuration of the design")
    settings = None
    if args.reps is not None or args.traced_reps is not None:
        settings = (MeasureSettings(reps=6, rounds=2, traced_reps=1, max_attempts=12,
                                    rse_target=0.05)
                    if args.quick else MeasureSettings())
        if args.reps is not None:
            if args.reps < 3:
                raise PerfsimError("--reps must be at least 3 (a median of fewer is not robust)")
            settings.reps = args.reps
            settings.max_attempts = 3 * args.reps if not args.quick else 2 * args.reps + 2
        if args.traced_reps is not None:
            settings.traced_reps = max(0, args.traced_reps)
    mode = "off" if args.no_trace else ("required" if args.require_trace else "auto")
    cmd = "perfsim " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("perfsim") else "perfsim calibrate " + \
        " ".join(shlex.quote(a) for a in _argv_echo(args))
    try:
        res = calibrate(args.out, quick=args.quick, from_data=args.from_data, settings=settings,
                        prior=args.prior, kernel=args.kernel, n_boot=args.bootstrap,
                        seed=args.seed, progress=not args.no_progress, trace_mode=mode,
                        max_size=max_size, name=args.name, command=cmd,
                        dontunmap=args.dontunmap,
                        conditions=CONDITIONS if args.condition == "both"
                        else (args.condition,),
                        fit_condition=args.fit_condition, busy_ok=args.busy_ok,
                        estimator=args.estimator, ordinary_timer=args.timer,
                        log=lambda m: print(m, file=sys.stderr))
    except TracingBusy as e:
        raise PerfsimError(f"{e}. Nothing was measured; perfsim does not touch tracing that "
                           "someone else uses. Run again when it is free, or with --no-trace "
                           "to measure latency only.") from None
    except TracingUnavailable as e:
        raise PerfsimError(f"--require-trace: tracing unavailable: {e}") from None
    _print_result(res)
    return 0 if res.status == "complete" else 3


def check_numbers(args: argparse.Namespace, max_size: int | None) -> None:
    """Absurd numbers are one-line errors (exit 2), before anything is measured."""
    if max_size is not None and max_size <= 0:
        raise PerfsimError(f"--max-size {args.max_size}: must be a positive size (e.g. 64M)")
    if args.reps is not None and args.reps < 3:
        raise PerfsimError(f"--reps {args.reps}: must be at least 3 (a median of fewer is not "
                           "robust)")
    if args.traced_reps is not None and args.traced_reps < 0:
        raise PerfsimError(f"--traced-reps {args.traced_reps}: must be 0 or more")
    if args.bootstrap is not None and args.bootstrap < 0:
        raise PerfsimError(f"--bootstrap {args.bootstrap}: must be 0 (no intervals) or more")
    if args.seed < 0:
        raise PerfsimError(f"--seed {args.seed}: must be 0 or more")


def check_outputs(out: str, *, force: bool, from_data: str | None) -> None:
    """The profile and its two sibling files must be writable, and not replace earlier
    ones without ``--force``; checked before anything is measured."""
    from pathlib import Path

    from perfsim.calibrate.io import sibling
    from perfsim.errors import check_output_file

    p = Path(out)
    if p.suffix != ".toml":
        raise PerfsimError(f"--out {out}: a cost profile path must end in .toml")
    src = Path(from_data).resolve() if from_data else None
    for f in (p, sibling(p, ".data.jsonl"), sibling(p, ".fit.json")):
        check_output_file(f, "--out")
        if f.exists() and not force and (src is None or f.resolve() != src):
            raise PerfsimError(f"--out {out}: {f} already exists; choose another name or pass "
                               "--force")


def _argv_echo(args: argparse.Namespace) -> list[str]:
    out = []
    for k in ("quick", "no_trace", "require_trace"):
        if getattr(args, k):
            out.append("--" + k.replace("_", "-"))
    for k in ("from_data", "reps", "traced_reps", "max_size", "prior", "kernel", "bootstrap",
              "out"):
        v = getattr(args, k)
        if v is not None and not (k == "prior" and v == "x86_64-generic") \
                and not (k == "kernel" and v == "6.18"):
            out += ["--" + k.replace("_", "-"), str(v)]
    return out


def _print_result(res) -> None:
    t = res.table
    fit = res.fit
    print(f"measured {len(t)} configurations in {res.duration_s:.0f} s; data {res.data_path} "
          f"(sha256 {res.data_sha256[:16]})")
    if res.load:
        print(f"machine load before measuring: {res.load.get('verdict')} (load average "
              f"{res.load.get('loadavg_1m')}, {res.load.get('busy', 0):.0%} busy, "
              f"{res.load.get('steal', 0):.0%} stolen)")
    c = res.conditions
    if c is not None and "ordinary_over_isolated" in c:
        r = c["ordinary_over_isolated"].dropna()
        big = r[c.loc[r.index, "ordinary"] >= 30_000]
        print(f"both conditions measured: ordinary / isolated median latency {r.median():.2f}x "
              f"over {len(r)} configurations ({big.median():.2f}x over the {len(big)} of "
              f"30 us and more)" if len(big) else
              f"both conditions measured: ordinary / isolated median latency {r.median():.2f}x "
              f"over {len(r)} configurations")
    print(f"fitted from the {res.fit_condition} condition (latencies timed by {res.timer})")
    sp = res.overhead_split
    if sp:
        parts = [f"{k.removesuffix('_ns').replace('_', ' ')} "
                 + (f"{sp[k]['ns']} ns" if sp[k]["ns"] is not None else "not measured")
                 for k in ("syscall_entry_ns", "vma_work_ns", "first_flush_ns")]
        print(f"per-call overhead: syscall_ns {sp['syscall_ns']} ns = " + " + ".join(parts[:2])
              + f"; plus {parts[2]} for a call that changes a mapping")
    fa = res.flush_agreement
    if fa.get("traced_configs"):
        parts = [f"{m} {fa[m]['agree']}/{fa[m]['of']}" for m in
                 ("flush_calls", "full_flushes", "ipi_rounds")]
        print("whole-call TLB flushes, predicted = measured: " + ", ".join(parts))
        for m in ("flush_calls", "full_flushes", "ipi_rounds"):
            if fa[m]["disagree"]:
                print(f"  {m} differ: {', '.join(fa[m]['disagree'][:10])}")
    else:
        print("TLB flush counts: not measured (no tracing)")
    if fit is not None:
        print(f"fitted {sum(s == 'fitted' for s in fit.status.values())} parameters "
              f"(bootstrap {fit.n_boot}), condition number {fit.condition:.0f}:")
        for p, st in fit.status.items():
            if st == "fitted":
                sd = f" ± {fit.sd[p]:.0f}" if p in fit.sd else ""
                ci = (f"  [{fit.ci[p][0]:.0f}, {fit.ci[p][1]:.0f}]" if p in fit.ci else "")
                print(f"  {p:20s} {fit.values[p]:>9d} ns{sd}{ci}")
        cc = fit.cold_cache
        if cc and cc.get("saturation_bytes"):
            ci = f"  [{cc['ci95'][0]:.0f}, {cc['ci95'][1]:.0f}]" if "ci95" in cc else ""
            print(f"  cold cache {int(cc['ns']):>13d} ns{ci} once per call after the caller "
                  f"wrote >= {cc['saturation_bytes'] >> 20} MiB (linear below)")
        import numpy as np
        r = np.abs(np.array(list(fit.rel_residuals.values())))
        print(f"in-sample |relative error| of the median latency: median {np.median(r):.1%}, "
              f"p90 {np.percentile(r, 90):.1%} (validate with: perfsim validate --cost "
              f"{res.profile_path})")
    for m in res.missing:
        print(f"missing: {m}")
    print(f"wrote {res.profile_path}, {res.fit_path}")
