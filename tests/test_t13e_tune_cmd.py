"""``perfsim tune`` as a whole command (issue 13, eighth pass): the git revision of the
provenance is asked while the analysis runs."""

import pytest


def test_the_revision_asked_in_the_background_is_the_provenances():
    from perfsim.cli.tune import Revision
    from perfsim.report.provenance import git_revision

    r = Revision()
    r.start()
    assert r.result() == git_revision()


def test_what_the_revision_raised_is_raised_where_it_is_asked_for(monkeypatch):
    from perfsim.cli.tune import Revision
    from perfsim.report import provenance

    def broken():
        raise RuntimeError("no revision")

    monkeypatch.setattr(provenance, "git_revision", broken)
    r = Revision()
    r.start()
    with pytest.raises(RuntimeError, match="no revision"):
        r.result()


def test_the_report_takes_the_revision_it_is_given(tmp_path):
    import json

    from perfsim.report.tune_report import write_tune_report
    from perfsim.tune import parse_tune, run_tune

    spec = parse_tune({"name": "rev", "workload": "ipi_storm", "seed": 5, "replications": 2,
                       "set": {"workload.streams.mover-0.count": 3},
                       "knobs": {"arch.tlb.single_page_flush_ceiling": [0, 512]}}, "test")
    res = run_tune(spec, executor="serial", quiet=True)
    out = write_tune_report(res, tmp_path / "r", revision=lambda: "abc123")
    assert json.loads((out / "provenance.json").read_text())["git_revision"] == "abc123"
    out = write_tune_report(res, tmp_path / "s", revision=lambda: "")
    assert json.loads((out / "provenance.json").read_text())["git_revision"] == \
        "(not a git work tree)"
