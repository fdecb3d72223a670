"""Robust per-configuration statistics of the raw repetitions.

Latency (from the untraced pass): median, p10, p90 and MAD over the *clean* repetitions when
there are at least ``min_clean`` of them, else over all (and ``stats_from`` says so).
Flush counts (from the traced pass): the most common value over the clean traced repetitions
(else all), and whether every traced repetition agreed. IPI rounds are taken only from
repetitions where every flush sent one (``ipi_coverage == 1``), since a spinner that lost its
CPU makes the count a property of the machine's load rather than of the kernel.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from perfsim.calibrate.design import Config

CONFIG_COLUMNS = ("config_id", "align", "size", "threads", "populate", "backing", "thp", "group",
                  "op")


def _mode(xs: list[int]) -> int | None:
    if not xs:
        return None
    return Counter(xs).most_common(1)[0][0]


def summarize(records: list[dict], min_clean: int = 3) -> pd.DataFrame:
    """One row per configuration (sorted by ``config_id``)."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["config_id"], []).append(r)
    rows = []
    for _cid, recs in sorted(by.items()):
        cfg = Config.from_dict(recs[0])
        lat_all = [r for r in recs if r.get("phase") == "latency" and r.get("latency_ns")]
        lat_clean = [r for r in lat_all if not r.get("disturbed")]
        use = lat_clean if len(lat_clean) >= min_clean else lat_all
        lat = np.array([r["latency_ns"] for r in use], dtype=float)
        tr_all = [r for r in recs if r.get("phase") == "traced" and r.get("traced")
                  and r.get("summary")]
        tr_clean = [r for r in tr_all if not r.get("disturbed")]
        tr_use = tr_clean or tr_all
        srcdst = Counter((int(r["src"]), int(r["dst"])) for r in recs)
        (src, dst), _ = srcdst.most_common(1)[0]
        row = {**cfg.as_dict(), "src": src, "dst": dst,
               "n_latency": len(lat_all), "n_clean": len(lat_clean),
               "stats_from": "clean" if use is lat_clean else "all",
               "disturbed_frac": (1 - len(lat_clean) / len(lat_all)) if lat_all else np.nan,
               "thp_kb": int(recs[0].get("thp_kb") or 0)}
        if len(lat):
            med = float(np.median(lat))
            mad = 1.4826 * float(np.median(np.abs(lat - med)))
            row.update(median_ns=med, p10_ns=float(np.percentile(lat, 10)),
                       p90_ns=float(np.percentile(lat, 90)), mad_ns=mad,
                       rse=(1.2533 * mad / np.sqrt(len(lat)) / med) if med else np.nan,
                       min_ns=float(lat.min()), max_ns=float(lat.max()))
        else:
            row.update(median_ns=np.nan, p10_ns=np.nan, p90_ns=np.nan, mad_ns=np.nan,
                       rse=np.nan, min_ns=np.nan, max_ns=np.nan)
        row["n_traced"] = len(tr_all)
        row["n_traced_clean"] = len(tr_clean)
        for m in ("flush_calls", "full_flushes"):
            vals = [int(r["summary"][m]) for r in tr_use]
            row[m] = _mode(vals)
            row[f"{m}_consistent"] = len(set(vals)) <= 1 if vals else None
        ipi_src = [r for r in tr_all if cfg.threads == 1 or r.get("ipi_coverage") == 1.0]
        ipis = [int(r["summary"]["ipi_rounds"]) for r in ipi_src]
        row["ipi_rounds"] = _mode(ipis)
        row["n_ipi_clean"] = len(ipi_src)
        row["kernel_us"] = (float(np.median([r["kernel_us"] for r in tr_use]))
                            if tr_use and tr_use[0].get("kernel_us") is not None else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _used_latency_records(records: list[dict], min_clean: int) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for r in records:
        if r.get("phase") == "latency" and r.get("latency_ns"):
            by.setdefault(r["config_id"], []).append(r)
    out = {}
    for cid, recs in by.items():
        clean = [r for r in recs if not r.get("disturbed")]
        out[cid] = clean if len(clean) >= min_clean else recs
    return out


def latency_samples(records: list[dict], min_clean: int = 3) -> dict[str, np.ndarray]:
    """The latencies :func:`summarize` uses, per configuration (for the bootstrap)."""
    return {cid: np.array([r["latency_ns"] for r in use], dtype=float)
            for cid, use in _used_latency_records(records, min_clean).items()}


def latency_rounds(records: list[dict], min_clean: int = 3) -> dict[str, np.ndarray]:
    """The measurement round of each sample in :func:`latency_samples` (same order)."""
    return {cid: np.array([int(r.get("round", 0)) for r in use], dtype=int)
            for cid, use in _used_latency_records(records, min_clean).items()}


# -- measuring conditions (perfsim.calibrate.measure: ordinary / isolated) -------------------

def condition_of(rec: dict) -> str:
    """A repetition's measuring condition; data from before conditions existed is
    ``isolated`` (the private window at nice -20 was the only way it measured)."""
    return rec.get("condition") or "isolated"


def conditions_in(records: list[dict]) -> list[str]:
    """The conditions the latency repetitions were measured in (``ordinary`` first)."""
    found = {condition_of(r) for r in records if r.get("phase") == "latency"}
    return [c for c in ("ordinary", "isolated") if c in found] + sorted(
        found - {"ordinary", "isolated"})


def default_fit_condition(records: list[dict]) -> str:
    """What a fit uses unless told: the ordinary condition (what programs see) when it was
    measured, else the isolated one."""
    have = conditions_in(records)
    return "ordinary" if "ordinary" in have else (have[0] if have else "isolated")


def for_condition(records: list[dict], condition: str) -> list[dict]:
    """The latency repetitions of one condition, plus every traced repetition (flush counts
    do not depend on where the layout sits)."""
    return [r for r in records if r.get("phase") != "latency" or condition_of(r) == condition]


def condition_medians(records: list[dict], min_clean: int = 3) -> pd.DataFrame:
    """Median latency (ns) per configuration and condition, one column per condition, plus
    ``ordinary_over_isolated`` when both were measured."""
    cols = {}
    for c in conditions_in(records):
        s = latency_samples(for_condition(records, c), min_clean)
        cols[c] = pd.Series({cid: float(np.median(v)) for cid, v in s.items() if len(v)})
    df = pd.DataFrame(cols)
    if {"ordinary", "isolated"} <= set(df.columns):
        df["ordinary_over_isolated"] = df["ordinary"] / df["isolated"]
    df.index.name = "config_id"
    return df.sort_index()
