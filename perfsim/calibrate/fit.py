"""Stage 2 of calibration: fit a cost profile to measured latencies, with uncertainty.

The model is the cost model itself: a call's duration is ``sum_p count_p * cost_p`` where
``count_p`` is how many times the *planned* call pays parameter ``p``
(:func:`perfsim.cost.param_counts`, summed over the plan's rows). Stacking the measured
configurations gives a design matrix ``X`` (configurations × parameters) and the median
latencies ``y``.

Not every parameter can be told apart by whole-call timings: an rmap lock pair, two PTLs, a
flush call and a full flush come with *every* PMD move, so their counts are collinear. The fit
therefore estimates a fixed set of *free* parameters (:data:`FREE`), each one the marginal
cost of a thing the design varies on its own, and keeps the others at the prior profile's
values (their contribution is subtracted from ``y`` first); ``pud_move_ns`` is tied to
``pmd_move_ns`` (the same one-entry swap, R16c; one PUD move per GiB is below the noise).
A free parameter whose column is all zero in the data (no THP or hugetlb configuration, say)
falls back to the prior and says so.

Estimator: non-negative least squares (scipy's) on *relative* error (each row weighted by
``1/y``, so a 4 KiB call and a 4 GiB call count alike), made robust by iteratively
reweighting with Huber weights on the relative residuals (tuning constant 1.345 × MAD scale).

**Fixed and per-unit costs apart** (:func:`fit_profile`, ``staged=True``): small calls (at
most :data:`SMALL_CALL_BYTES`, single-thread, anonymous, or any call whose per-unit terms are
at most :data:`SMALL_UNIT_SHARE` of its joint-fit prediction, e.g. an unpopulated source) are
fitted first for the per-call
terms alone (:data:`PER_CALL`: ``syscall_ns``, ``tlb_first_flush_ns``), large calls then
for the per-unit terms with those held fixed, and the joint fit of everything is kept for
comparison; the profile takes the staged values. A joint fit lets the 4 GiB calls pull the
intercept up (their unmodelled cost lands in it), which is what over-predicts small calls.
``FitResult.stages`` records each stage's values and its median |relative error| on small and
on large calls. Uncertainty: a
two-level bootstrap — resample configurations with replacement, and within each the
repetitions (recomputing the median) — refitting each time; the profile reports the bootstrap
standard deviation and the 2.5–97.5 % interval of every fitted parameter.

Per-call jitter (the profile's distributions): ``syscall_ns`` gets a lognormal whose log-σ is
the robust spread of small single-thread calls around their configuration's median;
``ipi_wakeup_ns`` gets one from the extra spread of the same calls with a second thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perfsim.calibrate.model import COLD_COLUMN, COLUMNS
from perfsim.cost import PARAM_NAMES, CostProfile

#: Parameters the calibration design identifies (each varies on its own across configs).
FREE: tuple[str, ...] = (
    "syscall_ns",         # every call: the intercept
    "pte_present_ns",     # blocked/unaligned/small: per present PTE moved
    "pte_empty_ns",       # sparse population: per empty slot walked
    "move_ptes_call_ns",  # unaligned: per move_ptes extent (absorbs its table/flush overhead)
    "pmd_move_ns",        # pmd_aligned/realignable: per NORMAL_PMD step
    "thp_move_ns",        # THP, 2 MiB-aligned classes
    "thp_split_ns",       # THP, realignable-blocked/unaligned classes
    "hugetlb_entry_ns",   # hugetlb
    "ipi_round_trip_ns",  # 2 threads: per flush that IPIs
    "ipi_wakeup_ns",      # 2 threads: once per call that IPIs (idle vCPU wake-up)
    "tlb_first_flush_ns", # once per call that flushes: separates "moved anything" from none
    "zap_pte_ns",         # shrinks of written memory (the zap group): per present PTE zapped
    "unmap_ns",           # DONTUNMAP moves (the dontunmap group) unmap nothing; the rest once
)
# ``unmap_ns`` (one per do_vmi_munmap row: a move's source, a shrink's tail) is identified
# only by calls that unmap nothing, the dontunmap group's; data without that group leaves it
# at the prior (:func:`fit_table` frees only parameters some configuration varies).
# ``zap_huge_pmd_ns`` stays at the prior too: no configuration of the design zaps a THP
# whole (its shrinks are THP off), so no column varies with it; the shipped value is
# zap_survey's (docs/calibration.md, "Zapping written memory", PMD-mapped THP).
#: what the linear fit estimates: the free parameters and, for C-timed data, the cold-cache
#: term (its column is all zero otherwise, so it drops out)
FREE_COLUMNS: tuple[str, ...] = (*FREE, COLD_COLUMN)
#: tied parameter -> (free parameter, ratio)
TIES: dict[str, tuple[str, float]] = {"pud_move_ns": ("pmd_move_ns", 1.0)}
HUBER_C = 1.345
SMALL_CALL_BYTES = 64 << 10
#: calls whose per-unit terms are at most this share of the joint prediction count as small
SMALL_UNIT_SHARE = 0.2
#: per-call (fixed) terms, identified on small calls (module docstring)
PER_CALL: tuple[str, ...] = ("syscall_ns", "tlb_first_flush_ns")


# --------------------------------------------------------------------------------------------
# Non-negative least squares: scipy's (Lawson & Hanson), columns pre-scaled for conditioning.


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """``argmin ||a x - b||`` subject to ``x >= 0`` (:func:`scipy.optimize.nnls` on columns
    scaled to unit norm, which the latencies' 4 KiB..4 GiB range needs)."""
    from scipy.optimize import nnls as _scipy_nnls

    a = np.asarray(a, float)
    b = np.asarray(b, float)
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    kw = {"maxiter": max_iter} if max_iter else {}
    x, _ = _scipy_nnls(a / norms, b, **kw)
    return x / norms


def robust_nnls(a: np.ndarray, y: np.ndarray, base: np.ndarray, *, iters: int = 20
                ) -> tuple[np.ndarray, np.ndarray]:
    """Huber-IRLS NNLS on relative residuals ``(base + a x - y) / y``.
    Returns (x, final robustness weights)."""
    rel_w = 1.0 / y
    rw = np.ones(len(y))
    x = np.zeros(a.shape[1])
    for _ in range(iters):
        sw = rel_w * np.sqrt(rw)
        x_new = nnls(a * sw[:, None], (y - base) * sw)
        r = (base + a @ x_new - y) / y
        scale = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 0.02)
        u = np.abs(r) / (HUBER_C * scale)
        rw_new = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        done = np.allclose(x_new, x, rtol=1e-4, atol=1e-3) and np.allclose(rw_new, rw, atol=1e-3)
        x, rw = x_new, rw_new
        if done:
            break
    return x, rw


