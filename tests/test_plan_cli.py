"""``perfsim plan``: addresses mean what they say, the address space as given, what the
answer says (vmas_after, moved, the realign rule, need_rmap_locks), and bad input."""

from __future__ import annotations

import json

import pytest

from perfsim.cli import plan as plan_mod
from perfsim.cli.main import main
from perfsim.planner.request import DST_BASE, SRC_BASE

K, M, G = 1 << 10, 1 << 20, 1 << 30


def run(capsys, *argv):
    rc = main(["plan", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv):
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def bad(capsys, *argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_plain_number_is_an_absolute_address(capsys):
    """Addresses copied from strace mean themselves: the same src and dst overlap, EINVAL."""
    doc = run_json(capsys, "--old-len", "4K", "--old-addr", "0x2801000", "--new-addr", "0x2801000")
    assert doc["errno"] == "EINVAL" and doc["request"]["old_addr"] == 0x2801000


def test_offsets_name_their_base(capsys):
    doc = run_json(capsys, "--old-len", "1G", "--old-addr", "A+2M+4K", "--new-addr", "B+6M+8K")
    assert doc["request"]["old_addr"] == SRC_BASE + 2 * M + 4 * K
    assert doc["request"]["new_addr"] == DST_BASE + 6 * M + 8 * K


def test_default_bases_share_one_pgd_slot():
    assert SRC_BASE >> 39 == DST_BASE >> 39


def test_help_documents_the_address_syntax(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    assert "A+2M+4K" in out and "B+6M+8K" in out and "A plain number is an address" in out


def test_json_has_vmas_after_and_moved(capsys):
    doc = run_json(capsys, "--old-len", "4M", "--old-addr", "A+2M", "--new-addr", "B+2M", "--guard-below-src")
    after = doc["vmas_after"]
    assert after == sorted(after, key=lambda v: v["start"])
    assert all(isinstance(v["start"], int) and isinstance(v["end"], int) for v in after)
    assert {"start": DST_BASE + 2 * M, "end": DST_BASE + 6 * M, "backing": "anon",
            "prot": "rw"} in after
    assert doc["moved"] == [{
        "src_start": SRC_BASE + 2 * M, "src_end": SRC_BASE + 6 * M, "dst_start": DST_BASE + 2 * M,
        "dst_end": DST_BASE + 6 * M, "progress_bytes": 4 * M, "realigned": False,
        "realign": doc["moved"][0]["realign"], "need_rmap_locks": False, "reverted": False}]
    assert doc["moved"][0]["realign"].startswith("(b)")


@pytest.mark.parametrize("argv, rule", [
    (["--old-addr", "A+2M+4K", "--new-addr", "B+6M+4K"], "rule (a)–(e) hold"),
    (["--old-addr", "A+2M+4K", "--new-addr", "B+6M+4K", "--guard-below-src"], "rule (d) refused"),
    (["--old-addr", "A+2M+4K", "--new-addr", "B+6M+4K", "--guard-below-dst"], "rule (e) refused"),
    (["--old-addr", "A+2M+4K", "--new-addr", "B+6M+8K"], "rule (c) refused"),
    (["--old-addr", "A", "--new-addr", "B"], "rule (b) not needed"),
])
def test_human_output_says_which_realign_rule_decided(capsys, argv, rule):
    rc, out, _ = run(capsys, "--old-len", "64M", *argv)
    assert rc == 0 and rule in out


def test_human_output_labels_need_rmap_locks(capsys):
    rc, out, _ = run(capsys, "--old-len", "64M")
    line = next(ln for ln in out.splitlines() if ln.startswith("need_rmap_locks"))
    assert "false" in line and "rmap locks not needed" not in out


def test_vma_option_is_the_whole_address_space(capsys):
    doc = run_json(capsys, "--old-len", "44K", "--old-addr", "A", "--new-addr", "B",
                   "--vma", "A:4K:file=buf", "--vma", "A+8K:4K:file=buf,pgoff=0x7f0000002")
    assert doc["errno"] is None and len(doc["moved"]) == 2
    assert [v["start"] - DST_BASE for v in doc["vmas_after"]] == [0, 8 * K]


def test_maymove_false_fixed_false_grows_in_place(capsys):
    doc = run_json(capsys, "--old-len", "4M", "--new-len", "8M", "--no-maymove", "--no-fixed")
    assert doc["errno"] is None and doc["result_addr"] == SRC_BASE
    assert doc["vmas_after"] == [{"start": SRC_BASE, "end": SRC_BASE + 8 * M,
                                  "backing": "anon", "prot": "rw"}]
    assert doc["request"]["flags"] == []


def test_folio_size_option(capsys):
    doc = run_json(capsys, "--old-len", "2M", "--new-addr", "B+4K", "--folio-size", "64K",
                   "--populate", "every:32")
    assert doc["errno"] is None and doc["move"]["ptes_moved"] == 16 * 16


def test_cpus_is_bounded_by_nr_cpus(capsys):
    err = bad(capsys, "--old-len", "1G", "--cpus", "100000")
    assert "--cpus" in err and "8192" in err and "NR_CPUS" in err


def test_a_length_beyond_the_address_space_names_the_length(capsys):
    err = bad(capsys, "--old-len", "99999999T")
    assert err.startswith("perfsim: error: --old-len: ") and "default" not in err


def test_guards_are_untouched_by_default(capsys):
    doc = run_json(capsys, "--old-len", "4M", "--old-addr", "A+2M+4K", "--guard-below-src")
    assert doc["errno"] is None and not doc["realigned"]
    from perfsim.planner.request import labeller, resolve
    values, origin = plan_mod.merge_settings(main_parse("--old-len", "4M", "--old-addr", "A+2M+4K",
                                                        "--guard-below-src"))
    res = resolve(values, origin, labeller(origin))
    assert res.space.pt.present_ptes(SRC_BASE + 2 * M, SRC_BASE + 2 * M + 4 * K) == 0


def main_parse(*argv):
    from perfsim.cli.main import build_parser
    return build_parser().parse_args(["plan", *argv])


@pytest.mark.parametrize("argv, needle", [
    (["--old-len", "1G", "--old-addr", "C+2M"], "--old-addr: cannot parse 'C+2M'"),
    (["--old-len", "1G", "--vma", "A"], "--vma #1: expected START:SIZE"),
    (["--old-len", "1G", "--vma", "A:4K:colour=red"], "unknown key 'colour'"),
    (["--old-len", "1G", "--vma", "A:4K:backing=ram"], "key 'backing': got 'ram'; allowed: one of"),
    (["--old-len", "1G", "--vma", "A+1K:4K"], "multiples of the page size"),
    (["--old-len", "1G", "--vma", "A:1G", "--backing", "shmem"], "--backing: not with [[vma]]"),
    (["--old-len", "1G", "--folio-size", "48K"], "--folio-size: 48K is not an mTHP folio size"),
    (["--old-len", "1G", "--vma", "A:1G", "--vma", "A+4K:4K"], "VMAs overlap"),
])
def test_bad_plan_input_is_one_line(capsys, argv, needle):
    assert needle in bad(capsys, *argv)


def test_cost_profile_for_another_arch_is_refused_unless_forced(capsys):
    argv = ["plan", "--arch", "arm64-4k", "--old-len", "1M", "--old-addr", "A+2M", "--new-addr", "B+6M",
            "--cost-profile", "x86_64-generic"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is for x86_64" in err and "arm64-generic" in err and "--force-cost-profile" in err
    assert main(argv + ["--force-cost-profile", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cost_profile"]["name"] == "x86_64-generic" and doc["predicted_ns"] > 0


def test_large_folios_are_priced_on_arm64(capsys):
    # 6.18 on arm64 batches the PTEs of a contpte-mapped 64 KiB folio (one folio lookup per
    # block instead of one per PTE): a PMD-aligned 1 MiB move of 64 KiB folios is cheaper.
    base = ["plan", "--arch", "arm64-4k", "--old-len", "1M", "--old-addr", "A+2M", "--new-addr", "B+6M+64K",
            "--cost-profile", "arm64-generic", "--json"]
    assert main(base) == 0
    small = json.loads(capsys.readouterr().out)["predicted_ns"]
    assert main(base + ["--folio-size", "64K"]) == 0
    large = json.loads(capsys.readouterr().out)["predicted_ns"]
    assert large < small


def test_platform_option_and_request_key(capsys, tmp_path):
    doc = run_json(capsys, "--kernel", "6.12", "--old-len", "1G", "--old-addr", "A+2M+4K",
                   "--new-addr", "B+6M+8K", "--platform", "bare-metal")
    assert doc["target"]["platform"] == "bare-metal"
    f = tmp_path / "r.toml"
    f.write_text('old_len = "2M"\nold_addr = "A+2M"\nnew_addr = "B+6M"\nplatform = "kvm-guest"\n')
    assert run_json(capsys, "--file", str(f))["target"]["platform"] == "kvm-guest"
    f.write_text('old_len = "2M"\nold_addr = "A+2M"\nnew_addr = "B+6M"\nplatform = "vm"\n')
    err = bad(capsys, "--file", str(f))
    assert "platform" in err and "bare-metal" in err


def test_a_kernel_without_move_pmd_plans_30m_from_a_file(capsys, tmp_path):
    # issue 14: this was an AssertionError in the fast planner (28M worked, 30M did not)
    from pathlib import Path

    import perfsim

    text = (Path(perfsim.__file__).parent / "data/kernels/6.18.toml").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(("name", "supports_move_pmd"))]
    k = tmp_path / "nopmd.toml"
    k.write_text('name = "6.18-nopmd"\n' + "\n".join(lines) + "\nsupports_move_pmd = false\n")
    for length in ("28M", "30M"):
        doc = run_json(capsys, "--old-len", length, "--old-addr", "A+2M", "--new-addr", "B+6M", "--kernel", str(k))
        assert doc["move"]["pmd_moves"] == 0 and doc["errno"] is None


def test_written_before_charges_a_cold_cache_profile_once(capsys):
    """``--written-before SIZE``: what the program wrote just before the call; a profile with
    a ``[cold_cache]`` table (kvm-epyc) charges ``ns * min(1, bytes / saturation)`` once, in
    the ``fixed`` category; a profile without one (x86_64-generic) charges nothing."""
    from perfsim.cost import load_cost_profile

    call = ("--old-len", "2M", "--old-addr", "A+2M", "--new-addr", "B+6M")
    cc = load_cost_profile("kvm-epyc").cold_cache
    for written in (cc.saturation_bytes // 2, 4 * cc.saturation_bytes):
        warm = run_json(capsys, *call, "--cost-profile", "kvm-epyc")
        cold = run_json(capsys, *call, "--cost-profile", "kvm-epyc", "--written-before",
                        str(written))
        extra = round(cc.ns * min(1.0, written / cc.saturation_bytes))
        assert cold["predicted_ns"] - warm["predicted_ns"] == extra > 0
        assert cold["cost_ns"]["fixed"] - warm["cost_ns"]["fixed"] == extra
    g = [run_json(capsys, *call, "--cost-profile", "x86_64-generic", *w)["predicted_ns"]
         for w in ((), ("--written-before", "1G"))]
    assert g[0] == g[1]


def test_written_before_must_be_a_size(capsys):
    err = bad(capsys, "--old-len", "4K", "--cost-profile", "kvm-epyc", "--written-before", "lots")
    assert "--written-before" in err


def test_a_bad_written_before_in_a_request_file_names_the_file_key(capsys, tmp_path):
    f = tmp_path / "req.toml"
    f.write_text('old_len = "4K"\ncost_profile = "kvm-epyc"\nwritten_before = "lots"\n')
    err = bad(capsys, "--file", str(f))
    assert f"{f}: written_before" in err
