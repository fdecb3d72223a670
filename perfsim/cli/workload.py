"""``perfsim workload``: list, validate, run workloads; convert strace output to a trace CSV."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
Work with workload files (workloads/*.toml, see docs/workloads.md):

  list                       the shipped named workloads
  validate FILE...           check files; errors name the file, the field and what is allowed
  run NAME|FILE              simulate once and print the summary metrics (JSON)
  convert-strace LOG [-o CSV]
                             turn `strace -f -tt -e trace=mremap,mmap,munmap` output into
                             the trace CSV a `kind = "trace"` stream replays
"""


def register(sub) -> None:
    p = sub.add_parser("workload", help="list, validate and run workloads; convert strace logs",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ws = p.add_subparsers(dest="workload_cmd", metavar="ACTION")
    ws.add_parser("list", help="shipped workloads").set_defaults(func=_list)
    v = ws.add_parser("validate", help="validate workload files")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(func=_validate)
    r = ws.add_parser("run", help="simulate a workload once")
    r.add_argument("workload", metavar="NAME|FILE")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--kernel", default=None)
    r.add_argument("--cost-profile", default=None)
    r.add_argument("--out", default=None, metavar="DIR",
                   help="also write the engine's record tables as Parquet here")
    r.set_defaults(func=_run)
    c = ws.add_parser("convert-strace", help="strace log → trace CSV")
    c.add_argument("log", metavar="LOG")
    c.add_argument("-o", "--output", default="-", metavar="CSV")
    c.set_defaults(func=_convert)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _list(args) -> int:
    from perfsim.workload import load_workload
    from perfsim.workload.run import WORKLOAD_DIR, workload_names

    for n in workload_names():
        w = load_workload(WORKLOAD_DIR / f"{n}.toml")
        print(f"{n:24s} {w.description}")
    return 0


def _validate(args) -> int:
    from perfsim.workload import load_workload

    for f in args.files:
        w = load_workload(f)
        print(f"{f}: ok ({w.name}, digest {w.digest})")
    return 0


def _run(args) -> int:
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload, run_workload

    w = load_workload(resolve_workload(args.workload))
    target = resolve_target(args.kernel or w.kernel, w.arch)
    res, metrics, notes = run_workload(w, target=target, profile=args.cost_profile,
                                       seed=args.seed)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in res.frames().items():
            df.to_parquet(out / f"{name}.parquet", index=False)
    print(json.dumps({"workload": w.name, "workload_digest": w.digest, "target": target.digest,
                      "notes": notes, **metrics}, indent=2))
    return 0


def _convert(args) -> int:
    from perfsim.errors import PerfsimError
    from perfsim.workload.trace import convert_strace

    try:
        text = Path(args.log).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PerfsimError(f"cannot read {args.log!r}: {exc}") from None
    if args.output == "-":
        st = convert_strace(text, sys.stdout, args.log)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            st = convert_strace(text, f, args.log)
    print(f"{args.log}: {st.calls} calls read, {st.failed} failed, {st.skipped} lines skipped",
          file=sys.stderr)
    return 0