# --------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """Fitted values (integer ns) for every parameter, and how each was obtained."""

    values: dict[str, int]
    status: dict[str, str]            #: fitted | tied | prior | prior (no data)
    sd: dict[str, float]              #: bootstrap standard deviation (fitted only)
    ci: dict[str, tuple[float, float]]  #: bootstrap 2.5 / 97.5 % (fitted only)
    sigma: dict[str, float]           #: lognormal log-σ for jittered parameters
    fit_ids: list[str]
    rel_residuals: dict[str, float]
    robust_weights: dict[str, float]
    n_boot: int
    condition: float
    prior_name: str
    notes: list[str] = field(default_factory=list)
    stages: dict = field(default_factory=dict)   #: small / large / joint fits (docstring)
    #: the fitted cold-cache term (``ns``, ``saturation_bytes``, ``sd``, ``ci95``) or None
    cold_cache: dict | None = None

    def to_json(self) -> dict:
        return {
            "values": self.values, "status": self.status,
            "sd": {k: round(v, 3) for k, v in self.sd.items()},
            "ci95": {k: [round(a, 3), round(b, 3)] for k, (a, b) in self.ci.items()},
            "sigma": self.sigma, "fit_configs": self.fit_ids,
            "rel_residuals": {k: round(v, 5) for k, v in self.rel_residuals.items()},
            "robust_weights": {k: round(v, 4) for k, v in self.robust_weights.items()},
            "n_boot": self.n_boot, "condition_number": self.condition,
            "prior": self.prior_name, "notes": self.notes, "stages": self.stages,
            "cold_cache": self.cold_cache,
        }


