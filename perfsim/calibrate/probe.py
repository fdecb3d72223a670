"""Validation against an independent probe: a small C program (``probes/latency/probe.c``)
that times mremap() the way an ordinary program does, with none of perfsim's measuring code.

The probe is compiled at run time with the system C compiler into perfsim's cache directory
(``$PERFSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/perfsim``, else ``~/.cache/perfsim``), named
after the hash of its source, and never committed. It measures **held-out** configurations
(:data:`HELDOUT_SIZES`: sizes the calibration design does not contain) in two independent
rounds, each in its own shuffled order; for each configuration the report puts the model's
error (closed-form prediction of the cost profile, planned at the addresses the probe used,
against the pooled median) next to the machine's own **test-retest spread** (the two rounds'
medians against each other), so a reader sees whether the model is as close as a second
measurement would be.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from perfsim.calibrate.cbuild import build_c_program, cache_dir  # noqa: F401
from perfsim.calibrate.design import ALIGN_CLASSES, Config, KiB, MiB, fmt_size
from perfsim.errors import PerfsimError
from perfsim.shipped import data_dir

#: sizes the calibration design (FULL_SIZES, QUICK_SIZES) does not measure
HELDOUT_SIZES: tuple[int, ...] = (8 * KiB, 16 * KiB, 256 * KiB, 2 * MiB, 8 * MiB, 32 * MiB,
                                  128 * MiB, 512 * MiB)
#: sizes (before the shrink) of the held-out shrinks: between the design's ZAP_SIZES
HELDOUT_ZAP_SIZES: tuple[int, ...] = (2 * MiB, 8 * MiB, 32 * MiB)
#: sizes (before the shrink) of the held-out THP shrinks (``MADV_HUGEPAGE``, pmd_aligned: the
#: tail is whole huge PMDs, each one ``zap_huge_pmd``, R24); the design has no THP shrink
HELDOUT_ZAP_THP_SIZES: tuple[int, ...] = (8 * MiB, 32 * MiB, 128 * MiB)
#: calls at least this long are the ones the accuracy target is about
LONG_CALL_NS = 30_000


def probe_source() -> Path:
    """``probes/latency/probe.c``: the checkout's, or the copy installed with the package."""
    p = data_dir("probes") / "latency" / "probe.c"
    if not p.is_file():
        raise PerfsimError(f"probe source {p} not found (a broken install: reinstall perfsim)")
    return p


def build_probe(source: Path | None = None) -> Path:
    """Compile the probe (once per source version) and return the executable's path."""
    return build_c_program(source or probe_source(), "latency-probe", "the latency probe")


def heldout_configs(max_size: int | None = None,
                    classes: tuple[str, ...] = ALIGN_CLASSES, *,
                    thp_available: bool = True) -> list[Config]:
    """Anonymous, fully populated, single-thread configurations at the held-out sizes: moves
    of every class, shrinks to half (``pmd_aligned``, ``unaligned``) at
    :data:`HELDOUT_ZAP_SIZES` and, with ``thp_available``, THP shrinks (``pmd_aligned``) at
    :data:`HELDOUT_ZAP_THP_SIZES` (group ``heldout_zap``, summarized apart: the ``all`` and
    ``ge_30us`` figures stay about moves, ``zap`` about 4 KiB pages, ``zap_thp`` about
    THPs)."""
    moves = [Config(a, s, group="heldout") for s in HELDOUT_SIZES
             if max_size is None or s <= max_size for a in classes]
    shrinks = [Config(a, s, group="heldout_zap", op="shrink") for s in HELDOUT_ZAP_SIZES
               if max_size is None or s <= max_size
               for a in ("pmd_aligned", "unaligned") if a in classes]
    if thp_available and "pmd_aligned" in classes:
        shrinks += [Config("pmd_aligned", s, thp=True, group="heldout_zap", op="shrink")
                    for s in HELDOUT_ZAP_THP_SIZES if max_size is None or s <= max_size]
    return moves + shrinks


def run_probe(exe: Path, cfg: Config, reps: int) -> list[dict]:
    """``reps`` repetitions of one configuration; the probe's JSON lines."""
    pop = cfg.populate
    args = [str(exe), cfg.align, str(cfg.size), str(reps), pop, "thp" if cfg.thp else "nothp",
            cfg.op]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise PerfsimError(f"latency probe failed on {cfg.id}: "
                           f"{(r.stderr.strip() or 'no message')[:200]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def probe_rounds(exe: Path, cfgs: list[Config], *, reps: int, rounds: int = 2, seed: int = 0,
                 on_config=None) -> list[dict]:
    """``rounds`` independent passes over ``cfgs``, each in its own shuffled order."""
    out = []
    for r in range(rounds):
        order = list(cfgs)
        random.Random(seed * 1000 + r).shuffle(order)
        for cfg in order:
            for rec in run_probe(exe, cfg, reps):
                out.append({**rec, "config_id": cfg.id, "round": r})
            if on_config:
                on_config(cfg, r)
    return out


@dataclass
class ProbeReport:
    """Per-configuration table and the summary of a probe validation."""

    table: pd.DataFrame
    summary: dict = field(default_factory=dict)


