"""Bad input to perfsim calibrate / validate: one line, exit 2, nothing written (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perfsim.cli.main import main

DATA = Path(__file__).parent / "data" / "calib" / "host-6.18.data.jsonl"


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv,needle", [
    (["--dry-run", "--max-size", "-1"], "--max-size -1: must be a positive size"),
    (["--dry-run", "--max-size", "1K"], "leaves no configuration"),
    (["--reps", "0", "--out", "x.toml"], "--reps 0: must be at least 3"),
    (["--bootstrap", "-1", "--out", "x.toml"], "--bootstrap -1: must be 0"),
    (["--traced-reps", "-2", "--out", "x.toml"], "--traced-reps -2"),
])
def test_absurd_numbers_are_one_line_errors(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", *argv]) == 2
    assert needle in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_non_utf8_data_is_named_by_calibrate_and_validate(capsys, tmp_path):
    bad = tmp_path / "bad.data.jsonl"
    bad.write_bytes(b'{"kind": "header", "x": "\xff"}\n')
    assert main(["calibrate", "--from-data", str(bad), "--out", str(tmp_path / "o.toml")]) == 2
    assert "bad.data.jsonl' is not UTF-8" in _err(capsys)
    assert main(["validate", "--cost", "x86_64-generic", "--data", str(bad), "--out",
                 str(tmp_path / "v")]) == 2
    assert "bad.data.jsonl' is not UTF-8" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.data.jsonl"]


def test_output_under_a_regular_file_is_refused_before_work(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    assert main(["calibrate", "--from-data", str(DATA), "--out",
                 str(tmp_path / "afile" / "x.toml")]) == 2
    assert "is a file, not a directory" in _err(capsys)
    assert main(["validate", "--cost", "x86_64-generic", "--data", str(DATA), "--out",
                 str(tmp_path / "afile" / "v")]) == 2
    assert "is a file, not a directory" in _err(capsys)


def test_an_existing_profile_is_not_replaced_without_force(capsys, tmp_path):
    out = tmp_path / "p.toml"
    out.write_text("keep me\n")
    assert main(["calibrate", "--from-data", str(DATA), "--out", str(out),
                 "--bootstrap", "0"]) == 2
    assert "already exists" in _err(capsys) and out.read_text() == "keep me\n"
    assert main(["calibrate", "--from-data", str(DATA), "--out", str(out), "--bootstrap", "0",
                 "--force", "--no-progress"]) == 0
    assert out.read_text().startswith("# Cost profile fitted")


def test_existing_validate_output_is_refused_before_the_work(capsys, tmp_path):
    (tmp_path / "v").mkdir()
    assert main(["validate", "--cost", "x86_64-generic", "--data", str(DATA), "--out",
                 str(tmp_path / "v")]) == 2
    assert "already exists" in _err(capsys)


def test_unwritable_outputs_are_refused_before_work(tmp_path, capsys, monkeypatch):
    """As an unprivileged user (root writes anywhere: there, ``os.access`` is made to answer
    as it would for a user without write permission on the directory)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro
                            and mode & os.W_OK else real(p, mode, **kw))
    for args in (["calibrate", "--from-data", str(DATA), "--out", str(ro / "x.toml")],
                 ["validate", "--cost", "x86_64-generic", "--data", str(DATA), "--out",
                  str(ro / "v")],
                 ["calibrate", "--quick", "--out", str(ro / "sub" / "q.toml")]):
        assert main(args) == 2
        assert "is not writable" in _err(capsys)
    assert list(ro.iterdir()) == []


def test_validate_refuses_a_cost_profile_for_another_arch_unless_forced(capsys, tmp_path):
    assert main(["validate", "--cost", "arm64-generic", "--data", str(DATA), "--out",
                 str(tmp_path / "v")]) == 2
    assert "'arm64-generic' is for arm64-4k" in _err(capsys)
    assert main(["validate", "--cost", "arm64-generic", "--data", str(DATA), "--holdout",
                 "none", "--force-cost-profile", "--out", str(tmp_path / "v")]) == 0


def test_calibrate_refuses_a_prior_for_another_arch(capsys, tmp_path):
    assert main(["calibrate", "--from-data", str(DATA), "--prior", "arm64-generic", "--out",
                 str(tmp_path / "p.toml")]) == 2
    assert "not x86_64" in _err(capsys)


def test_an_unknown_timer_is_one_line_naming_the_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--timer", "stopwatch", "--out", "x.toml"]) == 2
    err = capsys.readouterr().err
    assert "--timer" in err and "c-helper" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
