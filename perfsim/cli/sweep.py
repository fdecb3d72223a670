"""``perfsim sweep``: plan a grid of simulations (pure), then run it into a Parquet dataset.

Thin over :mod:`perfsim.batch`: ``load_sweep`` → ``plan_sweep`` → ``run_sweep``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perfsim.cli import check_named_file, check_trace_files, int_range
from perfsim.errors import PerfsimError, check_dir_name, check_output_dir, parse_value

DESCRIPTION = """\
Run a sweep: every cell of a grid over workload, kernel-profile and cost-profile fields,
times a number of replications, each a full simulation. The grid is planned first (a pure
function: same file, same points, same content keys), then run on an executor. Rows go to
OUT/NAME/part-*.parquet with their provenance; points already stored are skipped, so a
rerun after a crash or an edit only runs what is missing. Failed points are stored as
rows with status "failed" and their error message. Paired comparisons ([[paired]] in the
file) are printed at the end and written to OUT/NAME/_paired.csv.

Without a sweep file, --workload and --grid build one on the command line.
"""

EPILOG = """\
examples:
  perfsim sweep sweeps/gc_aligned_vs_unaligned.toml
  perfsim sweep sweeps/kernels_ab.toml --executor dask-local:2 --out results
  perfsim sweep --workload gc_compaction --grid kernel=6.6,6.18 --replications 5 \\
      --pair kernel=6.18,6.6 --name gc-kernels
  perfsim sweep sweeps/realign_on_off.toml --dry-run          # show the plan only

load the results:
  python -c 'import pandas as pd; print(pd.read_parquet("results/gc_aligned_vs_unaligned"))'
