"""perfsim report: golden tables, files and provenance, findings backed by cells, atomic
writes, and the HTML rendered in a real headless browser."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from perfsim.report import load_study, run_study, write_report
from perfsim.report.browser import check_report, find_chromium
from perfsim.report.findings import generate
from perfsim.report.tables import build_tables

GOLDEN = Path(__file__).parent / "golden"
DATE = "2000-01-01 00:00:00 UTC"


@pytest.fixture(scope="module")
def golden_results():
    return run_study(load_study(GOLDEN / "study.toml"), executor="serial", quiet=True)


@pytest.fixture(scope="module")
def golden_report(golden_results, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "golden"
    write_report(golden_results, out, date=DATE)
    return out


def _tables(results):
    return {t.id: t for t in build_tables(results)}


# --------------------------------------------------------------------------- golden tables
def test_golden_tables_match_committed_numbers(golden_report):
    """The report's tables for the fixed study equal the committed ones (numbers, not
    pixels). Regenerate with PERFSIM_UPDATE_GOLDEN=1 after an intended model change."""
    written = sorted((golden_report / "data").glob("*.csv"))
    tables = [p for p in written if not p.name.startswith("fig-")]
    assert tables
    gold_dir = GOLDEN / "tables"
    if os.environ.get("PERFSIM_UPDATE_GOLDEN"):
        gold_dir.mkdir(exist_ok=True)
        for p in gold_dir.glob("*.csv"):
            p.unlink()
        for p in tables:
            (gold_dir / p.name).write_bytes(p.read_bytes())
    assert sorted(p.name for p in gold_dir.glob("*.csv")) == [p.name for p in tables]
    for p in tables:
        got, want = pd.read_csv(p), pd.read_csv(gold_dir / p.name)
        assert list(got.columns) == list(want.columns), p.name
        assert len(got) == len(want), p.name
        for c in want.columns:
            if pd.api.types.is_numeric_dtype(want[c]) and pd.api.types.is_numeric_dtype(got[c]):
                pd.testing.assert_series_equal(got[c].astype(float), want[c].astype(float),
                                               rtol=1e-9, atol=1e-9, obj=f"{p.name}:{c}")
            else:
                assert got[c].astype(str).tolist() == want[c].astype(str).tolist(), \
                    f"{p.name}:{c}"


def test_worked_examples_in_the_opcounts_table(golden_results):
    """E1–E4 of docs/kernel-rules.md, Worked examples at 1 GiB, as the report shows them."""
    t = _tables(golden_results)["opcounts"]
    assert t.value("pud · 6.18", "pud_moves") == 1
    assert (t.value("realignable · 6.18", "pmd_moves"), t.value("realignable · 6.18",
                                                                 "ptes_moved")) == (512, 1)
    assert (t.value("blocked · 6.18", "pmd_moves"), t.value("blocked · 6.18",
                                                             "ptes_moved")) == (511, 512)
    assert t.value("unaligned · 6.18", "move_ptes_calls") == 1025
    assert t.value("unaligned · 6.18", "ptes_moved") == 262144
    assert bool(t.value("realignable · 6.18", "realigned")) is True
    assert bool(t.value("realignable · 6.6", "realigned")) is False


# --------------------------------------------------------------------------- files
def test_report_directory_has_every_part(golden_report):
    d = golden_report
    for f in ("index.html", "report.md", "provenance.json"):
        assert (d / f).is_file()
    figs = {p.stem for p in (d / "figures").glob("*.png")}
    assert figs == {p.stem for p in (d / "figures").glob("*.svg")}
    assert {"latency_vs_size", "speedup", "cost_breakdown", "cdf_holds_waits",
            "flushes_ipis_vs_threads", "workload_cdfs", "tune-realign"} <= figs
    for fig in figs:  # the data behind every figure
        assert (d / "data" / f"fig-{fig}.csv").is_file()
    for t in ("latency", "speedup", "breakdown", "opcounts", "threads", "backing",
              "contention", "workloads", "tune-realign-best"):
        assert (d / "data" / f"{t}.csv").is_file()
    assert list((d / "traces").glob("*.json"))
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_provenance_names_versions_hashes_seeds_date_machine(golden_report):
    prov = json.loads((golden_report / "provenance.json").read_text())
    assert prov["perfsim_version"]
    assert prov["git_revision"]
    assert set(prov["cost_profiles"]) == {"x86_64-generic", "kvm-host"}
    assert all(re.fullmatch(r"[0-9a-f]{16}", v) for v in prov["cost_profiles"].values())
    assert re.fullmatch(r"[0-9a-f]{16}", prov["workloads"]["trace_replay"])
    assert prov["seeds"]["study"] == 7 and prov["date"] == DATE and prov["machine"]
    html = (golden_report / "index.html").read_text()
    md = (golden_report / "report.md").read_text()
    for text in (html, md):
        assert prov["cost_profiles"]["kvm-host"] in text and DATE in text


def test_html_is_self_contained(golden_report):
    html = (golden_report / "index.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "<link" not in html
    for href in re.findall(r'href="([^"#][^"]*)"', html):
        assert not href.startswith(("http:", "https:", "//")), href
        assert (golden_report / href).exists(), href


# --------------------------------------------------------------------------- findings
def test_every_finding_is_backed_by_table_cells(golden_results, golden_report):
    tables = _tables(golden_results)
    findings = generate(golden_results, tables)
    assert len(findings) >= 8
    html = (golden_report / "index.html").read_text()
    md = (golden_report / "report.md").read_text()
    for f in findings:
        assert f.cites, f.template
        # no number in the prose that is not a cited cell
        prose = re.sub(r"\{[a-z0-9_]+\}", "", f.template)
        prose = re.sub(r"\b(6\.\d+|E\d|R\d+a?|x86_64|[0-9]+[KMG]|2 MiB − 4 KiB|p99|p50|"
                       r"[0-9]+ thread\(s\)|with [0-9]+|[0-9]+ threads|over [a-z_.]+)\b", "",
                       prose)
        for c in f.cites.values():
            t = tables[c.table]
            text = t.format(c.col, t.value(c.row, c.col))
            anchor = t.anchor(c.row, c.col)
            assert f'id="{anchor}"' in html, anchor
            assert f'href="#{anchor}"' in html and f"(#{anchor})" in md
            row = t.row(c.row)
            shown = t.cell_text(row, c.col) if c.col in t.shown_columns() else text
            assert text in shown or c.col.endswith(("_lo", "_hi"))
            assert f"[{text}](#{anchor})" in md


def test_findings_say_where_realignment_matters(golden_results):
    tables = _tables(golden_results)
    texts = [f.plain(tables) for f in generate(golden_results, tables)]
    peak = next(t for t in texts if t.startswith("Realignment matters most"))
    assert "2M" in peak and "faster on 6.18 than on 6.6" in peak
    assert any("walkers never wait" in t for t in texts)
    assert any(t.startswith("What if a threshold changed?") for t in texts)


def test_speedup_ratios_have_confidence_intervals_with_jitter(golden_results):
    t = _tables(golden_results)["speedup"]
    kvm = t.df[t.df["cost_profile"] == "kvm-host"].set_index("size")
    row = kvm.loc[2 << 20]
    assert row["realign_gain_lo"] < row["realign_gain"] < row["realign_gain_hi"]
    assert 1.2 < row["realign_gain"] < 2.0
    gen = t.df[t.df["cost_profile"] == "x86_64-generic"].set_index("size")
    assert gen.loc[1 << 30, "unaligned_vs_realigned"] > 10  # E4 vs E2


# --------------------------------------------------------------------------- atomicity
def test_report_directory_is_replaced_atomically(golden_results, golden_report, tmp_path,
                                                monkeypatch):
    import shutil

    from perfsim.report import figures as F
    from perfsim.report.write import atomic_dir

    out = tmp_path / "r"
    shutil.copytree(golden_report, out)
    before = (out / "index.html").read_bytes()
    calls = []

    def save_then_crash(f, outdir):
        calls.append(f.id)
        (outdir / "index.html").write_text("half")
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return F.save.__wrapped__(f, outdir) if hasattr(F.save, "__wrapped__") else f

    monkeypatch.setattr(F, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(golden_results, out, date=DATE)
    assert (out / "index.html").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    with atomic_dir(out) as tmp:  # success: the new directory replaces the old one whole
        (tmp / "index.html").write_text("new")
    assert [p.name for p in out.iterdir()] == ["index.html"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


# --------------------------------------------------------------------------- browser
def test_html_renders_in_headless_chromium_with_every_image_loaded(golden_report):
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    res = check_report(golden_report)
    assert res["ready"] == "complete"
    assert res["images"] >= 7 and res["broken"] == []
    assert res["console_errors"] == []
    assert res["dangling"] == 0 and res["cites"] > 20
    assert res["ok"]


def test_browser_check_catches_broken_images_and_console_errors(tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html><head><title>bad</title></head><body>'
        '<img src="missing.png" alt="gone"><script>console.error("boom")</script>'
        '</body></html>')
    res = check_report(tmp_path)
    assert not res["ok"]
    assert res["broken"] == ["gone"]
    assert any("boom" in e for e in res["console_errors"])


# --------------------------------------------------------------------------- default
def test_default_study_is_the_documented_one():
    from perfsim.report import default_study, plan_tasks

    d = default_study()
    f = load_study(Path(__file__).parents[1] / "studies" / "default.toml")
    assert d.model_dump(exclude={"tune"}) == f.model_dump(exclude={"tune"})
    assert [t.model_dump(exclude={"base_dir"}) for t in d.tune] == \
        [t.model_dump(exclude={"base_dir"}) for t in f.tune]
    assert d.calls.size_values()[0] == 4096 and d.calls.size_values()[-1] == 4 << 30
    kinds = [type(t).__name__ for t in plan_tasks(d)]
    assert kinds.count("GridTask") == 2 * 5 * 2 * 2          # kernels × classes × backings × THP
    assert kinds.count("ContentionTask") == 2 * 2 * 2 * 3 * 5  # classes × kernels × profiles ...
    assert kinds.count("WorkloadTask") % (2 * 5) == 0         # scenarios × kernels × reps


@pytest.mark.slow
def test_default_report_under_three_minutes(tmp_path):
    import time

    from perfsim.report import default_study, make_report

    t0 = time.perf_counter()
    out = make_report(default_study(), tmp_path, quiet=True, executor="process:2")
    assert time.perf_counter() - t0 < 180
    assert (out / "index.html").is_file()
    if find_chromium() is not None:
        assert check_report(out)["ok"]

