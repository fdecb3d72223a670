"""``perfsim calibrate`` as a library call: design → measure → data file → fit → profile.

Each stage hands the next a file with a content hash: the data file (raw repetitions, machine,
settings, what was skipped), the fit file (values, intervals, residuals) and the profile
(which cites both). ``from_data`` skips measuring and refits an existing data file, so a fit
can be reproduced anywhere without the machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfsim import __version__
from perfsim.calibrate.design import Config, design, fitted_group
from perfsim.calibrate.fit import FitResult, fit_profile
from perfsim.calibrate.io import (
    FIT_FORMAT,
    CalibData,
    atomic_write_text,
    load_data,
    render_data,
    sha256_text,
    sibling,
)
from perfsim.calibrate.measure import CONDITIONS, MeasureSettings, measure_configs, trace_plan
from perfsim.calibrate.model import FLUSH_METRICS, Planned, design_matrix, plan_all
from perfsim.calibrate.profile import render_profile
from perfsim.calibrate.stats import (
    condition_medians,
    default_fit_condition,
    for_condition,
    latency_samples,
    summarize,
)
from perfsim.calibrate.timer import TIMER_NAME, build_timer
from perfsim.cost import CostProfile, resolve_cost_profile
from perfsim.errors import PerfsimError
from perfsim.host.load import extra_reps_factor, load_verdict, sample_load


@dataclass
class CalibrationResult:
    profile_path: Path | None
    data_path: Path
    fit_path: Path | None
    data_sha256: str
    status: str
    missing: list[str]
    table: pd.DataFrame
    fit: FitResult | None
    duration_s: float
    flush_agreement: dict[str, Any] = field(default_factory=dict)
    fit_condition: str = "isolated"
    conditions: pd.DataFrame | None = None   #: median latency per configuration x condition
    load: dict[str, Any] = field(default_factory=dict)
    overhead_split: dict[str, Any] = field(default_factory=dict)
    timer: str = "python"   #: who timed the fitted condition's latencies


def thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def planned_table(data: CalibData, prior: CostProfile, *, kernel: str = "6.18",
                  arch: str = "x86_64", min_clean: int = 3, condition: str | None = None
                  ) -> tuple[pd.DataFrame, dict[str, Planned], dict[str, np.ndarray]]:
    """Per-configuration statistics of one measuring ``condition`` (default
    :func:`~perfsim.calibrate.stats.default_fit_condition`: ordinary when measured) plus what
    the planner predicts for each."""
    condition = condition or default_fit_condition(data.records)
    records = for_condition(data.records, condition)
    table = summarize(records, min_clean=min_clean)
    if table.empty:
        raise PerfsimError(f"{data.path}: no measured repetitions")
    cfgs = [(Config.from_dict(r), int(r["src"]), int(r["dst"])) for r in table.to_dict("records")]
    planned = plan_all(cfgs, prior, kernel=kernel, arch=arch)
    for m in FLUSH_METRICS:
        table[f"pred_{m}"] = [planned[c].flushes[m] for c in table.config_id]
    return table, planned, latency_samples(records, min_clean=min_clean)


def timer_of(data: CalibData, condition: str) -> str:
    """Who timed the latencies of ``condition``: the records' ``timer`` (``c-helper`` or
    ``python``); data recorded before the field existed was timed in Python."""
    found = {r.get("timer", "python") for r in for_condition(data.records, condition)
             if r.get("phase") == "latency"}
    return "+".join(sorted(found)) or "python"


def flush_agreement(table: pd.DataFrame) -> dict[str, Any]:
    """Whole-call flush calls / full flushes (every traced config) and IPI rounds (configs
    with clean IPI coverage) predicted vs measured."""
    tr = table[table.n_traced > 0]
    out: dict[str, Any] = {"traced_configs": int(len(tr))}
    for m in FLUSH_METRICS:
        sub = tr if m != "ipi_rounds" else tr[tr.n_ipi_clean > 0]
        eq = (sub[m].astype("Int64") == sub[f"pred_{m}"]).fillna(False)
        out[m] = {"agree": int(eq.sum()), "of": int(len(sub)),
                  "disagree": sub.loc[~eq, "config_id"].tolist()}
    inc = [c for c in tr.config_id[(tr.flush_calls_consistent == False)  # noqa: E712
                                   | (tr.full_flushes_consistent == False)]]  # noqa: E712
    out["inconsistent_between_reps"] = inc
    return out


#: saturation sizes tried for the cold-cache term (bytes): powers of two from 2 MiB
#: (the L2 of this machine's cores is 1 MiB) to 128 MiB (4x its 32 MiB L3)
COLD_SATURATION_CANDIDATES: tuple[int, ...] = tuple(m << 20 for m in (2, 4, 8, 16, 32, 64, 128))


def _trimmed_abs_error(fit: FitResult, trim: float = 0.1) -> float:
    """Mean |relative residual| without the worst ``trim`` share (outliers)."""
    r = np.sort(np.abs(np.array(list(fit.rel_residuals.values()), float)))
    keep = max(1, int(round(len(r) * (1 - trim))))
    return float(r[:keep].mean())


def fit_table(table: pd.DataFrame, planned: dict[str, Planned], samples: dict[str, np.ndarray],
              prior: CostProfile, ids: list[str] | None = None, *, n_boot: int = 200,
              seed: int = 0, staged: bool = True, cold_cache: bool = False) -> FitResult:
    """Fit ``ids`` (default: every configuration with latencies).

    ``cold_cache``: also fit the cold-cache term (:class:`perfsim.cost.profile.ColdCache`;
    only for C-timed data, where the caller's traffic before a call is what the
    configuration populated): its ``ns`` is a free parameter of the linear fit, its
    ``saturation_bytes`` the one of :data:`COLD_SATURATION_CANDIDATES` whose fit leaves the
    smallest trimmed mean |relative error| (a one-dimensional profile search, recorded in
    ``stages["cold_cache_search"]``)."""
    meta = {r["config_id"]: r for r in table.to_dict("records")}
    # report-only groups (design.fitted_group: the shared-memfd shrinks) are never fitted
    ids = [i for i in (ids if ids is not None else list(table.config_id))
           if i in samples and len(samples[i])
           and fitted_group(str(meta.get(i, {}).get("group", "core")))]
    if not cold_cache:
        return fit_profile(ids, design_matrix(planned, ids), samples, prior, meta=meta,
                           n_boot=n_boot, seed=seed, staged=staged)
    search = []
    best: tuple[float, int] | None = None
    for sat in COLD_SATURATION_CANDIDATES:
        f = fit_profile(ids, design_matrix(planned, ids, sat), samples, prior, meta=meta,
                        n_boot=0, seed=seed, staged=staged)
        score = _trimmed_abs_error(f)
        search.append({"saturation_bytes": sat, "trimmed_mean_abs_rel_error": round(score, 5),
                       "cold_cache_ns": (f.cold_cache or {}).get("ns", 0)})
        if best is None or score < best[0]:
            best = (score, sat)
    assert best is not None
    fit = fit_profile(ids, design_matrix(planned, ids, best[1]), samples, prior, meta=meta,
                      n_boot=n_boot, seed=seed, staged=staged)
    if fit.cold_cache is not None:
        fit.cold_cache["saturation_bytes"] = best[1]
    fit.stages["cold_cache_search"] = search
    return fit


def overhead_split(fit: FitResult, entry: dict | None) -> dict[str, Any]:
    """The per-call overhead of a fitted profile split into syscall entry, VMA work and the
    first flush, each with what it rests on."""
    sys_ns = int(fit.values["syscall_ns"])
    first = int(fit.values["tlb_first_flush_ns"])
    out: dict[str, Any] = {
        "syscall_ns": sys_ns,
        "first_flush_ns": {"ns": first, "evidence": (
            "tlb_first_flush_ns, " + fit.status.get("tlb_first_flush_ns", "?")
            + ": calls that change a mapping (flush) against calls that move nothing "
              "(populate none) of the same sizes")},
    }
    if entry and entry.get("median_ns") is not None:
        e = int(entry["median_ns"])
        out["syscall_entry_ns"] = {"ns": e, "evidence": (
            f"measured: median of {entry.get('reps')} calls ({entry.get('how')}); p10 "
            f"{entry.get('p10_ns')} ns, p90 {entry.get('p90_ns')} ns")}
        out["vma_work_ns"] = {"ns": max(sys_ns - e, 0), "evidence": (
            "syscall_ns (the per-call term fitted on small calls) minus the measured entry: "
            "mmap_lock, vma_lookup, copy_vma, the source VMA's unmap bookkeeping")}
    else:
        out["syscall_entry_ns"] = {"ns": None, "evidence": "not measured in this data "
                                   "(recorded before perfsim measured it)"}
        out["vma_work_ns"] = {"ns": None, "evidence": "needs the entry cost"}
    return out


def calibrate(out: str | Path, *, quick: bool = False, from_data: str | Path | None = None,
              settings: MeasureSettings | None = None, prior: str = "x86_64-generic",
              kernel: str = "6.18", arch: str = "x86_64", n_boot: int | None = None,
              seed: int = 0, progress: bool = True, trace_mode: str = "auto",
              configs: list[Config] | None = None, max_size: int | None = None,
              dontunmap: bool = False,
              name: str | None = None, command: str = "perfsim calibrate",
              log=None, conditions: tuple[str, ...] = CONDITIONS,
              fit_condition: str | None = None, busy_ok: bool = False,
              load_sample=None, estimator: str = "staged",
              ordinary_timer: str | None = None) -> CalibrationResult:
    """Measure (or load), fit and write ``out`` (the profile), ``<out>.data.jsonl`` and
    ``<out>.fit.json``. A partial measurement (skipped configurations, no tracing) still
    gives a profile whose description says what is missing; an interrupted one writes only
    the data file and re-raises :class:`KeyboardInterrupt`.

    ``conditions``: measured in (``ordinary`` and/or ``isolated``, see
    :mod:`perfsim.calibrate.measure`); ``fit_condition``: fitted from (default ordinary when
    measured); ``estimator``: ``staged`` (fixed and per-unit terms apart, see
    :mod:`perfsim.calibrate.fit`) or ``joint`` (everything at once, as kvm-host was fitted);
    ``ordinary_timer``: ``c-helper`` (default: the C timing helper) or ``python``.
    Before measuring, the machine's load is sampled (``load_sample``: a
    :class:`~perfsim.host.load.LoadSample`, for tests): a busy machine is measured with three
    times the repetitions, an overloaded one refused unless ``busy_ok``."""
    out = Path(out)
    if out.suffix != ".toml":
        raise PerfsimError(f"--out {out}: a cost profile path must end in .toml")
    log = log or (lambda m: print(m))
    prior_prof = resolve_cost_profile(prior, arch=arch)
    data_path = sibling(out, ".data.jsonl")
    fit_path = sibling(out, ".fit.json")
    quick_n_boot = 100 if quick else 300
    n_boot = quick_n_boot if n_boot is None else n_boot
    if from_data is not None:
        data = load_data(from_data)
        if Path(from_data).resolve() != data_path.resolve():
            # the profile always travels with its measurements: copy them beside it
            atomic_write_text(data_path, Path(from_data).read_text())
            data = load_data(data_path)
        duration = float(data.header.get("duration_s", 0.0))
    else:
        settings = settings or (MeasureSettings(reps=6, rounds=2, traced_reps=1,
                                                max_attempts=12, rse_target=0.05) if quick
                                else MeasureSettings())
        settings.seed = seed
        settings.conditions = tuple(conditions)
        if ordinary_timer is not None:
            settings.ordinary_timer = ordinary_timer
        cfgs = configs or design(quick, max_size=max_size, thp_available=thp_available(),
                                 dontunmap=dontunmap)
        trace_plan(trace_mode)  # tracing someone else uses: refused before anything else
        sample = load_sample if load_sample is not None else sample_load()
        verdict, why = load_verdict(sample)
        load_info = {"verdict": verdict, **sample.as_dict()}
        if verdict == "overloaded" and not busy_ok:
            raise PerfsimError(f"{why}: latencies measured now would describe the other "
                               "tenants, not the kernel; nothing was measured. Run again when "
                               "it is quieter, or pass --busy-ok to measure with 3x the "
                               "repetitions anyway")
        if verdict != "quiet":
            k = extra_reps_factor(verdict)
            settings.reps *= k
            settings.max_attempts = settings.attempts() * k
            log(f"perfsim calibrate: {why}: measuring with {k}x the repetitions "
                f"({settings.reps} clean per configuration and condition)")
        timer_exe = None
        if "ordinary" in settings.conditions:
            if settings.ordinary_timer == "c-helper":
                timer_exe = build_timer()  # no compiler: one line, before measuring
            elif settings.ordinary_timer != "python":
                raise PerfsimError(f"--timer {settings.ordinary_timer!r}: valid: c-helper, "
                                   "python")
        data_path.parent.mkdir(parents=True, exist_ok=True)
        spool = str(data_path) + ".partial"
        if os.path.exists(spool):
            os.unlink(spool)
        try:
            run = measure_configs(cfgs, settings, spool_path=spool, progress=progress,
                                  trace_mode=trace_mode, timer_exe=timer_exe)
        except BaseException:
            # measure_configs keeps what it measured on Ctrl-C itself; anything else is a
            # failure that leaves no half-written file behind
            if os.path.exists(spool):
                os.unlink(spool)
            raise
        run.machine["load_start"] = load_info
        missing = [f"{s['config_id']}: {s['reason']}" for s in run.skipped] + run.notes
        if run.status == "interrupted":
            missing.insert(0, "interrupted before the design was complete")
        header = {"perfsim_version": __version__, "machine": run.machine,
                  "settings": run.settings, "design": [c.as_dict() for c in cfgs],
                  "skipped": run.skipped, "notes": run.notes, "status": run.status,
                  "missing": missing, "trace_status": run.trace_status,
                  "started": run.started, "duration_s": run.duration_s,
                  "timers": run.timers,
                  "quick": quick, "command": command}
        text = render_data(header, run.records)
        atomic_write_text(data_path, text)
        os.unlink(spool) if os.path.exists(spool) else None
        duration = run.duration_s
        if run.status == "interrupted":
            log(f"perfsim calibrate: interrupted after {duration:.0f} s; "
                f"{len(run.records)} repetitions saved in {data_path} (no profile written; "
                f"refit with: perfsim calibrate --from-data {data_path} --out {out})")
            raise KeyboardInterrupt
        data = load_data(data_path)
    header = data.header
    missing = list(header.get("missing", []))
    status = header.get("status", "complete")
    fit_condition = fit_condition or default_fit_condition(data.records)
    table, planned, samples = planned_table(data, prior_prof, kernel=kernel, arch=arch,
                                            condition=fit_condition)
    if table.empty:
        raise PerfsimError(f"{data_path}: no repetitions measured in the {fit_condition!r} "
                           "condition")
    cond = condition_medians(data.records)
    agree = flush_agreement(table)
    if not samples:
        raise PerfsimError(f"{data_path}: no latency measured; nothing to fit")
    if estimator not in ("staged", "joint"):
        raise PerfsimError(f"--estimator {estimator!r}: valid: staged, joint")
    timer = timer_of(data, fit_condition)
    fit = fit_table(table, planned, samples, prior_prof, n_boot=n_boot, seed=seed,
                    staged=estimator == "staged", cold_cache=timer == TIMER_NAME)
    for p, st in fit.status.items():
        if st == "prior (no data)":
            missing.append(f"{p}: not measured, prior value kept")
    machine = header.get("machine", {})
    date = (header.get("started") or _dt.date.today().isoformat())[:10]
    pname = name or out.name[:-5]
    text = render_profile(fit, prior_prof, name=pname, machine=machine,
                          data_name=data_path.name, data_sha256=data.sha256,
                          fit_name=fit_path.name, command=command, date=date,
                          status=status, missing=missing, archs=(arch,),
                          condition=fit_condition, timer=timer)
    split = overhead_split(fit, machine.get("syscall_entry_c_helper")
                           if timer == TIMER_NAME else machine.get("syscall_entry"))
    fit_doc = {"format": FIT_FORMAT, "overhead_split": split, "profile": pname,
               "profile_sha256": sha256_text(text),
               "data": data_path.name, "data_sha256": data.sha256, "kernel": kernel,
               "arch": arch, "status": status, "missing": missing, "machine": machine,
               "duration_s": duration, "flush_agreement": agree, **fit.to_json(),
               "fit_condition": fit_condition, "estimator": estimator, "timer": timer,
               "condition_medians": json.loads(cond.reset_index().to_json(orient="records")),
               "configs": json.loads(table.to_json(orient="records"))}
    atomic_write_text(fit_path, json.dumps(fit_doc, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out, text)
    return CalibrationResult(out, data_path, fit_path, data.sha256, status, missing, table,
                             fit, duration, agree, fit_condition, cond,
                             dict(machine.get("load_start") or {}), split, timer)
