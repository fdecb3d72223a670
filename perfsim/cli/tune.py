"""``perfsim tune``: search what-if knobs for the best setting of an objective."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from perfsim.cli import check_named_file, check_trace_files, int_range, output_dir
from perfsim.errors import PerfsimError, check_output_dir, parse_value

DESCRIPTION = """\
What-if tuning: vary kernel-profile fields (kernel.*, arch.*, arch.tlb.*), cost parameters
(cost.*) and workload fields (workload.*) and find the setting that minimises (or
maximises) an objective -- mean, p50, p99 latency, rmap_hold_p99, walker_wait_p99,
ipis_per_call, or a weighted mix -- under constraints. Small spaces are searched
exhaustively; larger ones (or knobs given as ranges) with Optuna (seeded TPE, SQLite
storage on disk: rerun to resume; pip install 'perfsim[tune]'). Every setting is
replicated on common random numbers, so the best settings come with confidence intervals
and a paired ratio to the profile's own setting. Writes reports/tune-NAME/ (index.html,
report.md, figure, data; an existing one is replaced only with --force). See docs/tune.md.
"""

EPILOG = """\
examples:
  perfsim tune studies/tune_flush_ceiling.toml
  perfsim tune studies/tune_gc_optuna.toml --trials 20       # optuna; rerun to resume
  perfsim tune --workload gc_compaction --knob kernel.realign_pmd=true,false \\
      --knob cost.ipi_round_trip_ns=1500,4000 --objective p99 --replications 3