"""


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of simulations into a Parquet dataset",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", nargs="?", metavar="SWEEP.toml", help="sweep file")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="results root; the dataset is DIR/NAME (default: results)")
    p.add_argument("--executor", default="process", metavar="SPEC",
                   help="serial | process[:N] (default; N = all cores) | dask://HOST:PORT | "
                        "dask-local[:N] (start a LocalCluster)")
    p.add_argument("--batch-size", type=int_range(1), default=None, metavar="N",
                   help="simulations per task (default: about 4 tasks per worker, <= 64)")
    p.add_argument("--replications", type=int_range(1, 100_000), default=None, metavar="N",
                   help="override the file's replications")
    p.add_argument("--seed", type=int_range(0), default=None, help="override the sweep seed")
    p.add_argument("--workload", metavar="NAME|PATH", help="base workload (no sweep file)")
    p.add_argument("--name", help="sweep name (no sweep file; default: the workload's name)")
    p.add_argument("--grid", action="append", default=[], metavar="AXIS=V1,V2",
                   help="add a grid axis (values parsed as TOML, else strings); repeatable")
    p.add_argument("--pair", action="append", default=[], metavar="AXIS=A,B",
                   help="paired comparison of arms A and B of a grid axis")
    p.add_argument("--metric", default="lat_mean_ns", help="metric for --pair")
    p.add_argument("--retry-failed", action="store_true", help="rerun points stored as failed")
    p.add_argument("--dry-run", action="store_true", help="print the planned points and exit")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (the summary and paired results are still printed)")
    p.add_argument("--json", action="store_true",
                   help="print the summary (and paired results) as one JSON document on stdout")
    p.set_defaults(func=main)


def _axis(text: str, what: str) -> tuple[str, list]:
    axis, eq, vals = text.partition("=")
    if not eq or not axis.strip() or not vals.strip():
        raise PerfsimError(f"{what} {text!r}: expected AXIS=V1,V2,...")
    return axis.strip(), [parse_value(v.strip()) for v in vals.split(",")]


def build_sweep(args):
    from perfsim.batch.sweep import load_sweep, parse_sweep

    if args.workload:
        check_named_file(args.workload, "workload")
    if args.sweep:
        sweep = load_sweep(args.sweep)
        data = sweep.spec.model_dump(mode="python")
        base_dir = sweep.base_dir
        origin = sweep.origin
    else:
        if not args.workload:
            raise PerfsimError("give a SWEEP.toml or --workload (see 'perfsim sweep --help')")
        name = args.name or Path(args.workload).stem
        try:
            check_dir_name(name, "sweep")
        except ValueError as exc:
            raise PerfsimError(f"--name {name!r}: {exc}") from None
        data = {"name": name, "base": {"workload": args.workload}, "grid": {}, "paired": []}
        base_dir = Path.cwd()
        origin = "<command line>"
    if args.workload and args.sweep:
        data["base"]["workload"] = args.workload
    given: dict[str, str] = {}
    for g in args.grid:
        axis, vals = _axis(g, "--grid")
        if axis in given:
            raise PerfsimError(f"--grid {g!r}: axis {axis!r} is already given by --grid "
                               f"{given[axis]!r}; give each axis once, its values joined by "
                               "commas")
        given[axis] = g
        data.setdefault("grid", {})[axis] = vals
    for pr in args.pair:
        axis, vals = _axis(pr, "--pair")
        if len(vals) != 2:
            raise PerfsimError(f"--pair {pr!r}: give exactly two arms, AXIS=A,B")
        data.setdefault("paired", []).append({"axis": axis, "a": vals[0], "b": vals[1],
                                              "metric": args.metric})
    if args.replications is not None:
        data["replications"] = args.replications
    if args.seed is not None:
        data["seed"] = args.seed
    data = {k: v for k, v in data.items() if v is not None}
    return parse_sweep(data, base_dir, origin)


def main(args) -> int:
    from perfsim.batch.api import run_sweep
    from perfsim.batch.sweep import plan_sweep

    sweep = build_sweep(args)
    for ref, (raw, _origin) in sweep.workloads.items():
        check_trace_files(ref, raw.get("streams"))
    points = plan_sweep(sweep)
    if args.dry_run:
        for p in points:
            print(json.dumps({"key": p.key, "replication": p.replication, **p.params,
                              "workload": p.workload.name, "kernel": p.target.kernel.name,
                              "cost_profile": p.profile.name}, default=str))
        print(f"{len(points)} points", file=sys.stderr)
        return 0
    # The dataset directory is checked before anything is written into it (_sweep.json).
    check_output_dir(Path(args.out) / sweep.spec.name, "--out")
    rep = run_sweep(sweep, args.out, executor=args.executor, batch_size=args.batch_size,
                    quiet=args.quiet, retry_failed=args.retry_failed, points=points)
    if args.json:
        print(json.dumps(summary_doc(rep), indent=2, default=_jsonable))
        return 0
    print(f"{rep.planned} points: {rep.skipped} already stored, {rep.ran} run "
          f"({rep.failed} failed) in {rep.wall_s:.1f} s on {rep.executor} x{rep.workers}")
    print(f"results: {rep.path}  (pandas: pd.read_parquet({str(rep.path)!r}))")
    for t in rep.paired:
        _print_paired(t)
    return 0


def summary_doc(rep) -> dict:
    """The ``--json`` summary of a sweep run: counts, time, executor, dataset path and one
    record per paired comparison (the columns of ``_paired.csv``)."""
    return {"path": str(rep.path), "planned": rep.planned, "skipped": rep.skipped,
            "ran": rep.ran, "failed": rep.failed, "wall_s": round(rep.wall_s, 3),
            "executor": rep.executor, "workers": rep.workers,
            "paired": [{k: _plain(v) for k, v in r.items()}
                       for t in rep.paired for r in t.to_dict(orient="records")]}


def _plain(v):
    """A table cell as a JSON value: numpy scalars as Python ones, NaN as null."""
    item = getattr(v, "item", None)
    v = item() if callable(item) else v
    return None if isinstance(v, float) and v != v else v


def _jsonable(v):
    return str(v)


def _print_paired(t) -> None:
    for _, r in t.iterrows():
        others = {k[2:]: r[k] for k in t.columns if k.startswith("p:")}
        where = ", ".join(f"{k}={v}" for k, v in others.items())
        print(f"paired {r['axis']}: {r['a']} vs {r['b']} on {r['metric']}"
              + (f" [{where}]" if where else ""))
        print(f"  n={r['n']}  a={r['mean_a']:.6g}  b={r['mean_b']:.6g}  "
              f"diff={r['diff']:.6g} [{r['diff_lo']:.6g}, {r['diff_hi']:.6g}]  "
              f"ratio={r['ratio']:.4f} [{r['ratio_lo']:.4f}, {r['ratio_hi']:.4f}]  "
              f"replications needed: {r['n_needed']}")
