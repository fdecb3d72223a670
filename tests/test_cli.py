"""The command line: ``perfsim plan`` counts (docs/kernel-rules.md, Worked examples E1–E4,
E7), output formats, request files, and the bad-input contract (one line on stderr, exit 2, no
traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from perfsim.cli import main as main_mod
from perfsim.cli import plan as plan_mod
from perfsim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plan"

# docs/kernel-rules.md, Worked examples: its A = 0x7f0000200000 and B = 0x7f4000600000 are perfsim's default
# bases (named A and B on the command line) + 2M and + 6M.
E_FLAGS = {
    "e1": ["--old-len", "1G"],
    "e2": ["--old-len", "1G", "--old-addr", "A+2M+4K", "--new-addr", "B+6M+4K"],
    "e3": ["--old-len", "1G", "--old-addr", "A+2M+4K", "--new-addr", "B+6M+4K", "--guard-below-src"],
    "e4": ["--old-len", "1G", "--old-addr", "A+2M+4K", "--new-addr", "B+6M+8K"],
}
E_EXPECT = {
    "e1": dict(realigned=False, pud_moves=1, pmd_moves=0, ptes_moved=0, tlb_flushes=1,
               tlb_full_flushes=1, rmap_holds=1, tables={"pud": 0, "pmd": 0, "pte": 0}),
    "e2": dict(realigned=True, pud_moves=0, pmd_moves=512, ptes_moved=1, move_ptes_calls=1,
               tlb_flushes=513, tlb_full_flushes=512, tlb_pages_invalidated=1, rmap_holds=512,
               tables={"pud": 0, "pmd": 2, "pte": 1}),
    "e3": dict(realigned=False, pmd_moves=511, ptes_moved=512, move_ptes_calls=2,
               tlb_flushes=513, tlb_full_flushes=512, rmap_holds=511,
               tables={"pud": 0, "pmd": 2, "pte": 2}),
    "e4": dict(realigned=False, pud_moves=0, pmd_moves=0, move_ptes_calls=1025,
               ptes_moved=262144, tlb_flushes=1025, tlb_full_flushes=512,
               tlb_pages_invalidated=513, rmap_holds=0, tables={"pud": 0, "pmd": 2, "pte": 513}),
}
COUNTER_KEYS = ("pud_moves", "pmd_moves", "thp_moves", "thp_splits", "ptes_moved",
                "move_ptes_calls", "tlb_flushes", "tlb_full_flushes", "tlb_pages_invalidated",
                "ipis", "rmap_holds", "tables_allocated", "tables_freed")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv):
    rc, out, err = run(capsys, "plan", *argv, "--json")
    assert rc == 0, err
    assert err == ""
    return json.loads(out)


def check_counts(doc, expect):
    m = doc["move"]
    for key, want in expect.items():
        if key == "realigned":
            assert doc["realigned"] is want
        elif key == "tables":
            got = {k: m["tables_allocated"][k] for k in want}
            assert got == want
        else:
            assert m[key] == want, key


# --------------------------------------------------------------------------- E1–E4


@pytest.mark.parametrize("name", sorted(E_FLAGS))
def test_worked_examples_from_flags(capsys, name):
    doc = run_json(capsys, *E_FLAGS[name])
    assert doc["errno"] is None and doc["progress_bytes"] == 1 << 30
    check_counts(doc, E_EXPECT[name])


@pytest.mark.parametrize("name", sorted(E_FLAGS))
def test_worked_examples_from_request_files(capsys, name):
    path = EXAMPLES / f"{name}.toml"
    doc = run_json(capsys, "--file", str(path))
    check_counts(doc, E_EXPECT[name])
    assert doc["request"]["file"] == str(path)
    assert doc["request"]["description"].startswith(name.upper())


def test_json_document_shape(capsys):
    doc = run_json(capsys, *E_FLAGS["e2"])
    for key in ("realigned", "errno", "progress_bytes", "move", "syscall", "request", "target"):
        assert key in doc
    for part in ("move", "syscall"):
        for key in COUNTER_KEYS:
            assert key in doc[part], (part, key)
        assert set(doc[part]["tables_allocated"]) >= {"pud", "pmd", "pte"}
    assert doc["target"]["arch"] == "x86_64" and doc["target"]["kernel"] == "6.18"
    assert len(doc["target"]["profile_digest"]) == 16
    req = doc["request"]
    assert req["old_addr"] == 0x7F0000201000 and req["new_addr"] == 0x7F4000601000
    assert req["old_len"] == 1 << 30 and req["flags"] == ["MAYMOVE", "FIXED"]
    # The whole call also unmaps the source: the syscall counts include the move's.
    assert doc["syscall"]["tlb_flushes"] >= doc["move"]["tlb_flushes"]


def test_absolute_addresses_equal_offsets(capsys):
    a = run_json(capsys, "--old-len", "1G", "--old-addr", "0x7f0000201000", "--new-addr", "0x7f4000602000")
    b = run_json(capsys, *E_FLAGS["e4"])
    assert a["move"] == b["move"] and a["request"]["old_addr"] == b["request"]["old_addr"]


def test_e1_on_4_cpus_sends_ipis(capsys):
    doc = run_json(capsys, "--old-len", "1G", "--cpus", "4")
    assert doc["move"]["tlb_flushes"] == 1 and doc["move"]["ipis"] == 3


def test_e7_stack_relocation(capsys):
    doc = run_json(capsys, "--old-len", "12K", "--old-addr", "0x7fffffffc000",
                   "--new-addr", "0x7ffd4c59e000", "--for-stack")
    m = doc["move"]
    assert doc["errno"] is None and not doc["realigned"]
    assert (m["ptes_moved"], m["move_ptes_calls"], m["tlb_flushes"]) == (3, 1, 1)
    assert m["tlb_pages_invalidated"] == 3 and m["rmap_holds"] == 0
    assert m["tables_allocated"]["pmd"] + m["tables_allocated"]["pte"] == 2
    assert doc["request"]["flags"] == ["relocate_vma_down"]


def test_kernel_6_6_does_not_realign(capsys):
    doc = run_json(capsys, "--file", str(EXAMPLES / "e2.toml"), "--kernel", "6.6")
    assert doc["realigned"] is False and doc["move"]["pmd_moves"] == 511
    assert doc["target"]["kernel"] == "6.6"


@pytest.mark.parametrize("arch", ["riscv-sv39", "arm64-4k", "arm64-16k", "x86_64-la57"])
def test_default_bases_fit_every_arch(capsys, arch):
    doc = run_json(capsys, "--old-len", "1G", "--arch", arch)
    assert doc["errno"] is None and doc["progress_bytes"] == 1 << 30
    assert doc["target"]["arch"] == arch


def test_e5a_arm64_16k_no_realignment(capsys):
    doc = run_json(capsys, "--arch", "arm64-16k", "--old-len", "4M", "--old-addr", "A+16K", "--new-addr",
                   "B+16K")
    m = doc["move"]
    assert not doc["realigned"] and m["move_ptes_calls"] == 1 and m["ptes_moved"] == 256


def test_thp_and_hugetlb_backings(capsys):
    doc = run_json(capsys, "--old-len", "64M", "--thp", "on")
    assert doc["move"]["thp_moves"] == 32 and doc["move"]["ptes_moved"] == 0
    doc = run_json(capsys, "--old-len", "64M", "--backing", "hugetlb")
    assert doc["errno"] is None and doc["move"]["hugetlb_moves"] == 32


def test_partial_population(capsys):
    none = run_json(capsys, *E_FLAGS["e4"], "--populate", "none")
    assert none["move"]["ptes_moved"] == 0
    every = run_json(capsys, *E_FLAGS["e4"], "--populate", "every:2")
    assert every["move"]["ptes_moved"] == 262144 // 2
    a = run_json(capsys, *E_FLAGS["e4"], "--populate", "0.25", "--seed", "7")
    b = run_json(capsys, *E_FLAGS["e4"], "--populate", "0.25", "--seed", "7")
    assert a["move"] == b["move"] and 0 < a["move"]["ptes_moved"] < 262144


# --------------------------------------------------------------------------- file + flags


def test_flags_override_request_file(capsys):
    e3 = run_json(capsys, "--file", str(EXAMPLES / "e2.toml"), "--guard-below-src")
    check_counts(e3, E_EXPECT["e3"])
    e2 = run_json(capsys, "--file", str(EXAMPLES / "e3.toml"), "--no-guard-below-src")
    check_counts(e2, E_EXPECT["e2"])
    e4 = run_json(capsys, "--file", str(EXAMPLES / "e2.toml"), "--new-addr", "B+6M+8K")
    check_counts(e4, E_EXPECT["e4"])


def test_request_file_spellings(capsys, tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[request]\nold_len = 1073741824\nold_addr = "A+2M+4K"\nnew_addr = "B+6M+4K"\n'
                 'guard_below_src = true\nthp = "off"\ncpus = 2\nfixed = true\n')
    doc = run_json(capsys, "--file", str(f))
    check_counts(doc, E_EXPECT["e3"])
    assert doc["request"]["cpus"] == 2


# --------------------------------------------------------------------------- outputs


def test_human_table(capsys):
    rc, out, err = run(capsys, "plan", *E_FLAGS["e2"])
    assert rc == 0 and err == ""
    assert "realigned   yes" in out
    assert "mremap(0x7f0000201000, 1G, 1G, MAYMOVE|FIXED, 0x7f4000601000)" in out
    assert "x86_64, kernel 6.18" in out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.strip()}
    assert lines["counter"] == ["move", "syscall"]
    assert lines["pmd_moves"] == ["512", "512"]
    assert lines["tlb_flushes"][0] == "513"
    assert lines["tables_allocated.pmd"] == ["2", "2"]
    assert "result      ok" in out


def test_trace_folds_a_1g_unaligned_move(capsys):
    rc, out, err = run(capsys, "plan", *E_FLAGS["e4"], "--trace")
    assert rc == 0
    trace = out[out.index("trace: 1030 steps"):].splitlines()
    assert len(trace) < 30  # 1030 steps fold into a handful of lines
    assert any("×508 of the 2 steps" in ln or "×511 of the 2 steps" in ln for ln in trace)
    assert any("move_ptes" in ln and "0x7f0000201000" in ln for ln in trace)
    assert "more steps not shown" not in out


def test_trace_period_one_runs(capsys):
    rc, out, _ = run(capsys, "plan", *E_FLAGS["e2"], "--trace")
    assert rc == 0
    assert any("×508" in ln and "move_normal_pmd" in ln and "anon_vma" in ln
               for ln in out.splitlines())


def test_trace_json_covers_every_row_and_limit(capsys):
    doc = run_json(capsys, *E_FLAGS["e4"], "--trace", "--trace-limit", "0")
    tr = doc["trace"]
    assert tr["rows"] == doc["steps"] and not tr["truncated"]
    assert sum(len(g["steps"]) * g["repeat"] for g in tr["groups"]) == tr["rows"]
    short = run_json(capsys, *E_FLAGS["e4"], "--trace", "--trace-limit", "2")
    assert short["trace"]["truncated"] and len(short["trace"]["groups"]) == 2
    rc, out, _ = run(capsys, "plan", *E_FLAGS["e4"], "--trace", "--trace-limit", "3")
    assert "more steps not shown" in out


def test_compress_prefers_longest_cover():
    import numpy as np

    from perfsim.planner import steps as S

    log = S.StepLog()
    shapes = [1] + [2, 3] * 10 + [4] * 5 + [2]
    for i, n in enumerate(shapes):
        log.add(S.MOVE, S.K_PTE_MOVE, i << 12, i << 12, n << 12, ptes=n)
    steps = log.freeze()
    groups = plan_mod.compress(steps)
    assert [(g.start, g.period, g.repeat) for g in groups] == [
        (0, 1, 1), (1, 2, 10), (21, 1, 5), (26, 1, 1)]
    assert np.array_equal(plan_mod.shape_ids(steps)[1:3], plan_mod.shape_ids(steps)[3:5])


# --------------------------------------------------------------------------- kernel errnos


@pytest.mark.parametrize("argv, errno", [
    (["--old-len", "0"], "EINVAL"),                                   # new_len 0
    (["--old-len", "1G", "--old-addr", "1K"], "EINVAL"),                   # unaligned old_addr
    (["--old-len", "1G", "--new-addr", "0x7f0000100000"], "EINVAL"),       # overlapping fixed move
    (["--old-len", "4M", "--backing", "hugetlb", "--old-addr", "4K"], "EINVAL"),
])
def test_kernel_errno_is_a_result(capsys, argv, errno):
    rc, out, err = run(capsys, "plan", *argv, "--json")
    assert rc == 0 and err == ""
    doc = json.loads(out)
    assert doc["errno"] == errno and doc["progress_bytes"] == 0
    rc, out, err = run(capsys, "plan", *argv)
    assert rc == 0 and f"errno {errno}" in out


def test_partial_move_reverts_with_enomem(capsys):
    doc = run_json(capsys, *E_FLAGS["e4"], "--fail-alloc-at", "3")
    assert doc["errno"] == "ENOMEM" and 0 < doc["progress_bytes"] < 1 << 30


# --------------------------------------------------------------------------- bad input


def bad_file(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_ARGV = {
    "unknown arch": (["plan", "--old-len", "1G", "--arch", "sparc"], "valid names"),
    "unknown kernel": (["plan", "--old-len", "1G", "--kernel", "2.4"], "6.18"),
    "negative len": (["plan", "--old-len", "-4K"], "negative"),
    "negative len =": (["plan", "--old-len=-1"], "negative"),
    "len arithmetic below 0": (["plan", "--old-len", "4K-8K"], "negative"),
    "unparsable len": (["plan", "--old-len", "lots"], "cannot parse"),
    "unparsable src": (["plan", "--old-len", "1G", "--old-addr", "0xzz"], "--old-addr"),
    "missing len": (["plan"], "--old-len is required"),
    "src beyond top": (["plan", "--old-len", "1G", "--old-addr", "0x800000000000"], "user address range"),
    "src+len beyond top": (["plan", "--old-len", "2T", "--old-addr", "0x7f0000000000"], "--old-addr + --old-len"),
    "dst beyond top": (["plan", "--old-len", "1G", "--new-addr", "0xffff800000000000"], "--new-addr"),
    "dst+new_len beyond top": (["plan", "--old-len", "4K", "--new-len", "1T", "--new-addr",
                                "0x7fff00000000"], "--new-addr + --new-len"),
    "riscv sv39 top": (["plan", "--old-len", "1G", "--arch", "riscv-sv39", "--old-addr",
                        "0x7f0000000000"], "riscv-sv39"),
    "bad populate": (["plan", "--old-len", "1G", "--populate", "most"], "--populate"),
    "bad populate every": (["plan", "--old-len", "1G", "--populate", "every:0"], "every:K"),
    "bad populate fraction": (["plan", "--old-len", "1G", "--populate", "1.5"], "(0, 1)"),
    "cpus 0": (["plan", "--old-len", "1G", "--cpus", "0"], "--cpus"),
    "cpus text": (["plan", "--old-len", "1G", "--cpus", "two"], "--cpus"),
    "bad backing": (["plan", "--old-len", "1G", "--backing", "ram"], "--backing"),
    "bad thp": (["plan", "--old-len", "1G", "--thp", "maybe"], "--thp"),
    "fail-alloc-at 0": (["plan", "--old-len", "1G", "--fail-alloc-at", "0"], ">= 1"),
    "for-stack upward": (["plan", "--old-len", "12K", "--for-stack"], "below old_addr"),
    "for-stack new-len": (["plan", "--old-len", "12K", "--old-addr", "0x7fffffffc000", "--new-addr",
                           "0x7ffd4c59e000", "--for-stack", "--new-len", "8K"], "--new-len"),
    "bad hugepage size": (["plan", "--old-len", "1G", "--backing", "hugetlb", "--hugepage-size",
                           "4M"], "huge page size"),
    "trace limit": (["plan", "--old-len", "1G", "--trace-limit", "-1"], "--trace-limit"),
    "unknown option": (["plan", "--old-len", "1G", "--frobnicate"], "unrecognized"),
    "unknown command": (["teleport"], "invalid choice"),
    "no command": ([], "command is required"),
    "missing file": (["plan", "--file", "/nonexistent/req.toml"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGV))
def test_bad_input_is_one_line_exit_2(capsys, case):
    argv, needle = BAD_ARGV[case]
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.startswith("perfsim: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text, needle", [
    ("old_len = \"1G\"\nold_addr = [1, 2\n", "not valid TOML"),
    ("old_len = \"1G\"\ncolour = \"red\"\n", "unknown key 'colour'; allowed keys: description, old_addr"),
    ("old_len = \"1G\"\nbacking = \"ram\"\n", "key 'backing': got 'ram'; allowed: one of anon"),
    ("old_len = \"1G\"\ncpus = 0\n", "key 'cpus'"),
    ("old_len = \"1G\"\ncpus = \"four\"\n", "key 'cpus'"),
    ("old_len = \"1G\"\nthp = \"sometimes\"\n", "key 'thp'"),
    ("old_len = true\n", "key 'old_len'"),
    ("old_len = \"1Q\"\n", "old_len: cannot parse"),
    ("old_len = \"1G\"\nold_addr = \"0x900000000000\"\n", "old_addr: 0x900000000000 is outside"),
    ("old_len = \"1G\"\npopulate = \"most\"\n", "populate: expected full"),
    ("old_len = \"1G\"\narch = \"vax\"\n", "unknown arch 'vax'"),
])
def test_bad_request_file(capsys, tmp_path, text, needle):
    path = bad_file(tmp_path, "req.toml", text)
    rc, out, err = run(capsys, "plan", "--file", path)
    assert rc == 2 and out == ""
    assert err.startswith("perfsim: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    if "arch" not in needle:
        assert path in err  # the message names the file


# --------------------------------------------------------------------------- cost model


def test_cost_profile_path_that_does_not_exist(capsys, tmp_path):
    rc, out, err = run(capsys, "plan", "--old-len", "1G", "--cost-profile", "/nonexistent.toml")
    assert rc == 2 and "does not exist" in err and err.count("\n") == 1
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"name = \"caf\xe9\"\n")
    for opt in ("--cost-profile", "--arch", "--kernel"):
        rc, out, err = run(capsys, "plan", "--old-len", "1G", opt, str(bad))
        assert rc == 2 and "not UTF-8" in err and err.count("\n") == 1, opt


def test_cost_profile_with_a_cost_model(capsys, monkeypatch):
    calls = {}

    def resolve_cost_profile(name, *, arch=None, force=False):
        calls["arch"] = arch
        return types.SimpleNamespace(name=name, digest="abc")

    def predict(plan, profile, cpus=1, folio=None, written_before_bytes=0):
        calls["cpus"], calls["written"] = cpus, written_before_bytes
        return types.SimpleNamespace(predicted_ns=1234, cost_ns={"tlb_flush": 1000, "fixed": 234})

    from perfsim.planner import render
    monkeypatch.setattr(render, "resolve_cost_profile", resolve_cost_profile)
    monkeypatch.setattr(render, "predict", predict)
    doc = run_json(capsys, "--old-len", "1G", "--cpus", "3", "--cost-profile", "mine")
    assert doc["predicted_ns"] == 1234 and doc["cost_ns"]["tlb_flush"] == 1000
    assert doc["cost_profile"] == {"name": "mine", "digest": "abc"} and calls["cpus"] == 3
    assert calls["arch"] == "x86_64"
    rc, out, _ = run(capsys, "plan", "--old-len", "1G", "--cost-profile", "mine")
    assert "predicted   1.23 µs (cost profile mine)" in out


@pytest.mark.parametrize("name", ["x86_64-generic", "kvm-host"])
def test_real_cost_model(capsys, name):
    doc = run_json(capsys, *E_FLAGS["e2"], "--cost-profile", name)
    assert doc["predicted_ns"] > 0 and doc["cost_ns"]


# --------------------------------------------------------------------------- main()


def test_version_and_help(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("perfsim ")
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "plan" in out
    rc, out, _ = run(capsys, "plan", "--help")
    assert rc == 0
    for needle in ("--populate", "0x7f0000000000", "0x7f4000000000", "exit", "E2", "--file"):
        assert needle in out


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_mod, "run", interrupted)
    rc, out, err = run(capsys, "plan", "--old-len", "1G")
    assert rc == 130 and err.count("\n") == 1 and "Traceback" not in err


def test_unexpected_exceptions_exit_1_with_their_traceback(capsys, monkeypatch):
    def buggy(args):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(plan_mod, "run", buggy)
    rc, out, err = run(capsys, "plan", "--old-len", "1G")
    assert rc == 1 and out == ""
    assert "Traceback" in err and "ZeroDivisionError: bug" in err
    assert err.strip().splitlines()[-1].startswith("perfsim: internal error")
    assert "please report" in err


def test_every_subcommand_module_registers(capsys):
    parser = main_mod.build_parser()
    choices = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert sorted(choices) == sorted(main_mod.SUBCOMMANDS)


def test_python_dash_m_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ok = subprocess.run([sys.executable, "-m", "perfsim", "plan", "--file",
                         str(EXAMPLES / "e1.toml"), "--json"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["move"]["pud_moves"] == 1
    bad = subprocess.run([sys.executable, "-m", "perfsim", "plan", "--old-len", "-1G"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("perfsim: error: ") and bad.stderr.count("\n") == 1


# --------------------------------------------------------------------------- run, sweep, tune, report, workload

SWEEP_ARGS = ["sweep", "--workload", "trace_replay", "--grid", "kernel=6.6,6.18", "--pair",
              "kernel=6.18,6.6", "--replications", "2", "--executor", "serial"]


def test_sweep_quiet_hides_progress_but_prints_the_summary(capsys, tmp_path):
    rc, out, err = run(capsys, *SWEEP_ARGS, "--out", str(tmp_path), "-q")
    assert rc == 0 and err == ""
    assert "4 points: 0 already stored, 4 run (0 failed)" in out
    assert "paired kernel: 6.18 vs 6.6 on lat_mean_ns" in out


def test_sweep_json_summary(capsys, tmp_path):
    rc, out, err = run(capsys, *SWEEP_ARGS, "--out", str(tmp_path), "-q", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert (doc["planned"], doc["skipped"], doc["ran"], doc["failed"]) == (4, 0, 4, 0)
    assert doc["path"] == str(tmp_path / "trace_replay") and doc["executor"] == "serial"
    (pair,) = doc["paired"]
    assert pair["axis"] == "kernel" and pair["n"] == 2 and "ratio_lo" in pair
    rc, out, _ = run(capsys, *SWEEP_ARGS, "--out", str(tmp_path), "-q", "--json")
    assert json.loads(out)["skipped"] == 4  # rerun: everything stored already


def test_tune_json_summary(capsys, tmp_path):
    rc, out, err = run(capsys, "tune", "--workload", "trace_replay", "--knob",
                       "kernel.realign_pmd=true,false", "--replications", "2", "--executor",
                       "serial", "--quiet", "--json", "--out", str(tmp_path))
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["method"] == "grid" and doc["settings"] == 2 and doc["replications"] == 2
    assert [r["row"] for r in doc["best"]] == ["#1", "#2"]
    assert {r["kernel.realign_pmd"] for r in doc["best"]} == {True, False}
    assert doc["report"] == str(tmp_path / "tune-trace_replay" / "index.html")
    assert Path(doc["report"]).is_file() and doc["baseline"]["objective"] > 0


def test_tune_flags_override_the_tune_file():
    from perfsim.cli.tune import build_spec

    parser = main_mod.build_parser()
    f = str(ROOT / "studies" / "tune_flush_ceiling.toml")
    spec = build_spec(parser.parse_args(["tune", f]))
    assert spec.objective.direction == "minimize" and spec.workload == "ipi_storm"
    spec = build_spec(parser.parse_args(["tune", f, "--maximize", "--objective", "p99",
                                         "--workload", "gc_compaction"]))
    assert (spec.objective.metric, spec.objective.direction) == ("p99", "maximize")
    assert spec.workload == "gc_compaction"
    by_name = build_spec(parser.parse_args(["tune", "tune_flush_ceiling"]))
    assert by_name.digest == build_spec(parser.parse_args(["tune", f])).digest


def test_report_check_problems_exit_3(capsys, monkeypatch, tmp_path):
    import perfsim.report.browser as browser

    monkeypatch.setattr(browser, "check_report", lambda d: {"ok": False, "broken": ["x.png"]})
    rc, out, _ = run(capsys, "report", "--check", str(tmp_path))
    assert rc == 3 and json.loads(out)["broken"] == ["x.png"]
    monkeypatch.setattr(browser, "check_report", lambda d: {"ok": True})
    assert run(capsys, "report", "--check", str(tmp_path))[0] == 0


def test_run_writes_csv_records_when_asked(capsys, tmp_path):
    scen = ROOT / "workloads" / "scenarios" / "gc-compaction-reclaim.toml"
    rc, out, err = run(capsys, "run", str(scen), "--out", str(tmp_path / "o"), "--format", "csv")
    assert rc == 0, err
    assert (tmp_path / "o" / "calls.csv").is_file() and (tmp_path / "o" / "summary.json").is_file()
    assert "records (csv)" in out


def test_workload_run_out_writes_the_record_tables(capsys, tmp_path):
    rc, out, err = run(capsys, "workload", "run", "trace_replay", "--out", str(tmp_path / "o"))
    assert rc == 0, err
    assert json.loads(out)["workload"] == "trace_replay"
    assert (tmp_path / "o" / "calls.parquet").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temporary directory left


def test_workload_list_names_every_shipped_workload(capsys):
    from perfsim.shipped import names

    rc, out, _ = run(capsys, "workload", "list")
    assert rc == 0
    assert [line.split()[0] for line in out.splitlines()] == names("workloads")


def test_report_kernels_compares_any_two_profiles(capsys, tmp_path):
    from perfsim.cli.report import _with_kernels
    from perfsim.report import default_study

    s = _with_kernels(default_study(), "6.1,7.3")
    assert s.kernels == ["6.1", "7.3"] and "6.1 (baseline) vs 7.3" in s.description
    for bad, needle in (("6.1", "exactly two"), ("6.1,9.9", "unknown kernel profile '9.9'"),
                        ("6.18,6.18", "exactly two different")):
        rc, out, err = run(capsys, "report", "--kernels", bad, "--out", str(tmp_path))
        assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())
