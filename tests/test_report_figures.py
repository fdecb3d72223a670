"""The report's figures, checked on the matplotlib objects the report builds: no negative
ticks, readable log axes, no overlapping tick labels, coinciding lines named, the tuning
figure showing the paired interval of its table, measured points where calibration data
exists; and the first screen of the report holding the answer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from perfsim.report import figures as F
from perfsim.report import load_study, run_study, write_report
from perfsim.report.measured import measured_points
from perfsim.report.tables import build_tables

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results():
    return run_study(load_study(GOLDEN / "study.toml"), executor="serial", quiet=True)


@pytest.fixture(scope="module")
def figures(results):
    tables = {t.id: t for t in build_tables(results)}
    m = measured_points("kvm-host", arch="x86_64", kernel=results.study.new)
    figs = F.build_figures(results, tables, m)
    yield {f.id: f for f in figs}, tables
    import matplotlib.pyplot as plt

    for f in figs:
        if f.mpl is not None:
            plt.close(f.mpl)


def _axes(fig):
    return [ax for ax in fig.mpl.axes if ax.get_visible() and ax.axison]


def _visible_ticks(ax, axis):
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [t for t in ticks if lo - 1e-9 * abs(lo) <= t <= hi + 1e-9 * abs(hi)]


def test_no_figure_has_a_negative_tick(figures):
    """Nothing the report plots is negative (counts, latencies, ratios, shares, CDFs), so no
    axis may show a negative tick; in particular not the flush and IPI count axes."""
    figs, _ = figures
    seen_count_axes = 0
    for f in figs.values():
        for ax in _axes(f):
            for axis in ("x", "y"):
                neg = [t for t in _visible_ticks(ax, axis) if t < 0]
                assert not neg, f"{f.id}: {axis} axis '{ax.get_ylabel()}' ticks {neg}"
            if ax.get_ylabel() in ("TLB flushes per call", "IPIs per call"):
                seen_count_axes += 1
                assert min(_visible_ticks(ax, "y")) == 0
    assert seen_count_axes >= 2  # TLB flushes per call, IPIs per call


def test_every_log_axis_has_enough_plain_ticks(figures):
    """A log axis spanning more than a factor of 5 shows at least three ticks (one tick, or
    two decades' labels, cannot be read), with plain labels (no exponents)."""
    figs, _ = figures
    for f in figs.values():
        for ax in _axes(f):
            for axis in ("x", "y"):
                scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
                if scale not in ("log", "symlog"):
                    continue
                a = ax.xaxis if axis == "x" else ax.yaxis
                lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
                span = hi / max(lo, 1.0)
                ticks = _visible_ticks(ax, axis)
                assert len(ticks) >= (3 if span > 5 else 2), (
                    f"{f.id}: {axis} axis over [{lo:g}, {hi:g}] has ticks {ticks}")
                labels = [t.get_text() for t in a.get_ticklabels() if t.get_text()]
                assert not any("^" in lbl or "times" in lbl for lbl in labels), labels


def _overlaps(boxes):
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 \
                    and b.y0 < a.y1 - 0.5:
                return a, b
    return None


def test_tick_labels_never_overlap(figures):
    figs, _ = figures
    for f in figs.values():
        f.mpl.canvas.draw()
        r = f.mpl.canvas.get_renderer()
        for ax in _axes(f):
            for a in (ax.xaxis, ax.yaxis):
                boxes = [t.get_window_extent(r) for t in a.get_ticklabels()
                         if t.get_text() and t.get_visible()]
                hit = _overlaps(boxes)
                assert hit is None, f"{f.id}: overlapping tick labels {hit}"


def test_coinciding_lines_are_named_in_the_panel_and_caption(figures):
    figs, _ = figures
    f = figs["flushes_ipis_vs_threads"]
    texts = [t.get_text() for ax in _axes(f) for t in ax.texts]
    d = f.data
    series = {c: g.sort_values("threads")["flushes_per_call"].to_numpy(float)
              for c, g in d.groupby("class", sort=False)}
    groups = F.coincident_groups(series)
    assert groups, "the golden study has classes with equal flush counts"
    for g in groups:
        label = F.overlap_label(g, series)
        assert any(label in t for t in texts)
        assert label in f.caption


def test_identical_workload_arms_are_said_to_be_identical(figures, results):
    figs, _ = figures
    f = figs["workload_cdfs"]
    wc = results.workload_calls
    s = results.study
    for name in wc["workload"].unique():
        a = np.sort(wc[(wc["workload"] == name) & (wc["kernel"] == s.baseline)]["latency_ns"])
        b = np.sort(wc[(wc["workload"] == name) & (wc["kernel"] == s.new)]["latency_ns"])
        assert (name in f.caption) == (len(a) == len(b) and np.array_equal(a, b))


def test_tune_figure_shows_the_paired_interval_of_its_table(figures, results):
    figs, tables = figures
    tr = results.tunes[0]
    f = figs[f"tune-{tr.spec.name}"]
    st = tables[f"tune-{tr.spec.name}-settings"].df
    trial = st[st["row"] != "baseline"]
    got = f.data.drop_duplicates("vs_baseline_lo")["vs_baseline_lo"].dropna().sort_values()
    want = trial["vs_baseline_lo"].dropna().drop_duplicates().sort_values()
    assert np.allclose(got.to_numpy(float), want.to_numpy(float))
    ax = _axes(f)[0]
    assert "setting / baseline" in ax.get_ylabel()
    assert "µs" in f.caption or "ns" in f.caption


def test_latency_figure_overlays_calibration_medians(figures):
    figs, _ = figures
    f = figs["latency_vs_size"]
    if not (ROOT / "data" / "calibration" / "kvm-host.data.jsonl").is_file():
        pytest.skip("no shipped calibration data in this tree")
    meas = f.data[f.data["source"] == "measured"]
    assert len(meas) and set(meas["class"]) <= {"pud", "pmd", "realignable", "blocked",
                                                "unaligned"}
    assert "measured" in f.caption and "kvm-host" in f.caption
    model = f.data[f.data["source"] == "model"]["size"]
    assert meas["size"].between(model.min(), model.max()).all()


def test_measured_points_only_for_the_matching_arch_and_kernel():
    if not (ROOT / "data" / "calibration" / "kvm-host.data.jsonl").is_file():
        pytest.skip("no shipped calibration data in this tree")
    assert measured_points("kvm-host", arch="x86_64", kernel="6.18") is not None
    assert measured_points("kvm-host", arch="arm64", kernel="6.18") is None
    assert measured_points("kvm-host", arch="x86_64", kernel="6.6") is None
    assert measured_points("x86_64-generic", arch="x86_64", kernel="6.18") is None


def test_svg_of_the_thread_figure_has_no_negative_tick_labels(results, tmp_path):
    out = write_report(results, tmp_path / "r")
    svg = (out / "figures" / "flushes_ipis_vs_threads.svg").read_text()
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert labels and not [t for t in labels if re.fullmatch(r"\s*[−-]\s*[\d,.]+\s*", t)]


# --------------------------------------------------------------------------- first screen
def test_first_screen_of_the_report_holds_the_headline(results, tmp_path):
    """The first lines of report.md answer the question (unaligned vs realigned at the
    reference size, with the ratio from the speed-up table) and show the five classes
    before any finding uses them."""
    out = write_report(results, tmp_path / "r")
    md = (out / "report.md").read_text().splitlines()
    tables = {t.id: t for t in build_tables(results)}
    sp = tables["speedup"]
    row = sp.row("x86_64-generic 1G")
    ratio = sp.format("unaligned_vs_realigned", row["unaligned_vs_realigned"])
    head = "\n".join(md[:12])
    assert "1G" in head and "unaligned" in head and "realigned" in head
    assert ratio in head
    assert "buys" in head
    pos_classes = next(i for i, line in enumerate(md) if "alignment_classes.png" in line)
    pos_findings = md.index("## Findings")
    assert pos_classes < pos_findings
    html = (out / "index.html").read_text()
    assert html.index('id="answer"') < html.index('id="findings"')
    assert html.index("figure-alignment_classes") < html.index('id="findings"')


def test_headline_numbers_are_cited_cells_that_exist(results, tmp_path):
    from perfsim.report.findings import headline

    tables = {t.id: t for t in build_tables(results)}
    found = headline(results, tables)
    assert len(found) == 2
    out = write_report(results, tmp_path / "r")
    html = (out / "index.html").read_text()
    for f in found:
        text = f.plain(tables)
        for c in f.cites.values():
            t = tables[c.table]
            shown = t.format(c.col, t.value(c.row, c.col))
            assert shown in text
            assert f'id="{t.anchor(c.row, c.col)}"' in html
