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

from perfsim.report.build import make_report, write_report, write_tune_report
from perfsim.report.runner import StudyResults, plan_tasks, run_study
from perfsim.report.study import CLASSES, Study, TraceCall, default_study, load_study, parse_study
from perfsim.report.trace import export_call, trace_events

__all__ = [
    "CLASSES", "Study", "StudyResults", "TraceCall", "default_study", "export_call",
    "load_study", "make_report", "parse_study", "plan_tasks", "run_study", "trace_events",
    "write_report", "write_tune_report",
]
