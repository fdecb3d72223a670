"""Cost profiles declare the archs they are for (issue 12, item 1)."""

from __future__ import annotations

import pytest

from perfsim.cost import (
    cost_profile_names,
    default_cost_profile,
    load_cost_profile,
    parse_cost_profile,
    resolve_cost_profile,
)
from perfsim.errors import PerfsimError
from perfsim.profiles import arch_names


def _generic_text() -> str:
    from importlib import resources

    return (resources.files("perfsim") / "data" / "cost" / "x86_64-generic.toml").read_text()


def test_every_builtin_profile_declares_known_archs():
    for name in cost_profile_names():
        p = load_cost_profile(name)
        assert p.archs and set(p.archs) <= set(arch_names()), name


def test_an_unknown_arch_in_archs_is_named_with_the_valid_ones():
    text = _generic_text().replace('archs = ["x86_64", "x86_64-la57"]', 'archs = ["vax"]')
    with pytest.raises(PerfsimError, match=r"archs.*unknown arch 'vax'; valid: .*arm64-4k"):
        parse_cost_profile(text, "t.toml")


def test_a_profile_without_archs_is_for_every_arch_of_its_family():
    text = _generic_text().replace('archs = ["x86_64", "x86_64-la57"]\n', "")
    p = parse_cost_profile(text.replace('arch = "x86_64"', 'arch = "arm64"'), "t.toml")
    assert p.archs == ("arm64-16k", "arm64-4k", "arm64-64k")


def test_using_a_profile_for_another_arch_is_refused_in_one_line():
    with pytest.raises(PerfsimError) as e:
        resolve_cost_profile("x86_64-generic", arch="arm64-4k")
    msg = str(e.value)
    assert "\n" not in msg and "is for x86_64" in msg and "arm64-4k" in msg
    assert "--force-cost-profile" in msg


def test_forcing_a_profile_onto_another_arch_is_allowed():
    p = resolve_cost_profile("x86_64-generic", arch="arm64-4k", force=True)
    assert p.name == "x86_64-generic"


def test_a_profile_for_the_arch_resolves_without_force():
    assert resolve_cost_profile("x86_64-generic", arch="x86_64-la57").name == "x86_64-generic"
    assert resolve_cost_profile("kvm-host", arch="x86_64").name == "kvm-host"
    with pytest.raises(PerfsimError, match="is for x86_64, not x86_64-la57"):
        resolve_cost_profile("kvm-host", arch="x86_64-la57")


def test_default_cost_profile_follows_the_arch():
    assert default_cost_profile("x86_64") == "x86_64-generic"
    assert resolve_cost_profile(None, arch="x86_64").name == "x86_64-generic"


def test_an_arch_no_profile_is_for_has_no_default():
    with pytest.raises(PerfsimError, match="no built-in cost profile is for arch 'riscv-sv39'"):
        default_cost_profile("riscv-sv39")


def test_a_missing_path_says_the_file_does_not_exist(tmp_path):
    with pytest.raises(PerfsimError, match=r"cost profile file '/nonexistent\.toml' does not "
                                           r"exist"):
        load_cost_profile("/nonexistent.toml")
    with pytest.raises(PerfsimError, match="does not exist"):
        load_cost_profile(str(tmp_path / "sub" / "p.toml"))


def test_a_directory_or_non_utf8_profile_is_one_line(tmp_path):
    with pytest.raises(PerfsimError, match="is a directory"):
        load_cost_profile(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(PerfsimError, match=r"bad\.toml' is not UTF-8"):
        load_cost_profile(str(bad))


def test_an_unknown_plain_name_still_lists_the_valid_names():
    with pytest.raises(PerfsimError, match="unknown cost profile 'nope'; valid names"):
        load_cost_profile("nope")


def test_the_default_cost_profile_for_every_arm64_arch_is_arm64_generic():
    for arch in ("arm64-4k", "arm64-16k", "arm64-64k"):
        assert default_cost_profile(arch) == "arm64-generic"
        assert resolve_cost_profile(None, arch=arch).name == "arm64-generic"


def test_the_arm64_profile_is_refused_for_x86_unless_forced():
    with pytest.raises(PerfsimError, match="'arm64-generic' is for arm64-4k.*not x86_64; the "
                                           "default for x86_64 is x86_64-generic"):
        resolve_cost_profile("arm64-generic", arch="x86_64")
    assert resolve_cost_profile("arm64-generic", arch="x86_64", force=True).name == \
        "arm64-generic"


def test_arm64_profile_invalidates_by_broadcast_not_ipi():
    assert load_cost_profile("arm64-generic").ipi_shootdown is False


def test_a_workload_or_scenario_without_a_cost_profile_uses_its_archs_default(tmp_path):
    from perfsim.engine.scenario import load_scenario
    from perfsim.shipped import data_dir
    from perfsim.workload import load_workload

    base = (data_dir("workloads") / "exec_stack.toml").read_text()
    lines = [ln for ln in base.splitlines() if not ln.startswith(("arch", "cost_profile"))]
    for arch, want in (("x86_64", "x86_64-generic"), ("arm64-4k", "arm64-generic")):
        f = tmp_path / f"w-{arch}.toml"
        f.write_text(f'arch = "{arch}"\n' + "\n".join(lines) + "\n")
        assert load_workload(f).cost_profile == want
    f = tmp_path / "w-riscv.toml"
    f.write_text('arch = "riscv-sv39"\n' + "\n".join(lines) + "\n")
    with pytest.raises(PerfsimError, match="no built-in cost profile is for arch 'riscv-sv39'"):
        load_workload(f)
    sc = (data_dir("workloads") / "scenarios" / "gc-compaction-reclaim.toml").read_text()
    sc_lines = [ln for ln in sc.splitlines() if not ln.startswith(("arch", "cost_profile"))]
    f = tmp_path / "s.toml"
    f.write_text('arch = "arm64-4k"\n' + "\n".join(sc_lines) + "\n")
    assert load_scenario(f).cost_profile == "arm64-generic"


def test_a_trace_export_without_a_cost_profile_uses_the_archs_default(tmp_path):
    from perfsim.report.study import TraceCall
    from perfsim.report.trace import export_call

    call = TraceCall.model_validate({"class": "unaligned", "size": "4M", "kernel": "6.18"})
    assert export_call(call, tmp_path / "a.json", arch="arm64-4k")["cost_profile"] == "arm64-generic"
    assert export_call(call, tmp_path / "x.json", arch="x86_64")["cost_profile"] == "x86_64-generic"
