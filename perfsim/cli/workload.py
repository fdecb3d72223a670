"""``perfsim workload``: list, validate, run workloads; convert strace output to a trace CSV."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys

from perfsim.atomic import replace_dir, temp_dir_beside, write_file_atomically
from perfsim.cli import (
    check_named_file,
    check_trace_files,
    int_range,
    output_dir,
    output_file,
)
from perfsim.errors import PerfsimError, read_text

DESCRIPTION = """\
Work with workload files (workloads/*.toml, see docs/workloads.md):

  list                       the shipped named workloads
  validate FILE...           check files; errors name the file, the field and what is allowed
  run NAME|FILE [--out DIR]  simulate once and print the summary metrics (JSON)
  convert-strace LOG [-o CSV]
                             turn `strace -f -tt -y -e
                             trace=mremap,mmap,munmap,brk,ftruncate,mprotect,madvise`
                             output into the trace CSV a `kind = "trace"` stream replays
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
    r.add_argument("--seed", type=int_range(0), default=None)
    r.add_argument("--kernel", default=None)
    r.add_argument("--cost-profile", default=None)
    r.add_argument("--out", default=None, metavar="DIR",
                   help="also write the engine's record tables as Parquet here (written "
                        "atomically; an existing DIR is replaced only with --force)")
    r.add_argument("--force", action="store_true", help="replace an existing --out directory")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (by default: a bar on a terminal, a line every "
                        "few seconds in a log)")
    r.set_defaults(func=_run)
    c = ws.add_parser("convert-strace", help="strace log → trace CSV")
    c.add_argument("log", metavar="LOG")
    c.add_argument("-o", "--output", default="-", metavar="CSV",
                   help="the trace CSV (default: stdout); an existing file is replaced only "
                        "with --force")
    c.add_argument("--force", action="store_true", help="replace an existing -o file")
    c.set_defaults(func=_convert)


def _list(args) -> int:
    from perfsim.shipped import data_dir, names
    from perfsim.workload import load_workload

    for n in names("workloads"):
        w = load_workload(data_dir("workloads") / f"{n}.toml")
        print(f"{n:24s} {w.description}")
    return 0


def _validate(args) -> int:
    from perfsim.workload import load_workload

    for f in args.files:
        w = load_workload(f)
        check_trace_files(w.name, w.streams)
        check_profiles(f, w)
        print(f"{f}: ok ({w.name}, digest {w.digest})")
    return 0


def check_profiles(path, w) -> None:
    """The kernel, arch and cost profile a workload names must exist (a name or a readable
    profile file): ``workload validate`` said "ok" for a workload whose ``kernel = "zz"``
    only ``workload run`` refused."""
    from perfsim.cost import load_cost_profile
    from perfsim.profiles import resolve_target

    try:
        resolve_target(w.kernel, w.arch)
        load_cost_profile(w.cost_profile)
    except PerfsimError as exc:
        raise PerfsimError(f"{path}: {exc}") from None


def _run(args) -> int:
    from perfsim.profiles import resolve_target
    from perfsim.shipped import resolve
    from perfsim.workload import load_workload, resolve_workload, run_workload

    check_named_file(args.workload, "workload")
    path = resolve_workload(resolve("workloads", args.workload))
    w = load_workload(path)
    check_trace_files(w.name, w.streams)
    inputs = [path, args.cost_profile] + [getattr(s, "path", None) for s in w.streams]
    out = output_dir(args.out, "--out", args.force, inputs=inputs) if args.out else None
    target = resolve_target(args.kernel or w.kernel, w.arch)
    res, metrics, notes = run_workload(w, target=target, profile=args.cost_profile,
                                       seed=args.seed, progress=not args.quiet)
    if out is not None:
        tmp = temp_dir_beside(out)
        try:
            for name, df in res.frames().items():
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    print(json.dumps({"workload": w.name, "workload_digest": w.digest, "target": target.digest,
                      "notes": notes, **metrics}, indent=2))
    return 0


def _convert(args) -> int:
    from perfsim.workload.trace import convert_strace

    # strace escapes what is not printable, so a log is text; a stray byte is replaced.
    text = read_text(args.log, "strace log", errors="replace")
    out = (None if args.output == "-" else
           output_file(args.output, "-o/--output", args.force, inputs=[args.log]))
    buf = io.StringIO()
    st = convert_strace(text, buf, args.log)
    if st.calls == 0:
        raise PerfsimError(
            f"strace log {args.log!r}: nothing in it looks like strace output of mremap, mmap "
            f"or munmap ({st.lines} non-empty lines, none a call); record one with "
            "strace -f -tt -y -e trace=mremap,mmap,munmap,brk,ftruncate,mprotect,madvise "
            "-o LOG PROGRAM; "
            "nothing written")
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        write_file_atomically(out, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    print(f"{args.log}: {st.calls} calls read, {st.failed} failed, {st.skipped} lines skipped",
          file=sys.stderr)
    if st.untied:
        print(f"{args.log}: {st.untied} ftruncate calls dropped: without strace -y the log "
              "does not say which file each truncated, so the replay keeps those mappings' "
              "pages (docs/workloads.md, Traces)", file=sys.stderr)
    if st.not_replayed:
        which = ", ".join(f"{k} x{v}" for k, v in sorted(st.not_replayed.items()))
        print(f"{args.log}: madvise calls written but not replayed (the replay does not model "
              f"that advice; docs/workloads.md, Traces): {which}", file=sys.stderr)
    return 0
