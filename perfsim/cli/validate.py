"""``perfsim validate``: predicted vs measured, configuration by configuration.

A thin shell over :func:`perfsim.calibrate.validate.validate`; see docs/calibration.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from perfsim.atomic import atomic_dir
from perfsim.errors import PerfsimError, check_output_dir

EPILOG = """\
examples:
  perfsim validate --cost reports/calibration/kvm-host-fit.toml
  perfsim validate --cost reports/calibration/kvm-host-fit.toml --holdout sizes --out /tmp/v
  perfsim validate --cost x86_64-generic --data reports/calibration/kvm-host-fit.data.jsonl
  perfsim validate --cost PROFILE.toml --holdout align=unaligned     # extrapolate a class

  perfsim validate --cost kvm-epyc --probe --out /tmp/probe        # independent C probe
  perfsim validate --cost kvm-epyc --data data/calibration/kvm-epyc.data.jsonl   # shipped fit
  perfsim validate --cost kvm-host --probe --from-probe /tmp/probe/probe.jsonl --out /tmp/p2

--probe: build probes/latency/probe.c with the system C compiler (into perfsim's cache
directory), time held-out configurations (sizes the calibration design does not contain) in
two independent rounds as an ordinary program does, and report each configuration's model
error next to the test-retest spread of the two rounds; writes OUT/README.md, probe.csv,
probe.jsonl (the raw repetitions; --from-probe re-reports them), meta.json. The machine's load
is checked first: busy means 3x the repetitions, overloaded is refused unless --busy-ok.

--data defaults to the profile's sibling PROFILE.data.jsonl. --holdout: kfold:K (default
kfold:5, stratified by group and alignment class), sizes (every other size held out),
FIELD=V1[,V2] (e.g. group=memfd, size=4G) or none.

writes OUT/ (atomically): README.md (summary, ordering, coverage, figure), errors.csv (long
format: configuration x metric x split, with predicted, measured, abs_error, rel_error),
summary.csv, coverage.csv, ordering.csv, configs.csv, meta.json, pred_vs_measured.png.

