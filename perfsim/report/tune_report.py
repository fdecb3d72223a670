"""The report of one tuning (``perfsim tune``): its section, tables, figure and data.

Only what that report needs is imported here (the tables, figures, findings and writer
modules), not the study runner's: ``perfsim tune`` loads this module while its pool
simulates (:data:`perfsim.cli.tune.REPORT_MODULES`). :mod:`perfsim.report.build` uses
:func:`tune_section` for the tunings of a study report.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from perfsim.report import figures as F
from perfsim.report.findings import _tunes
from perfsim.report.tables import tune_tables
from perfsim.report.write import Document, Section, atomic_dir, write_document

TUNE_NOTES = {
    "single_page_flush_ceiling": (
        "Caveat: the cost profiles charge a full flush its CR3 write only; the TLB refill it "
        "causes is paid later by user code and is not modelled, so lower ceilings look better "
        "here than they are on a real machine with a large working set."),
}


def tune_section(tr) -> Section:
    name = tr.spec.name
    notes = [v for k, v in TUNE_NOTES.items() if any(k in kn for kn in tr.knobs)]
    cons = "; ".join(c.label for c in tr.spec.constraints) or "none"
    intro = (f"{tr.spec.description} Knobs: {', '.join(tr.knobs)}. Objective: "
             f"{tr.spec.objective.label} ({tr.spec.objective.direction}). Constraints: {cons}. "
             f"Search: {tr.method}; {len(tr.settings) - 1} settings × {tr.spec.replications} "
             f"replications in {tr.wall_s:.1f} s.")
    if tr.storage:
        notes.append(f"Optuna storage (resume by rerunning): {tr.storage}")
    return Section(f"tune-{name}", f"What-if tuning: {name}", intro, [f"tune-{name}"],
                   [f"tune-{name}-best", f"tune-{name}-sensitivity", f"tune-{name}-settings"],
                   notes)


def write_tune_report(tr, outdir: str | Path, *, date: str | None = None,
                      figures=None, revision=None) -> Path:
    """A report with the tuning's section alone (``perfsim tune``). ``figures``: a started
    :class:`~perfsim.report.figure_process.FigureProcess` to draw the figure while the
    tables and data are written (the same files; without one it is drawn here); once the
    images are written it is told it may exit (:meth:`~perfsim.report.figure_process.
    FigureProcess.done`): it is asked nothing after them. ``revision``: returns the source
    tree's git revision (:func:`~perfsim.report.provenance.git_revision`'s answer, e.g.
    asked in a thread while the analysis ran; default: asked here)."""
    import perfsim
    from perfsim.report.figure_process import FigureProcess

    outdir = Path(outdir)
    with atomic_dir(outdir) as tmp:
        (tmp / "data").mkdir()
        (tmp / "figures").mkdir()
        fig, plot = F.tune_plot(tr)
        drawing = (figures or FigureProcess()).draw(plot, tmp, fig.id)
        # Imported once the figure is on its way (perfsim tune's prefetch may not have
        # reached it when the search ended: cli.tune.REPORT_MODULES).
        from perfsim.report.provenance import git_revision, machine

        tables = {t.id: t for t in tune_tables(tr)}
        F.save_data(fig, tmp)
        shim = type("R", (), {"tunes": [tr]})()
        findings = _tunes(shim, None, tables)
        tr.runs.to_parquet(tmp / "data" / "runs.parquet", index=False)
        prov = {"perfsim_version": perfsim.__version__,
                "git_revision": (revision or git_revision)() or "(not a git work tree)",
                "tune": tr.spec.name, "tune_digest": tr.spec.digest,
                "workload": tr.spec.workload, "seed": tr.spec.seed,
                "method": tr.method, "storage": tr.storage or "–",
                "date": date or _dt.datetime.now(_dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S UTC"),
                "machine": machine(), "wall_s": round(tr.wall_s, 1),
                "spec": tr.spec.model_dump(mode="json", exclude={"base_dir"})}
        doc = Document(f"perfsim tune: {tr.spec.name}", tr.spec.description or "",
                       findings, [tune_section(tr)], tables, {fig.id: fig}, prov,
                       [f"data/{t}.csv" for t in tables] + ["data/runs.parquet"])
        def images_ready() -> None:  # the HTML embeds the PNG
            drawing.wait()
            if figures is not None:  # the figure was its last request: it may exit now
                figures.done()

        write_document(doc, tmp, images_ready=images_ready)
    return outdir


__all__ = ["TUNE_NOTES", "tune_section", "write_tune_report"]
