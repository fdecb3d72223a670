"""``perfsim report``: run a study and write ``reports/<name>/`` (HTML, Markdown, figures,
data, provenance); ``--trace-call`` exports one call as Chrome trace-event JSON; ``--check``
renders a written report in headless Chromium."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perfsim.atomic import write_file_atomically
from perfsim.cli import int_range, output_dir, output_file
from perfsim.errors import PerfsimError, check_dir_name, read_toml

DESCRIPTION = """\
Answer "what do realigned and unaligned mremap() moves cost, and what if a threshold
changed?" with tables and plots. Without --study, runs the built-in default study
(docs/report.md): x86-64, kernels 6.6 vs 6.18, both shipped cost profiles, sizes 4K..4G,
five alignment classes, 1/4/16 threads, anon vs shmem, THP on/off, the shipped workload
scenarios in paired arms, and a what-if tuning of tlb_single_page_flush_ceiling.
The report directory is written atomically (built beside it, then renamed); an existing
one is replaced only with --force.
"""

EPILOG = """\
examples:
  perfsim report                                   # → reports/default/index.html
  perfsim report --study quick --executor serial  # a shipped study by name (studies/quick.toml)
  perfsim report --trace-call unaligned:64M --kernel 6.18 --threads 4 -o call.json
  perfsim report --check reports/default           # headless Chromium: images, console