exit status: 0 report written, 2 bad input or environment (one line: a missing, unreadable
or non-UTF-8 file, an output under a file, unwritable or already there without --force, an
overloaded machine for --probe without --busy-ok, a cost profile not for --arch), 130
interrupted (nothing written).
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "validate", help="compare predictions with a calibration's measurements",
        description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cost", required=True, metavar="PROFILE",
                   help="cost profile: built-in name or .toml path")
    p.add_argument("--data", metavar="DATA.jsonl", default=None,
                   help="measurements (default: the profile's sibling .data.jsonl)")
    p.add_argument("--kernel", default="6.18", help="kernel profile (default 6.18)")
    p.add_argument("--arch", default="x86_64", help="architecture profile (default x86_64)")
    p.add_argument("--holdout", default="kfold:5", help="held-out split (default kfold:5)")
    p.add_argument("--prior", default=None, help="prior for held-out refits (default: the "
                   "one recorded in the profile's .fit.json, else x86_64-generic)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="report directory (default reports/calibration/validate-<profile>)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--force-cost-profile", action="store_true",
                   help="use a cost profile that does not declare --arch among its archs")
    p.add_argument("--probe", action="store_true",
                   help="validate against the independent latency probe on held-out "
                        "configurations (see below)")
    p.add_argument("--reps", type=int, default=7,
                   help="--probe: repetitions per configuration and round (default 7)")
    p.add_argument("--probe-max-size", default="128M", metavar="SIZE",
                   help="--probe: largest held-out size (default 128M; up to 512M)")
    p.add_argument("--from-probe", metavar="PROBE.jsonl", default=None,
                   help="--probe: report recorded probe repetitions instead of probing")
    p.add_argument("--busy-ok", action="store_true",
                   help="--probe: probe even on an overloaded machine (3x repetitions)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from perfsim.calibrate.io import sibling
    from perfsim.calibrate.validate import validate, write_report
    from perfsim.cost import resolve_cost_profile

    prof = resolve_cost_profile(args.cost, arch=args.arch, force=args.force_cost_profile)
    if args.probe or args.from_probe:
        return run_probe(args, prof)
    data = args.data
    if data is None:
        if not str(args.cost).endswith(".toml"):
            raise PerfsimError(f"--data is required with the built-in profile {args.cost!r}")
        data = sibling(args.cost, ".data.jsonl")
    out = Path(args.out) if args.out else Path("reports/calibration") / f"validate-{prof.name}"
    check_output_dir(out, "--out")
    if out.exists() and not args.force:
        raise PerfsimError(f"--out {out} already exists; choose another directory or pass --force")
    rep = validate(data, args.cost, kernel=args.kernel, arch=args.arch, holdout=args.holdout,
                   prior=args.prior, seed=args.seed)
    cmd = "perfsim validate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "validate" else "perfsim validate"
    write_report(rep, out, command=cmd, force=args.force)
    print(f"validated {len(rep.table)} configurations of {Path(str(data)).name} with "
          f"{prof.name} (kernel {args.kernel}); held-out: {args.holdout}")
    for k, v in rep.headline().items():
        print(f"  {k}: {v:.1%}" if isinstance(v, float) else f"  {k}: {v}")
    bad = rep.ordering_summary
    for r in bad.itertuples():
        if r.wrong_at:
            print(f"  {r.split} ordering wrong at: {r.wrong_at}")
    if rep.meta.get("missing"):
        print(f"  measurement was {rep.meta.get('status')}: "
              f"{len(rep.meta['missing'])} item(s) missing (see README.md)")
    print(f"wrote {out}/README.md, errors.csv, summary.csv, coverage.csv, ordering.csv, "
          "pred_vs_measured.png")
    return 0


def run_probe(args: argparse.Namespace, prof) -> int:
    """``perfsim validate --probe``: the independent probe on held-out configurations."""
    import datetime as _dt
    import json

    from perfsim.calibrate.design import parse_size
    from perfsim.calibrate.pipeline import thp_available
    from perfsim.calibrate.probe import (
        build_probe,
        heldout_configs,
        probe_report,
        probe_rounds,
        render_probe_markdown,
    )
    from perfsim.errors import read_text
    from perfsim.host.load import extra_reps_factor, load_verdict, sample_load

    if args.reps < 3:
        raise PerfsimError(f"--reps {args.reps}: must be at least 3 (a median of fewer is not "
                           "robust)")
    try:
        max_size = parse_size(args.probe_max_size)
    except ValueError as e:
        raise PerfsimError(f"--probe-max-size: {e}") from None
    cfgs = heldout_configs(max_size, thp_available=thp_available())
    if not cfgs:
        raise PerfsimError(f"--probe-max-size {args.probe_max_size}: leaves no held-out "
                           "configuration (the smallest is 8K)")
    out = Path(args.out) if args.out else Path("reports/calibration") / f"probe-{prof.name}"
    check_output_dir(out, "--out")
    if out.exists() and not args.force:
        raise PerfsimError(f"--out {out} already exists; choose another directory or pass --force")
    load: dict = {}
    if args.from_probe:
        text = read_text(args.from_probe, "probe")
        try:
            records = [json.loads(x) for x in text.splitlines() if x.strip()]
        except json.JSONDecodeError as e:
            raise PerfsimError(f"probe file {args.from_probe!r}: not JSON lines ({e.msg})") \
                from None
        if not records or not all({"config_id", "round", "latency_ns", "class", "size", "src",
                                   "dst"} <= set(r) for r in records):
            raise PerfsimError(f"probe file {args.from_probe!r}: no probe repetitions in it")
    else:
        sample = sample_load()
        verdict, why = load_verdict(sample)
        load = {"verdict": verdict, **sample.as_dict()}
        reps = args.reps
        if verdict == "overloaded" and not args.busy_ok:
            raise PerfsimError(f"{why}: nothing was probed; run again when it is quieter, or "
                               "pass --busy-ok to probe with 3x the repetitions anyway")
        if verdict != "quiet":
            reps *= extra_reps_factor(verdict)
            print(f"perfsim validate: {why}: probing with {reps} repetitions per "
                  "configuration and round", file=sys.stderr)
        exe = build_probe()
        records = probe_rounds(exe, cfgs, reps=reps, rounds=2, seed=args.seed)
    rep = probe_report(records, prof, kernel=args.kernel, arch=args.arch)
    cmd = "perfsim validate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "validate" else "perfsim validate --probe"
    date = _dt.date.today().isoformat()
    with atomic_dir(out) as tmp:
        (tmp / "probe.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                                                 for r in records))
        t = rep.table.copy()
        t["round_medians_ns"] = [" ".join(f"{m:.0f}" for m in x) for x in t.round_medians_ns]
        t.to_csv(tmp / "probe.csv", index=False)
        (tmp / "meta.json").write_text(json.dumps(
            {"cost_profile": prof.name, "kernel": args.kernel, "arch": args.arch,
             "command": cmd, "date": date, "load": load, "summary": rep.summary},
            indent=1) + "\n")
        (tmp / "README.md").write_text(render_probe_markdown(
            rep, profile=prof.name, command=cmd, load=load, date=date))
    print(f"probed {len(rep.table)} held-out configurations with {prof.name} "
          f"(kernel {args.kernel})")
    for label, what in (("ge_30us", "calls >= 30 us"), ("all", "all calls"),
                        ("zap", "shrinks"), ("zap_thp", "THP shrinks")):
        if label in rep.summary:
            x = rep.summary[label]
            print(f"  {what} ({x['configurations']}): median |model error| "
                  f"{x['median_abs_error']:.1%}, median test-retest spread "
                  f"{x['median_retest_spread']:.1%}")
    print(f"wrote {out}/README.md, probe.csv, probe.jsonl, meta.json")
    return 0
