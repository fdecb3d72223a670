"""A plan request names the call with the syscall's own argument names (old_addr, old_len,
new_len, new_addr), like workloads, scenarios and MoveRequest; perfsim plan keeps --src,
--len and --dst as short spellings; the profile files it is given are read once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsim.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "perfsim" / "data"


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("key, value, new", [
    ("src", '"A"', "old_addr"),
    ("len", '"1G"', "old_len"),
    ("dst", '"B"', "new_addr"),
])
def test_a_former_key_in_a_request_file_is_refused_naming_its_new_key(capsys, tmp_path, key,
                                                                       value, new):
    f = tmp_path / "req.toml"
    f.write_text(("" if key == "len" else 'old_len = "1G"\n') + f"{key} = {value}\n")
    rc, out, err = _run(capsys, "plan", "--file", str(f))
    assert rc == 2 and out == ""
    assert err == f"perfsim: error: plan request {f}: key {key!r} is now {new!r}\n"


def test_former_keys_are_refused_in_a_request_table_too(capsys, tmp_path):
    f = tmp_path / "req.toml"
    f.write_text('[request]\nlen = "1G"\nsrc = "A"\nmaymove = true\n')
    rc, out, err = _run(capsys, "plan", "--file", str(f))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "key 'len' is now 'old_len'" in err and "key 'src' is now 'old_addr'" in err


def test_the_syscall_names_plan_the_call(capsys, tmp_path):
    f = tmp_path / "req.toml"
    f.write_text('old_addr = "A+2M+4K"\nold_len = "4M"\nnew_len = "8M"\n'
                 'new-addr = "B+6M+4K"\n')
    rc, out, _ = _run(capsys, "plan", "--file", str(f), "--json")
    req = json.loads(out)["request"]
    assert rc == 0 and req["new_len"] == 8 << 20


def test_short_spellings_are_the_same_options(capsys):
    long = ["plan", "--old-len", "1G", "--old-addr", "A+2M+4K", "--new-addr", "B+6M+8K", "--json"]
    short = ["plan", "--len", "1G", "--src", "A+2M+4K", "--dst", "B+6M+8K", "--json"]
    rc_l, out_l, _ = _run(capsys, *long)
    rc_s, out_s, _ = _run(capsys, *short)
    assert rc_l == rc_s == 0 and json.loads(out_l) == json.loads(out_s)
    assert json.loads(out_l)["syscall"]["tlb_flushes"] == 1027  # E4


def test_a_short_spelling_overrides_the_file_key_it_spells(capsys, tmp_path):
    f = tmp_path / "req.toml"
    f.write_text('old_len = "1G"\nold_addr = "A+2M+4K"\nnew_addr = "B+6M+4K"\n')
    _, out_file, _ = _run(capsys, "plan", "--file", str(f), "--json")
    _, out_dst, _ = _run(capsys, "plan", "--file", str(f), "--dst", "B+6M+8K", "--json")
    assert json.loads(out_file)["syscall"]["tlb_flushes"] == 514  # E2: realigned
    assert json.loads(out_dst)["syscall"]["tlb_flushes"] == 1027  # E4


def test_help_shows_the_long_name_and_its_short_spelling(capsys):
    rc, out, _ = _run(capsys, "plan", "--help")
    out = " ".join(out.split())
    assert rc == 0
    for long, short, meta in (("--old-addr", "--src", "ADDR"), ("--old-len", "--len", "SIZE"),
                              ("--new-addr", "--dst", "ADDR")):
        assert f"{long} {meta}, {short} {meta}" in out, long
    assert "--new-len SIZE" in out


def test_each_profile_file_given_is_read_once(capsys, tmp_path, monkeypatch):
    paths = {}
    for opt, src in (("--kernel", DATA / "kernels" / "6.18.toml"),
                     ("--arch", DATA / "arch" / "x86_64.toml"),
                     ("--cost-profile", DATA / "cost" / "x86_64-generic.toml")):
        paths[opt] = tmp_path / f"{opt.strip('-')}.toml"
        paths[opt].write_text(src.read_text())
    reads: dict[str, int] = {}
    read_bytes, read_text = Path.read_bytes, Path.read_text

    def counting_bytes(self):
        reads[str(self)] = reads.get(str(self), 0) + 1
        return read_bytes(self)

    def counting_text(self, *a, **kw):
        reads[str(self)] = reads.get(str(self), 0) + 1
        return read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_bytes", counting_bytes)
    monkeypatch.setattr(Path, "read_text", counting_text)
    argv = [x for opt, p in paths.items() for x in (opt, str(p))]
    rc, out, err = _run(capsys, "plan", "--old-len", "1G", "--json", *argv)
    assert rc == 0, err
    assert json.loads(out)["predicted_ns"] > 0
    assert {opt: reads.get(str(p), 0) for opt, p in paths.items()} == \
        {"--kernel": 1, "--arch": 1, "--cost-profile": 1}


@pytest.mark.parametrize("opt", ["--kernel", "--arch", "--cost-profile"])
def test_a_profile_path_that_is_missing_or_a_directory_is_one_line_naming_the_option(
        capsys, tmp_path, opt):
    for path, needle in ((tmp_path / "none.toml", "does not exist"),
                         (tmp_path, "is a directory")):
        value = str(path) + ("/" if path == tmp_path else "")
        rc, out, err = _run(capsys, "plan", "--old-len", "1G", opt, value)
        assert rc == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"perfsim: error: {opt} file ") and needle in err, err
