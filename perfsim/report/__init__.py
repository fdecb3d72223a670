"""Reports (layer 9): run a study, write tables, figures, findings and traces.

``perfsim report`` = :func:`make_report` on :func:`default_study` (or a study file)::

    from perfsim.report import default_study, make_report
    make_report(default_study(), "reports")        # → reports/default/index.html

Pieces: :mod:`~perfsim.report.study` (the study file), :mod:`~perfsim.report.runner`
(simulations as tasks on an executor), :mod:`~perfsim.report.tables`,
:mod:`~perfsim.report.figures`, :mod:`~perfsim.report.findings`,
:mod:`~perfsim.report.write` (HTML, Markdown, atomic directory),
:mod:`~perfsim.report.trace` (Chrome trace-event export) and
:mod:`~perfsim.report.browser` (headless-Chromium check of a written report).
"""

__all__ = [
    "CLASSES", "Study", "StudyResults", "TraceCall", "default_study", "export_call",
    "load_study", "make_report", "parse_study", "plan_tasks", "run_study", "trace_events",
    "write_report", "write_tune_report",
]

_HOME = {"make_report": "build", "write_report": "build", "write_tune_report": "tune_report",
         "StudyResults": "runner", "plan_tasks": "runner", "run_study": "runner",
         "CLASSES": "study", "Study": "study", "TraceCall": "study", "default_study": "study",
         "load_study": "study", "parse_study": "study", "export_call": "trace",
         "trace_events": "trace"}
"""Where each name of :data:`__all__` lives. They are imported when first used, so that a
light part of this package (:mod:`~perfsim.report.tune_figure`, which a figure process
imports) does not load the simulator, pandas and every report module with it."""


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"perfsim.report.{_HOME[name]}"), name)
    raise AttributeError(f"module 'perfsim.report' has no attribute {name!r}")
