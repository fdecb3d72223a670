"""``perfsim run SCENARIO.toml``: simulate a concurrent scenario and write its records.

A thin shell over :func:`perfsim.engine.simulate`. The records (calls, holds, flushes,
walker_waits, users) are written as Parquet (or CSV with ``--format csv``), together with
``summary.json`` (run totals, effective configuration, seed, profile digests). The output
directory appears atomically: everything is written to a temporary sibling first, then renamed.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from perfsim.atomic import replace_dir, temp_dir_beside
from perfsim.cli import int_range, output_dir
from perfsim.errors import PerfsimError

EPILOG = """\
examples:
  perfsim run workloads/scenarios/gc-compaction-reclaim.toml
  perfsim run workloads/scenarios/gc-compaction-reclaim.toml --out results/gc --seed 7
  perfsim run SCENARIO.toml --format csv --max-rows 200000

The scenario schema is documented in docs/engine.md (and perfsim/engine/scenario.py).
Records load into pandas in one line, e.g. pandas.read_parquet("results/gc/calls.parquet").
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="simulate a concurrent scenario (callers, walkers, IPIs) and write its records",
        description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", metavar="SCENARIO.toml", help="scenario file")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: results/<scenario name>); must not exist "
                        "unless --force")
    p.add_argument("--seed", type=int_range(0), default=None, help="override the scenario's seed")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet",
                   help="record format (default parquet)")
    p.add_argument("--max-rows", type=int_range(1), default=1_000_000, metavar="N",
                   help="rows per table kept in memory before spilling to disk (default 1e6)")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (by default: a bar on a terminal, a line every "
                        "few seconds in a log)")
    p.set_defaults(func=run)
    return p


def check_spec(spec, seed: int | None, path: str) -> None:
    """The checks :func:`perfsim.engine.simulate` makes of a run (CPUs of processes,
    callers, walkers and users exist; every actor names a process; a seed >= 0; callers or a
    duration), made here before the progress bar starts and anything is written, each one
    line naming the scenario file."""
    from perfsim.engine.simulate import _validate, check_seed  # noqa: PLC2701

    try:
        _validate(spec)
        check_seed(spec.seed if seed is None else seed)
    except PerfsimError as exc:
        raise PerfsimError(f"scenario {path}: {exc}") from None
    if spec.duration_ns is not None and spec.duration_ns <= 0:
        # (the scenario model takes 0, and SimPy refused it with a traceback)
        raise PerfsimError(f"scenario {path}: duration_ns: {spec.duration_ns}; allowed: a "
                           "duration > 0 (or no duration_ns: run until the callers finish)")


def run(args: argparse.Namespace) -> int:
    from perfsim.engine import build_spec, load_scenario, simulate

    sc = load_scenario(args.scenario)
    out = output_dir(args.out or Path("results") / sc.name, "--out", args.force,
                     inputs=[args.scenario])
    fmt = args.format
    spec = build_spec(sc)
    check_spec(spec, args.seed, args.scenario)
    tmp = temp_dir_beside(out)
    try:
        spill = tmp / "spill"
        res = simulate(spec, seed=args.seed, max_rows=args.max_rows, spill_dir=spill,
                       progress=not args.quiet)
        for name, df in res.frames().items():
            if fmt == "parquet":
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            else:
                df.to_csv(tmp / f"{name}.csv", index=False)
        shutil.rmtree(spill, ignore_errors=True)
        doc = {"summary": res.summary, "config": res.config}
        (tmp / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    calls = res.calls
    s = res.summary
    lat = calls["latency_ns"] if len(calls) else None
    print(f"scenario {sc.name!r}: seed {s['seed']}, simulated {s['end_ns'] / 1e6:.3f} ms, "
          f"{s['events']} events")
    if lat is not None:
        print(f"  mremap calls: {len(calls)}, latency ns p50 {int(lat.median())} "
              f"max {int(lat.max())}, mmap_lock wait max {int(calls['mmap_lock_wait_ns'].max())}, "
              f"rmap wait max {int(calls['rmap_wait_ns'].max())}")
    print(f"  rmap holds: {s['tables']['holds']['rows']}, flushes: {s['tables']['flushes']['rows']}, "
          f"walker waits: {s['tables']['walker_waits']['rows']} of "
          f"{sum(s['walker_visits'].values())} visits")
    print(f"  records ({fmt}): {out}")
    return 0
