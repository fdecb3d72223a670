"""``perfsim validate``: predicted vs measured, configuration by configuration.

A thin shell over :func:`perfsim.calibrate.validate.validate`; see docs/calibration.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from perfsim.errors import PerfsimError, check_output_dir

EPILOG = """\
examples:
  perfsim validate --cost reports/calibration/kvm-host-fit.toml
  perfsim validate --cost reports/calibration/kvm-host-fit.toml --holdout sizes --out /tmp/v
  perfsim validate --cost x86_64-generic --data reports/calibration/kvm-host-fit.data.jsonl
  perfsim validate --cost PROFILE.toml --holdout align=unaligned     # extrapolate a class

--data defaults to the profile's sibling PROFILE.data.jsonl. --holdout: kfold:K (default
kfold:5, stratified by group and alignment class), sizes (every other size held out),
FIELD=V1[,V2] (e.g. group=memfd, size=4G) or none.

writes OUT/ (atomically): README.md (summary, ordering, coverage, figure), errors.csv (long
format: configuration x metric x split, with predicted, measured, abs_error, rel_error),
summary.csv, coverage.csv, ordering.csv, configs.csv, meta.json, pred_vs_measured.png.
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
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from perfsim.calibrate.io import sibling
    from perfsim.calibrate.validate import validate, write_report
    from perfsim.cost import load_cost_profile

    prof = load_cost_profile(args.cost)
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