"""


def register(sub) -> None:
    p = sub.add_parser("report", help="run a study and write an HTML/Markdown report",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", metavar="NAME|FILE.toml",
                   help="study file, or the name of a shipped one (default: built-in)")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="reports root; the report is DIR/NAME (default: reports)")
    p.add_argument("--name", help="report name, a directory name inside --out (default: the "
                                  "study's name)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing report DIR/NAME (or trace file -o)")
    p.add_argument("--executor", default="process", metavar="SPEC",
                   help="serial | process[:N] (default; all cores) | dask://HOST:PORT | "
                        "dask-local[:N]")
    p.add_argument("--kernels", metavar="OLD,NEW",
                   help="compare these two kernel profiles instead of the study's (e.g. "
                        "6.1,7.3: baseline first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    t = p.add_argument_group("trace export (instead of a report)")
    t.add_argument("--trace-call", metavar="CLASS:SIZE",
                   help="export one call as Chrome trace-event JSON; CLASS is pud, pmd, "
                        "realignable, blocked or unaligned")
    t.add_argument("--kernel", default="6.18", help="kernel profile (default 6.18)")
    t.add_argument("--arch", default="x86_64", help="architecture (default x86_64)")
    t.add_argument("--cost-profile", default=None, metavar="NAME|PATH",
                   help="cost profile (default: the arch's own, e.g. x86_64-generic)")
    t.add_argument("--threads", type=int_range(1, 1024), default=1,
                   help="CPUs in the mm (IPI fan-out), 1..1024")
    t.add_argument("--backing", default="anon", choices=("anon", "shmem", "file"))
    t.add_argument("--thp", action="store_true", help="THP-backed source")
    t.add_argument("-o", "--output", metavar="FILE", help="trace file (default: stdout)")
    p.add_argument("--check", metavar="DIR",
                   help="render DIR/index.html in headless Chromium and report broken images "
                        "and console errors (exit 3 on problems)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        from perfsim.report.browser import check_report

        res = check_report(args.check)
        print(json.dumps(res, indent=2))
        return 0 if res["ok"] else 3
    if args.trace_call:
        return _trace(args)
    from perfsim.report import default_study, make_report

    study = _load_study(args.study) if args.study else default_study()
    if args.kernels:
        study = _with_kernels(study, args.kernels)
    name = args.name or study.name
    try:
        check_dir_name(name, "report")
    except ValueError as exc:
        raise PerfsimError(f"--name {name!r}: {exc}") from None
    output_dir(Path(args.out) / name, "--out", args.force)
    # make_report writes DIR/NAME atomically, replacing an old one: the refusal without
    # --force is the check above, made before the study runs.
    out = make_report(study, args.out, executor=args.executor, quiet=args.quiet, name=name)
    print(f"report: {out / 'index.html'}  (also report.md, figures/, data/, traces/)")
    return 0


def _with_kernels(study, text: str):
    """The study comparing the kernel profiles ``OLD,NEW`` (each must be known)."""
    from perfsim.profiles import kernel_names, load_kernel
    from perfsim.report.study import Study
    from perfsim.schema import load_model

    kernels = []
    for k in (k.strip() for k in text.split(",")):
        try:  # a line (6.12), or a release of one (6.12.5: that release's decisions)
            kernels.append(load_kernel(k).name)
        except PerfsimError:
            raise PerfsimError(f"--kernels: unknown kernel profile {k!r}; known: "
                               f"{', '.join(kernel_names())} (or a release of one, "
                               "e.g. 6.12.5)") from None
    doc = study.model_dump()
    doc["kernels"] = kernels
    doc["description"] = (f"{study.description} Kernels compared: {kernels[0]} (baseline) vs "
                          f"{kernels[-1]}." if len(kernels) == 2 else study.description)
    return load_model(doc, Study, "study", origin="--kernels")


def _load_study(name_or_path: str):
    """A study by path or shipped name; a file without a single setting is an error (it
    would silently run the whole default study)."""
    from perfsim.report import load_study
    from perfsim.shipped import resolve

    path = resolve("studies", name_or_path)
    if not read_toml(path, "study"):
        raise PerfsimError(f"study file {str(path)!r} is empty: give the settings to study "
                           "(see docs/report.md), or leave out --study for the default study")
    return load_study(path)


def _trace(args) -> int:
    from perfsim.report.study import TraceCall

    cls, _, size = args.trace_call.partition(":")
    if not size:
        raise PerfsimError(f"--trace-call {args.trace_call!r}: expected CLASS:SIZE, e.g. "
                           "unaligned:64M")
    from pydantic import ValidationError

    try:
        call = TraceCall.model_validate({"class": cls, "size": size, "kernel": args.kernel,
                                         "cost_profile": args.cost_profile,
                                         "threads": args.threads, "backing": args.backing,
                                         "thp": args.thp})
    except ValidationError as exc:
        from perfsim.report.study import _describe

        raise PerfsimError(f"--trace-call: {_describe(exc)}") from None
    _check_trace_size(call.cls, size, args.kernel, args.arch)
    from perfsim.report.trace import export_call

    if args.output:
        out = output_file(args.output, "-o/--output", args.force)
        meta = write_file_atomically(out, lambda tmp: export_call(call, tmp, arch=args.arch))
        print(f"{args.output}: {meta['steps']} steps, {meta['latency_ns']:,} ns "
              f"(open in https://ui.perfetto.dev)", file=sys.stderr)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "t.json"
            export_call(call, f, arch=args.arch)
            sys.stdout.write(f.read_text() + "\n")
    return 0


def _check_trace_size(cls: str, size_text: str, kernel: str, arch: str) -> None:
    """The move of class ``cls`` (fixed source and destination addresses) must fit in the
    arch's user address range [0, TASK_SIZE): else one line, before anything is planned
    (a size like 99999999T would otherwise try to allocate page tables for it)."""
    from perfsim.report.shapes import SHAPES, target_for
    from perfsim.units import parse_size

    size = parse_size(size_text, what="--trace-call size")
    if size < 1:
        raise PerfsimError(f"--trace-call size {size_text!r}: must be at least one byte")
    top = target_for(kernel, arch).arch.user_va_top
    src, dst, _ = SHAPES[cls]
    room = top - max(src, dst)
    if size > room:
        raise PerfsimError(f"--trace-call {cls}:{size_text}: the {cls} move from {src:#x} to "
                           f"{dst:#x} can be at most {room:#x} bytes long to end inside the "
                           f"user address range [0, {top:#x}) of {arch}")