"""


REPORT_IMPORTS = ("matplotlib.figure", "matplotlib.backends.backend_agg")
"""What the report's figure needs (about 0.3 s of imports): loaded while a pool simulates
when no figure process (:mod:`perfsim.report.figure_process`) draws it."""


REPORT_MODULES = ("perfsim.batch.t_table", "perfsim.report.tune_figure", "pandas",
                  "pyarrow.pandas_compat", "perfsim.report.tune_report", "pyarrow.parquet",
                  "pandas.core.arrays.arrow.extension_types", "pandas.io.formats.csvs",
                  "perfsim.report.provenance")
"""What the figure's early drawing, the analysis and the report writer need (the t table
and the figure's numbers, :func:`early_figure`; pandas and what its first DataFrame of the
rows loads; the tables, findings and HTML, the figure's data, the Parquet and CSV writers,
the provenance; about 0.25 CPU-s of imports): loaded while a pool simulates, when this
process only waits, in the order they are needed. What is not loaded when the search ends
is imported where it is used: the early drawing needs the first two, the analysis and the
figure's data the next three; the rest is used only once the figure is being drawn
(:func:`~perfsim.report.tune_report.write_tune_report`)."""


def register(sub) -> None:
    p = sub.add_parser("tune", help="search what-if knobs for the best setting",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tune", nargs="?", metavar="TUNE.toml",
                   help="tune file, or the name of a shipped one (studies/NAME.toml)")
    p.add_argument("--workload", metavar="NAME|PATH", help="workload (no tune file)")
    p.add_argument("--knob", action="append", default=[], metavar="KEY=V1,V2",
                   help="a knob and its values (values parsed as TOML, else strings); "
                        "repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V",
                   help="a fixed override for every setting; repeatable")
    p.add_argument("--objective", default=None,
                   help="mean | p50 | p90 | p99 | rmap_hold_p99 | walker_wait_p99 | "
                        "ipis_per_call | a run metric (default: the file's, or mean)")
    p.add_argument("--maximize", action="store_true", help="maximize the objective (default: "
                                                           "the file's direction, or minimize)")
    p.add_argument("--replications", type=int_range(2, 10_000), default=None,
                   help="replications per setting, 2..10000 (default: the file's, or 3)")
    p.add_argument("--seed", type=int_range(0), default=None)
    p.add_argument("--name", help="tune name (report directory tune-NAME)")
    p.add_argument("--method", choices=("auto", "grid", "optuna"), default=None)
    p.add_argument("--trials", type=int_range(1, 100_000), default=None,
                   help="optuna trials in total, 1..100000 (only for an optuna search)")
    p.add_argument("--state-dir", default=".perfsim-tune", metavar="DIR",
                   help="optuna storage directory (default .perfsim-tune)")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="reports root; the report is DIR/tune-NAME (default: reports)")
    p.add_argument("--force", action="store_true", help="replace an existing DIR/tune-NAME")
    p.add_argument("--executor", default="process", metavar="SPEC",
                   help="serial | process[:N] (default; all cores) | dask://HOST:PORT | "
                        "dask-local[:N]")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (the summary is still printed)")
    p.add_argument("--json", action="store_true",
                   help="print the summary (best settings, baseline, report path) as JSON")
    p.set_defaults(func=run)


def _kv(item: str, flag: str) -> tuple[str, str]:
    key, eq, vals = item.partition("=")
    if not eq or not key.strip():
        raise PerfsimError(f"{flag} {item!r}: expected KEY=VALUE(S)")
    return key.strip(), vals


def build_spec(args):
    from perfsim.tune import load_tune, parse_tune

    if args.workload:
        check_named_file(args.workload, "workload")
    if args.tune:
        from perfsim.shipped import resolve

        spec = load_tune(resolve("studies", args.tune))
        data = spec.model_dump(mode="json")
        if args.workload:  # a path on the command line is relative to the working directory
            p = Path(args.workload)
            data["workload"] = str(p.resolve()) if p.exists() else args.workload
    else:
        if not args.workload or not args.knob:
            raise PerfsimError("give a tune file, or --workload and at least one --knob")
        data = {"workload": args.workload, "knobs": {}, "name": args.name or Path(args.workload).stem}
    given: dict[str, str] = {}
    for flag, items in (("--knob", args.knob), ("--set", args.set)):
        for item in items:
            k, v = _kv(item, flag)
            if k in given:
                raise PerfsimError(f"{flag} {item!r}: {k!r} is already given by "
                                   f"{given[k]}; give each knob once (values joined by commas)")
            given[k] = f"{flag} {item!r}"
            # The command line wins over the file: a knob given here leaves the file's set,
            # a value set here leaves the file's knobs.
            mine, other = ("knobs", "set") if flag == "--knob" else ("set", "knobs")
            data.get(other, {}).pop(k, None)
            data.setdefault(mine, {})[k] = ([parse_value(x) for x in v.split(",")]
                                            if flag == "--knob" else parse_value(v))
    objective = dict(data.get("objective") or {})
    if args.objective is not None:  # replaces the file's metric (or weighted mix)
        objective.update(metric=args.objective, weights={})
    if args.maximize:
        objective["direction"] = "maximize"
    data["objective"] = objective
    for field, val in (("replications", args.replications), ("seed", args.seed),
                       ("name", args.name)):
        if val is not None:
            data[field] = val
    if args.method:
        data.setdefault("search", {})["method"] = args.method
    return parse_tune(data, args.tune or "command line")


def run(args: argparse.Namespace) -> int:
    # Imported once here, before the figure process is forked, rather than in each process
    # that needs them: numpy (all) and numpy.ma (pandas, matplotlib, the simulations), about
    # 0.08 CPU-s for numpy and 0.01 for numpy.ma, per process (2026-12-01).
    import numpy  # noqa: F401
    import numpy.ma  # noqa: F401

    from perfsim.report.figure_process import FigureProcess, worth_starting

    # Forked first, before this process imports the search (pydantic models, SimPy, the
    # planner: about a third of a second on one core), so that the figure's imports run on
    # the other core meanwhile; it is told to exit (or dies with this process) whatever
    # happens next, bad input included.
    with FigureProcess() as figures:
        if worth_starting():
            figures.start()
        # The pool's simulations (and pandas) need numpy.random, the figure process does
        # not: imported after its fork, before the pool's (0.01 CPU-s).
        import numpy.random  # noqa: F401

        return _run(args, figures)


def _run(args: argparse.Namespace, figures) -> int:
    from perfsim.batch.executors import paused_gc

    with paused_gc():  # imports and validation: nothing to collect
        from perfsim.tune import run_tune

        spec = build_spec(args)
        _check_workload_traces(spec)
    method = spec.method()
    if args.trials is not None and method != "optuna":
        raise PerfsimError(f"--trials: tune {spec.name!r} is searched as a grid of "
                           f"{spec.grid_size()} settings, where trials do not apply "
                           "(add --method optuna for a sampled search)")
    # Every output is checked before the search starts.
    out = output_dir(Path(args.out) / f"tune-{spec.name}", "--out", args.force)
    if method == "optuna":
        check_output_dir(args.state_dir, "--state-dir")
    from perfsim.tune.search import analysis_needs_scipy

    scipy = figures.proc is not None and analysis_needs_scipy(spec)
    draw = early_figure(spec, figures) if figures.proc is not None and not scipy else None
    revision = Revision()

    def on_rows(rows: list[dict]) -> None:  # the search is done; the analysis is next
        if draw is not None:
            draw(rows)
        revision.start()

    res = run_tune(spec, executor=args.executor, quiet=args.quiet, state_dir=args.state_dir,
                   trials=args.trials,
                   prefetch=REPORT_MODULES + (() if figures.proc else REPORT_IMPORTS),
                   quantile=figures.t_quantile if scipy else None, on_rows=on_rows)
    from perfsim.report.tables import tune_tables
    from perfsim.report.tune_report import write_tune_report

    out = write_tune_report(res, out, figures=figures,
                            revision=revision.result if revision.ident is not None else None)
    best = tune_tables(res)[0]
    if args.json:
        print(json.dumps(summary_doc(res, best, out), indent=2, default=str))
        return 0
    print(f"tune {spec.name}: {res.method}, {len(res.settings) - 1} settings × "
          f"{spec.replications} replications, {res.wall_s:.1f} s")
    for _, row in best.df.iterrows():
        cells = [f"{c}={best.cell_text(row, c)}" for c in best.shown_columns() if c != "row"]
        print(f"  {row['row']}: " + "  ".join(cells))
    print(f"report: {out / 'index.html'}")
    return 0


class Revision(threading.Thread):
    """The git revision of perfsim's source tree for the report's provenance
    (:func:`~perfsim.report.provenance.git_revision`: two ``git`` commands, about 10 ms
    here), asked in a daemon thread once the search is done, so that the commands run while
    this process analyses and writes the tables instead of after."""

    def __init__(self) -> None:
        super().__init__(name="perfsim-git-revision", daemon=True)
        self.value = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        from perfsim.report.provenance import git_revision

        try:
            self.value = git_revision()
        except BaseException as exc:  # noqa: BLE001 - raised where the answer is asked for
            self.error = exc

    def result(self) -> str:
        """The revision (``""`` outside a git work tree), once the commands are done; what
        ``git_revision`` raised, if it raised."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def early_figure(spec, figures):
    """``run_tune``'s ``on_rows`` for ``perfsim tune``: the moment the search's last row is
    in, the figure process starts drawing the figure from the rows' numbers
    (:func:`~perfsim.tune.search.early_plot_numbers`,
    :func:`~perfsim.report.tune_figure.plot_of_numbers`), while this process still waits
    for pandas, analyses and writes the tables; the report takes those images only if its
    own figure is the same (:meth:`~perfsim.report.figure_process.FigureProcess.draw`).
    Only a speed-up: whatever goes wrong here, the report draws its figure as without it."""

    def on_rows(rows: list[dict]) -> None:
        from perfsim.report.tune_figure import plot_of_numbers
        from perfsim.tune.search import early_plot_numbers

        try:
            got = early_plot_numbers(spec, rows)
            if got is None:  # no run succeeded: the analysis says so
                return
            plot = plot_of_numbers(list(spec.knobs), spec.objective.label,
                                   spec.objective.terms(), *got)
        except Exception:  # noqa: BLE001 - the analysis reports what is wrong with the rows
            return
        figures.draw_ahead(plot, f"tune-{spec.name}")

    return on_rows


def _check_workload_traces(spec) -> None:
    from perfsim.workload import load_workload, resolve_workload

    w = load_workload(resolve_workload(spec.workload, Path(spec.base_dir) if spec.base_dir
                                       else None))
    check_trace_files(w.name, w.streams)


def summary_doc(res, best, out: Path) -> dict:
    """The ``--json`` summary: what was searched, the best settings (the rows of the report's
    best-settings table, values as numbers) and where the report is."""
    return {"name": res.spec.name, "method": res.method,
            "objective": res.spec.objective.label, "direction": res.spec.objective.direction,
            "settings": len(res.settings) - 1, "replications": res.spec.replications,
            "wall_s": round(res.wall_s, 3), "baseline": _plain(res.baseline),
            "best": [_plain(r) for r in best.df.to_dict(orient="records")],
            "report": str(out / "index.html"), "storage": res.storage or None}


def _plain(v):
    """A value of a result table as JSON: numpy scalars as Python ones, NaN as null."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    item = getattr(v, "item", None)
    v = item() if callable(item) else v
    return None if isinstance(v, float) and v != v else v
