"""perfsim.errors: user input files and output locations fail in one line naming the path."""

from __future__ import annotations

import os

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


def test_atomic_dir_replaces_whole_or_leaves_everything_as_it_was(tmp_path):
    from perfsim.atomic import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
