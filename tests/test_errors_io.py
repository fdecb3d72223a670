"""perfsim.errors: user input files and output locations fail in one line naming the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perfsim.errors import PerfsimError, check_output_dir, check_output_file, read_text, read_toml


def test_read_text_names_a_non_utf8_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_bytes(b"name = '\xff'\n")
    with pytest.raises(PerfsimError, match=r"bad.toml.*not UTF-8 text \(byte 8"):
        read_text(f, "sweep")


def test_read_text_says_directory_not_missing(tmp_path):
    with pytest.raises(PerfsimError, match="is a directory, not a file"):
        read_toml(tmp_path, "study")
    with pytest.raises(PerfsimError, match="does not exist"):
        read_toml(tmp_path / "nope.toml", "study")


def test_output_dir_under_a_regular_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(PerfsimError, match="is a file, not a directory"):
        check_output_dir(afile, "--out")
    with pytest.raises(PerfsimError, match="afile.*is a file, not a directory"):
        check_output_dir(afile / "sub" / "deeper", "--out")
    with pytest.raises(PerfsimError, match="afile.*is a file, not a directory"):
        check_output_file(afile / "x.json", "-o")
    with pytest.raises(PerfsimError, match="is a directory, not a file"):
        check_output_file(tmp_path, "-o")
    assert check_output_dir(tmp_path / "new" / "dir", "--out") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # nothing is created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: needs an unprivileged user")
def test_output_dir_not_writable_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PerfsimError, match="is not writable"):
            check_output_dir(ro / "out", "--out")
    finally:
        ro.chmod(0o700)


def _new_dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under this process's umask."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def test_a_written_result_directory_has_a_new_directorys_mode(tmp_path, capsys):
    """``perfsim run`` and ``workload run`` write their directory through temp_dir_beside
    (mkdtemp: 0700): published, it has the mode any new directory gets (was 0700)."""
    from perfsim.cli.main import main

    scenario = Path(__file__).resolve().parents[1] / "workloads" / "scenarios" / \
        "shared-file-two-processes.toml"
    assert main(["run", str(scenario), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert main(["workload", "run", "trace_replay", "--out", str(tmp_path / "wl"), "-q"]) == 0
    capsys.readouterr()
    for d in ("run", "wl"):
        assert (tmp_path / d).stat().st_mode & 0o777 == _new_dir_mode(), d


def test_atomic_dir_replaces_whole_or_leaves_everything_as_it_was(tmp_path):
    from perfsim.atomic import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert out.stat().st_mode & 0o777 == _new_dir_mode()
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]


def test_output_dir_where_no_entry_can_be_made_is_refused_before_work(tmp_path, monkeypatch):
    """access() trusts mode bits (always yes for root): the check makes and removes a probe
    directory, so a place that takes no new entries is refused before any work."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(PerfsimError, match=r"does not take new entries: Read-only file system"):
        check_output_dir(tmp_path / "out", "--out")
    with pytest.raises(PerfsimError, match=r"does not take new entries"):
        check_output_file(tmp_path / "x.json", "-o")


def test_output_dir_check_leaves_no_probe_behind(tmp_path):
    check_output_dir(tmp_path / "out", "--out")
    check_output_file(tmp_path / "x.json", "-o")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_output_dir_under_proc_is_refused_even_for_root():
    with pytest.raises(PerfsimError, match=r"--out '/proc/perfsim-out/r'"):
        check_output_dir("/proc/perfsim-out/r", "--out")


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EDQUOT"])
def test_a_full_or_read_only_destination_is_one_line_and_leaves_the_old_result(tmp_path, code):
    import errno

    from perfsim.atomic import atomic_dir, write_file_atomically

    err = getattr(errno, code)
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(PerfsimError, match=rf"cannot write '{out}': {os.strerror(err)}$"):
        with atomic_dir(out) as tmp:
            (tmp / "b.txt").write_text("half")
            raise OSError(err, os.strerror(err))
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    def full(tmp):
        tmp.write_text("half")
        raise OSError(err, os.strerror(err))

    f = tmp_path / "f.json"
    with pytest.raises(PerfsimError, match=rf"cannot write '{f}': {os.strerror(err)}$"):
        write_file_atomically(f, full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_that_is_not_the_destinations_keeps_its_traceback(tmp_path):
    """Only a destination's errors (full, read-only, refused) become one line; any other
    error inside the write is perfsim's own and stays an exception."""
    from perfsim.atomic import atomic_dir

    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "missing" / "x").read_text()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_old_result_back(tmp_path, monkeypatch):
    import errno

    from perfsim import atomic

    out = tmp_path / "out"
    with atomic.atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_fails)
    with pytest.raises(PerfsimError, match=r"cannot write .*Input/output error"):
        with atomic.atomic_dir(out) as tmp:
            (tmp / "b.txt").write_text("2")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