def probe_report(records: list[dict], profile, *, kernel: str = "6.18",
                 arch: str = "x86_64") -> ProbeReport:
    """Model error vs test-retest spread per configuration (see the module docstring)."""
    from perfsim.calibrate.model import plan_config, touched_bytes
    from perfsim.cost import load_cost_profile, predict

    prof = load_cost_profile(profile)
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["config_id"], []).append(r)
    rows = []
    for cid, recs in sorted(by.items()):
        first = recs[0]
        op = first.get("op", "move")  # probe records from before shrinks existed: moves
        thp = "thp" in cid.split("/")  # (Config.id marks a THP source)
        cfg = Config(first["class"], int(first["size"]), thp=thp,
                     group="heldout" if op == "move" else "heldout_zap", op=op)
        (src, dst), _ = Counter((int(r["src"]), int(r["dst"])) for r in recs).most_common(1)[0]
        plan = plan_config(cfg, kernel=kernel, arch=arch, src=src, dst=dst)
        pred = float(predict(plan, prof).predicted_ns + prof.cold_cache_ns(touched_bytes(cfg)))
        lat = {k: np.array([r["latency_ns"] for r in recs if r["round"] == k], float)
               for k in sorted({r["round"] for r in recs})}
        meds = [float(np.median(v)) for v in lat.values() if len(v)]
        pooled = float(np.median(np.concatenate(list(lat.values()))))
        spread = (abs(meds[0] - meds[1]) / ((meds[0] + meds[1]) / 2)) if len(meds) >= 2 \
            else float("nan")
        rows.append({"config_id": cid, "align": cfg.align, "size": cfg.size, "op": cfg.op,
                     "thp": cfg.thp,
                     "n": sum(len(v) for v in lat.values()), "measured_ns": pooled,
                     "round_medians_ns": meds, "predicted_ns": pred,
                     "rel_error": pred / pooled - 1, "retest_spread": spread,
                     "cpus_seen": max(int(r.get("cpus_seen", 1)) for r in recs)})
    t = pd.DataFrame(rows)
    return ProbeReport(t, summarize_probe(t))


def summarize_probe(t: pd.DataFrame) -> dict:
    """Median |model error| and median test-retest spread, over every move and over the
    moves of :data:`LONG_CALL_NS` and more (``all``, ``ge_30us``), over the shrinks of 4 KiB
    pages (``zap``) and over the THP shrinks (``zap_thp``)."""
    out: dict = {"configurations": int(len(t))}
    op = t["op"] if "op" in t else pd.Series(["move"] * len(t), index=t.index)
    thp = t["thp"].astype(bool) if "thp" in t else pd.Series([False] * len(t), index=t.index)
    moves = t[op == "move"]
    shrinks, thp_shrinks = t[(op == "shrink") & ~thp], t[(op == "shrink") & thp]
    for label, sub in (("all", moves), ("ge_30us", moves[moves.measured_ns >= LONG_CALL_NS]),
                       ("zap", shrinks), ("zap_thp", thp_shrinks)):
        if sub.empty:
            continue
        err = float(np.median(np.abs(sub.rel_error)))
        spr = float(np.nanmedian(sub.retest_spread))
        out[label] = {"configurations": int(len(sub)), "median_abs_error": err,
                      "median_retest_spread": spr,
                      "error_over_spread": err / spr if spr > 0 else float("inf")}
    return out


def render_probe_markdown(rep: ProbeReport, *, profile: str, command: str, load: dict,
                          date: str) -> str:
    s = rep.summary
    lines = [f"# Held-out validation of {profile} against the independent latency probe", "",
             f"Command: `{command}` ({date}). Probe: `probes/latency/probe.c` (normal mmap "
             "area, default scheduling, CLOCK_MONOTONIC around the call), two independent "
             "rounds.", ""]
    if load:
        lines += [f"Machine load before probing: {load.get('verdict')} (load average "
                  f"{load.get('loadavg_1m')}, {load.get('busy', 0):.0%} busy, "
                  f"{load.get('steal', 0):.0%} stolen).", ""]
    for label, what in (("ge_30us", "moves of 30 us and more"), ("all", "all moves"),
                        ("zap", "shrinks of written memory (zaps)"),
                        ("zap_thp", "shrinks of written THP memory (zap_huge_pmd)")):
        if label in s:
            x = s[label]
            lines.append(f"* {what} ({x['configurations']}): median |model error| "
                         f"{x['median_abs_error']:.1%}, median test-retest spread "
                         f"{x['median_retest_spread']:.1%} (error / spread "
                         f"{x['error_over_spread']:.2f})")
    lines += ["", "| configuration | measured | round medians | predicted | error | retest "
              "spread |", "|---|---|---|---|---|---|"]
    for r in rep.table.itertuples():
        rm = " / ".join(f"{m / 1000:.1f}" for m in r.round_medians_ns)
        lines.append(f"| {r.config_id} | {r.measured_ns / 1000:.1f} us | {rm} us | "
                     f"{r.predicted_ns / 1000:.1f} us | {r.rel_error:+.1%} | "
                     f"{r.retest_spread:.1%} |")
    return "\n".join(lines) + "\n"


def fmt_sizes(sizes) -> str:
    return ", ".join(fmt_size(s) for s in sizes)
