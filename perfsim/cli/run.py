"""``perfsim run SCENARIO.toml``: simulate a concurrent scenario and write its records.

A thin shell over :func:`perfsim.engine.simulate`. The records (calls, holds, flushes,
walker_waits, users) are written as Parquet when pyarrow is installed, else CSV, together with
``summary.json`` (run totals, effective configuration, seed, profile digests). The output
directory appears atomically: everything is written to a temporary sibling first, then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

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
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--format", choices=("auto", "parquet", "csv"), default="auto",
                   help="record format (auto: parquet if pyarrow is installed)")
    p.add_argument("--max-rows", type=int, default=1_000_000, metavar="N",
                   help="rows per table kept in memory before spilling to disk (default 1e6)")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.set_defaults(func=run)
    return p


def _format(choice: str) -> str:
    if choice != "auto":
        if choice == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise PerfsimError("--format parquet needs pyarrow; install it or use --format csv") from None
        return choice
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "csv"
    return "parquet"


def run(args: argparse.Namespace) -> int:
    from perfsim.engine import build_spec, load_scenario, simulate

    sc = load_scenario(args.scenario)
    out = Path(args.out) if args.out else Path("results") / sc.name
    if out.exists() and not args.force:
        raise PerfsimError(f"--out {out} already exists; choose another directory or pass --force")
    if args.max_rows < 1:
        raise PerfsimError("--max-rows must be at least 1")
    fmt = _format(args.format)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        spill = tmp / "spill"
        res = simulate(build_spec(sc), seed=args.seed, max_rows=args.max_rows, spill_dir=spill)
        for name, df in res.frames().items():
            if fmt == "parquet":
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            else:
                df.to_csv(tmp / f"{name}.csv", index=False)
        shutil.rmtree(spill, ignore_errors=True)
        doc = {"summary": res.summary, "config": res.config}
        (tmp / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
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
