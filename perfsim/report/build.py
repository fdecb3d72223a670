"""Assemble and write a report: study results → tables → findings → figures → files."""

from __future__ import annotations

import sys
from pathlib import Path

from perfsim.report import figures as F
from perfsim.report.explain import all_notes
from perfsim.report.findings import generate, headline
from perfsim.report.provenance import collect
from perfsim.report.runner import StudyResults, run_study
from perfsim.report.study import Study
from perfsim.report.tables import build_tables
from perfsim.report.tune_report import TUNE_NOTES, tune_section, write_tune_report
from perfsim.report.write import Document, Section, atomic_dir, write_document


def _lead(r: StudyResults, tables: dict, figs: dict) -> Section:
    """The opening answer: the headline findings, a picture of the five classes and their
    definitions, before anything that uses them."""
    s = r.study
    return Section(
        "answer", "The short answer",
        f"Five alignment classes of a move (below) decide what {s.baseline} and {s.new} do; "
        "the numbers link to the tables they come from. Rules and worked examples: "
        "docs/kernel-rules.md in the perfsim repository.",
        [f for f in ("alignment_classes",) if f in figs], ["classes"],
        findings=headline(r, tables))


def _sections(r: StudyResults, tables: dict, figs: dict, traces: list,
              notes: dict | None = None) -> list[Section]:
    notes = notes or {}
    out = [
        Section("latency", "Latency vs size per alignment class",
                "Classes as defined in the short answer above: "
                + ", ".join(s_ for s_ in r.study.calls.classes) + ".",
                ["latency_vs_size"], ["latency"], notes.get("latency", [])),
        Section("speedup", "Realigned vs unaligned: speed-ups", "", ["speedup"], ["speedup"],
                notes.get("speedup", [])),
        Section("breakdown", "Cost breakdown by category", "", ["cost_breakdown"],
                ["breakdown"]),
        Section("opcounts", "Operation counts",
                "The same counts as the worked examples of docs/kernel-rules.md: E1 = pud, "
                "E2 = realignable on a realigning kernel, E3 = blocked, E4 = unaligned.", [],
                ["opcounts"]),
        Section("threads", "TLB flushes and IPIs vs thread count", "",
                ["flushes_ipis_vs_threads"], ["threads"]),
        Section("backing", "Anonymous vs shmem, THP on/off", "", [], ["backing"],
                notes.get("backing", [])),
    ]
    if "contention" in tables:
        out.append(Section("contention", "rmap-lock holds and walker waits (engine)", "",
                           [f for f in ("cdf_holds_waits",) if f in figs], ["contention"]))
    if "workloads" in tables:
        out.append(Section("workloads", "Workload scenarios in paired arms", "",
                           [f for f in ("workload_cdfs",) if f in figs], ["workloads"]))
    for tr in r.tunes:
        out.append(tune_section(tr))
    if traces:
        out.append(Section(
            "traces", "Per-call timelines (Chrome trace-event JSON)",
            "Open a file in https://ui.perfetto.dev (or chrome://tracing): spans are named "
            "after the kernel functions (move_page_tables, move_ptes, move_normal_pmd, "
            "flush_tlb_mm_range, native_flush_tlb_multi) and the rmap-lock holds; IPI targets "
            "show flush_tlb_func on their own CPU. Export any call with "
            "`perfsim report --trace-call CLASS:SIZE`.", links=traces))
    return out


def _raw(r: StudyResults, data: Path) -> list[str]:
    files = []
    for name, df in (("single_calls", r.calls), ("call_replications", r.reps),
                     ("contention_calls", r.contention_calls), ("rmap_holds", r.holds),
                     ("walker_visits", r.walkers), ("workload_calls", r.workload_calls),
                     ("workload_runs", r.workload_runs)):
        if df is not None and len(df):
            df.to_parquet(data / f"{name}.parquet", index=False)
            files.append(f"data/{name}.parquet")
    for tr in r.tunes:
        tr.runs.to_parquet(data / f"tune-{tr.spec.name}-runs.parquet", index=False)
        files.append(f"data/tune-{tr.spec.name}-runs.parquet")
    return files


def _measured(r: StudyResults):
    """Calibration points of the first study profile that has any (see measured.py)."""
    from perfsim.report.measured import measured_points
    from perfsim.report.tables import _profile_name

    for p in r.study.cost_profiles:
        m = measured_points(_profile_name(r, p), arch=r.study.arch, kernel=r.study.new,
                            threads=r.study.calls.threads[0],
                            backing=r.study.calls.backings[0])
        if m is not None:
            return m
    return None


def write_report(r: StudyResults, outdir: str | Path, *, date: str | None = None) -> Path:
    """Write the report of ``r`` into ``outdir`` atomically; return ``outdir``."""
    from perfsim.report.trace import export_call

    outdir = Path(outdir)
    with atomic_dir(outdir) as tmp:
        (tmp / "data").mkdir()
        tables = {t.id: t for t in build_tables(r)}
        findings = generate(r, tables)
        measured = _measured(r)
        figs = {}
        for f in F.iter_figures(r, tables, measured):
            figs[f.id] = F.save(f, tmp)
        traces = []
        for call in r.study.traces:
            rel = f"traces/{call.ident}.json"
            meta = export_call(call, tmp / rel, arch=r.study.arch,
                               default_profile=r.study.cost_profiles[0])
            traces.append((rel, f"{call.ident}: {meta['steps']} steps, "
                                f"{meta['latency_ns'] / 1e3:,.1f} µs ({meta['cost_profile']})"))
        files = [f"data/{t}.csv" for t in tables] + _raw(r, tmp / "data")
        prov = collect(r, date=date)
        if measured is not None:
            prov["measured_points"] = (f"{measured.path} (sha256 {measured.sha256[:16]}), "
                                       f"{measured.label}")
        s = r.study
        doc = Document(
            f"perfsim report: {s.name}",
            f"{s.description} Kernels {s.baseline} vs {s.new} on {s.arch}; cost profiles "
            f"{', '.join(s.cost_profiles)}. Generated by perfsim {prov['perfsim_version']} "
            f"in {r.wall_s:.0f} s.",
            findings, _sections(r, tables, figs, traces, all_notes(r)), tables, figs, prov,
            files + ["provenance.json"], lead=_lead(r, tables, figs))
        write_document(doc, tmp)
    return outdir


def make_report(study: Study, out_root: str | Path = "reports", *, executor=None,
                quiet: bool = False, name: str | None = None, date: str | None = None) -> Path:
    """Run ``study`` and write ``<out_root>/<name or study.name>/``; return that path."""
    res = run_study(study, executor=executor, quiet=quiet)
    out = Path(out_root) / (name or study.name)
    if not quiet:
        print(f"writing {out} ...", file=sys.stderr)
    return write_report(res, out, date=date)


__all__ = ["TUNE_NOTES", "make_report", "tune_section", "write_report", "write_tune_report"]
