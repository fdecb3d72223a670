"""Measured points for the report's figures: the calibration data of a cost profile.

``perfsim calibrate`` writes the raw repetitions it fitted a profile to as
``<name>.data.jsonl`` (the shipped ``kvm-host`` profile's are in ``data/calibration/``). When
such a file exists for a cost profile of the study, and it was measured on the study's
architecture and on a kernel of the study's new version, the latency-vs-size figure shows its
per-configuration medians beside the model's lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: calibration alignment names → report class names
ALIGN_TO_CLASS = {"pud_aligned": "pud", "pmd_aligned": "pmd", "realignable": "realignable",
                  "blocked": "blocked", "unaligned": "unaligned"}


@dataclass(frozen=True)
class MeasuredPoints:
    """Median latency per (class, size) of one calibration data file."""

    profile: str
    path: str
    sha256: str
    kernel_release: str
    machine: str
    points: pd.DataFrame
    """Columns: class, size, median_ns, p10_ns, p90_ns, n."""

    @property
    def label(self) -> str:
        return f"Linux {self.kernel_release}, {self.machine}"


def candidate_files(profile_name: str, roots: list[Path] | None = None) -> list[Path]:
    """Where a profile's calibration data may live: ``data/calibration/<name>.data.jsonl``
    under the current directory and under the source tree perfsim runs from."""
    import perfsim

    if roots is None:
        roots = [Path.cwd(), Path(perfsim.__file__).resolve().parents[1]]
    out: list[Path] = []
    for r in roots:
        p = r / "data" / "calibration" / f"{profile_name}.data.jsonl"
        if p not in out:
            out.append(p)
    return out


def measured_points(profile_name: str, *, arch: str, kernel: str, threads: int = 1,
                    backing: str = "anon", roots: list[Path] | None = None
                    ) -> MeasuredPoints | None:
    """The calibration medians of ``profile_name`` for single-threaded, fully populated,
    non-THP moves, or None when no matching data file exists (or it was measured on
    another architecture or kernel version)."""
    from perfsim.calibrate.io import load_data
    from perfsim.calibrate.stats import summarize
    from perfsim.errors import PerfsimError

    for path in candidate_files(profile_name, roots):
        if not path.is_file():
            continue
        try:
            data = load_data(path)
        except (PerfsimError, OSError, UnicodeDecodeError):
            continue
        m = data.header.get("machine") or {}
        release = str(m.get("kernel", ""))
        if m.get("machine") != arch or not _same_version(release, kernel):
            continue
        s = summarize(data.records)
        s = s[(s["threads"] == threads) & (s["backing"] == backing) & (~s["thp"].astype(bool))
              & (s["populate"] == "full") & s["align"].isin(list(ALIGN_TO_CLASS))
              & s["median_ns"].notna()]
        if s.empty:
            continue
        pts = pd.DataFrame({"class": s["align"].map(ALIGN_TO_CLASS), "size": s["size"],
                            "median_ns": s["median_ns"], "p10_ns": s["p10_ns"],
                            "p90_ns": s["p90_ns"], "n": s["n_latency"]})
        pts = pts.sort_values(["class", "size"]).reset_index(drop=True)
        cpu = str(m.get("cpu_model", "")).strip()
        return MeasuredPoints(profile_name, str(path), data.sha256, release,
                              f"{cpu}, {m.get('ncpus', '?')} CPUs" if cpu else arch, pts)
    return None


def _same_version(release: str, kernel: str) -> bool:
    """Is ``release`` (uname -r, e.g. 6.18.44-fc) of version ``kernel`` (e.g. 6.18)?"""
    head = release.split("-", 1)[0].split(".")
    want = kernel.split(".")
    return head[:len(want)] == want


__all__ = ["ALIGN_TO_CLASS", "MeasuredPoints", "candidate_files", "measured_points"]