def _prior_value(prior: CostProfile, p: str) -> int:
    if p == COLD_COLUMN:
        return prior.cold_cache.ns if prior.cold_cache else 0
    return prior.value(p)


def _columns(x: np.ndarray, free: list[str]) -> tuple[np.ndarray, list[str]]:
    idx = {p: i for i, p in enumerate(COLUMNS)}
    a = np.zeros((x.shape[0], len(free)))
    for j, p in enumerate(free):
        a[:, j] = x[:, idx[p]]
    for t, (f, ratio) in TIES.items():
        if f in free:
            a[:, free.index(f)] += ratio * x[:, idx[t]]
    return a, free


def _fixed_part(x: np.ndarray, free: list[str], prior: CostProfile) -> np.ndarray:
    base = np.zeros(x.shape[0])
    for i, p in enumerate(COLUMNS):
        if p in free or p == "ipi_receiver_ns" or (p in TIES and TIES[p][0] in free):
            continue
        base += x[:, i] * _prior_value(prior, p)
    return base


def _log_spread(samples: list[np.ndarray]) -> float:
    parts = [np.log(s) - np.log(np.median(s)) for s in samples if len(s) >= 3]
    dev = np.concatenate(parts) if parts else np.zeros(0)
    if len(dev) < 5:
        return 0.0
    return float(1.4826 * np.median(np.abs(dev)))


def _small_mask(ids: list[str], meta: dict[str, dict]) -> np.ndarray:
    return np.array([meta.get(i, {}).get("size", 1 << 40) <= SMALL_CALL_BYTES
                     and meta.get(i, {}).get("threads", 1) == 1
                     and meta.get(i, {}).get("backing", "anon") == "anon" for i in ids])


def _stage_errors(rel: np.ndarray, small: np.ndarray) -> dict[str, float]:
    out = {}
    for k, m in (("small", small), ("large", ~small)):
        if m.any():
            out[f"median_abs_rel_error_{k}"] = round(float(np.median(np.abs(rel[m]))), 4)
    return out


def staged_fit(a: np.ndarray, y: np.ndarray, base: np.ndarray, free: list[str],
               small: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-call terms from the small calls, then the per-unit terms from the large calls
    with those fixed, then (for comparison) the joint fit; returns the staged
    ``(theta, robust weights, stages)``."""
    theta_joint, rw_joint = robust_nnls(a, y, base)
    fixed = [j for j, p in enumerate(free) if p in PER_CALL]
    unit = [j for j, p in enumerate(free) if p not in PER_CALL]
    # a call is "small" when the per-call terms dominate it: few bytes, or nothing to move
    # (an unpopulated source pays the syscall and the walk, little else)
    pred = base + a @ theta_joint
    unit_share = (a[:, unit] @ theta_joint[unit]) / np.maximum(pred, 1.0)
    small = np.asarray(small, bool) | (unit_share <= SMALL_UNIT_SHARE)
    stages = {"joint": {"values": {p: round(float(v)) for p, v in zip(free, theta_joint,
                                                                        strict=True)},
                        **_stage_errors((pred - y) / y, small)},
              "small_calls": int(small.sum()), "large_calls": int((~small).sum())}
    if small.sum() < 3 or (~small).sum() < 3 or not fixed:
        stages["staged"] = {"used": False, "why": "fewer than 3 small or large calls"}
        return theta_joint, rw_joint, stages
    theta = np.zeros(len(free))
    # 1. small calls: per-call terms, per-unit terms at the joint fit's values (tiny here)
    a_s, y_s = a[small], y[small]
    base_s = base[small] + a_s[:, unit] @ theta_joint[unit]
    ok = [j for j in fixed if a_s[:, j].any()]
    theta[fixed] = theta_joint[fixed]
    if ok:
        th, _ = robust_nnls(a_s[:, ok], y_s, base_s)
        theta[ok] = th
    stages["small"] = {"values": {free[j]: round(float(theta[j])) for j in ok}}
    # 2. large calls: per-unit terms with the per-call terms held
    a_l, y_l = a[~small], y[~small]
    base_l = base[~small] + a_l[:, fixed] @ theta[fixed]
    ok_u = [j for j in unit if a_l[:, j].any()]
    theta[unit] = theta_joint[unit]
    if ok_u:
        th, _ = robust_nnls(a_l[:, ok_u], y_l, base_l)
        theta[ok_u] = th
    stages["large"] = {"values": {free[j]: round(float(theta[j])) for j in ok_u}}
    rel = (base + a @ theta - y) / y
    scale = max(1.4826 * float(np.median(np.abs(rel - np.median(rel)))), 0.02)
    u = np.abs(rel) / (HUBER_C * scale)
    rw = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    stages["staged"] = {"used": True, **_stage_errors(rel, small)}
    return theta, rw, stages


def fit_profile(ids: list[str], x: np.ndarray, samples: dict[str, np.ndarray],
                prior: CostProfile, *, meta: dict[str, dict] | None = None,
                n_boot: int = 200, seed: int = 0, staged: bool = True) -> FitResult:
    """Fit the free parameters on configurations ``ids`` (rows of ``x``, the full design
    matrix over :data:`PARAM_NAMES`) whose latency samples are ``samples[id]``.

    ``meta[id]`` (config fields) tells small calls from large ones (``staged``: fixed and
    per-unit terms identified apart, see the module docstring) and feeds the jitter
    estimates.
    """
    x = np.asarray(x, float)
    if x.ndim == 2 and x.shape[1] == len(PARAM_NAMES):  # no cold-cache column: not modelled
        x = np.hstack([x, np.zeros((x.shape[0], 1))])
    if x.shape != (len(ids), len(COLUMNS)):
        raise ValueError(f"design matrix shape {x.shape} does not match {len(ids)} configs")
    missing = [i for i in ids if len(samples.get(i, ())) == 0]
    if missing:
        raise ValueError(f"no latency samples for {missing[:3]}")
    y = np.array([np.median(samples[i]) for i in ids], float)
    notes: list[str] = []
    present = [p for p in FREE_COLUMNS if x[:, COLUMNS.index(p)].any()
               or any(TIES.get(t, ("",))[0] == p and x[:, COLUMNS.index(t)].any()
                      for t in TIES)]
    absent = [p for p in FREE if p not in present]  # the cold term is never "absent"
    if "unmap_ns" in present and np.array_equal(x[:, COLUMNS.index("unmap_ns")],
                                                x[:, COLUMNS.index("syscall_ns")]):
        # every configuration unmaps exactly once (no DONTUNMAP move in the data): unmap_ns
        # is the intercept again, not separable from syscall_ns; it stays at the prior
        present.remove("unmap_ns")
    a, free = _columns(x, present)
    base = _fixed_part(x, present, prior)
    small = _small_mask(ids, meta or {})
    if staged:
        theta, rw, stages = staged_fit(a, y, base, free, small)
    else:
        theta, rw = robust_nnls(a, y, base)
        stages = {"staged": {"used": False, "why": "staged=False"}}
    sv = np.linalg.svd(a / np.maximum(np.linalg.norm(a, axis=0), 1e-300), compute_uv=False)
    cond = float(sv[0] / sv[-1]) if len(sv) and sv[-1] > 0 else float("inf")

    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        yb = np.array([np.median(rng.choice(samples[ids[k]], len(samples[ids[k]])))
                       for k in pick])
        ab = a[pick]
        th = np.full(len(free), np.nan)
        ok = ab.any(axis=0)
        if ok.any():
            if staged and stages.get("staged", {}).get("used"):
                sub = [free[j] for j in np.flatnonzero(ok)]
                tb, _, _ = staged_fit(ab[:, ok], yb, base[pick], sub, small[pick])
                th[ok] = tb
            else:
                th[ok], _ = robust_nnls(ab[:, ok], yb, base[pick], iters=8)
        boots.append(th)
    bt = np.array(boots) if boots else np.zeros((0, len(free)))

    values: dict[str, int] = {}
    status: dict[str, str] = {}
    sd: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    for j, p in enumerate(free):
        values[p] = int(round(theta[j]))
        status[p] = "fitted"
        col = bt[:, j][~np.isnan(bt[:, j])] if len(bt) else np.zeros(0)
        if len(col) >= 10:
            sd[p] = float(col.std(ddof=1))
            ci[p] = (float(np.percentile(col, 2.5)), float(np.percentile(col, 97.5)))
    for t, (f, ratio) in TIES.items():
        if f in values:
            values[t] = int(round(ratio * values[f]))
            status[t] = "tied"
    for p in PARAM_NAMES:
        if p not in values:
            values[p] = prior.value(p)
            status[p] = "prior (no data)" if p in absent else "prior"
    cold = None
    if COLD_COLUMN in values:
        cold = {"ns": values.pop(COLD_COLUMN), "status": status.pop(COLD_COLUMN)}
        if COLD_COLUMN in sd:
            cold["sd"] = sd.pop(COLD_COLUMN)
            cold["ci95"] = list(ci.pop(COLD_COLUMN))
    if absent:
        notes.append("no configuration exercises " + ", ".join(absent)
                     + f": kept at {prior.name}")

    # Jitter: log-spread of small single-thread calls; extra spread with a second thread.
    meta = meta or {}
    small1 = [samples[i] for i in ids if meta.get(i, {}).get("size", 1 << 40) <= SMALL_CALL_BYTES
              and meta[i].get("threads") == 1 and meta[i].get("backing") == "anon"]
    small2 = [samples[i] for i in ids if meta.get(i, {}).get("size", 1 << 40) <= SMALL_CALL_BYTES
              and meta[i].get("threads") == 2 and meta[i].get("backing") == "anon"]
    sigma: dict[str, float] = {}
    s1 = _log_spread(small1)
    if s1 > 0:
        sigma["syscall_ns"] = round(min(s1, 3.0), 3)
    if small2 and values.get("ipi_wakeup_ns", 0) > 0 and status.get("ipi_wakeup_ns") == "fitted":
        # ns-scale spreads: total (2 threads) minus the single-thread part, in quadrature
        def ns_spread(ss):
            parts = [s - np.median(s) for s in ss if len(s) >= 3]
            dev = np.concatenate(parts) if parts else np.zeros(0)
            return float(1.4826 * np.median(np.abs(dev))) if len(dev) >= 5 else 0.0
        extra = max(ns_spread(small2) ** 2 - ns_spread(small1) ** 2, 0.0) ** 0.5
        if extra > 0:
            sigma["ipi_wakeup_ns"] = round(min(extra / values["ipi_wakeup_ns"], 3.0), 3)

    resid = (base + a @ theta - y) / y
    return FitResult(values, status, sd, ci, sigma, list(ids),
                     {i: float(r) for i, r in zip(ids, resid, strict=True)},
                     {i: float(w) for i, w in zip(ids, rw, strict=True)},
                     len(bt), cond, prior.name, notes, stages, cold)


def profile_values_with(prior: CostProfile, fit: FitResult) -> CostProfile:
    """The prior with the fitted values and jitter in place (used for held-out predictions;
    the written profile comes from :mod:`perfsim.calibrate.profile`)."""
    data = prior.model_dump()
    for p, v in fit.values.items():
        data["params"][p]["ns"] = int(v)
        if p in fit.sigma and fit.sigma[p] > 0:
            data["params"][p]["dist"] = "lognormal"
            data["params"][p]["sigma"] = float(fit.sigma[p])
        else:
            data["params"][p]["dist"] = "fixed"
            data["params"][p]["sigma"] = 0.0
    if fit.cold_cache and fit.cold_cache.get("saturation_bytes"):
        data["cold_cache"] = {"ns": int(fit.cold_cache["ns"]),
                              "saturation_bytes": int(fit.cold_cache["saturation_bytes"]),
                              "source": "fitted (held-out refit)"}
    data["name"] = f"{prior.name}+fit"
    return CostProfile(**data)
