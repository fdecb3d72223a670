"""parse_cost_profile is memoised on (text, origin): the same frozen profile, validated once;
bad texts raise the same one-line error on every call; nothing a run does changes a profile."""

import importlib

import pytest

from perfsim.cost import CostProfile, load_cost_profile, parse_cost_profile
from perfsim.cost.profile import default_cost_profile
from perfsim.errors import PerfsimError
from perfsim.schema import load_model
from perfsim.workload import run_workload

prof_mod = importlib.import_module("perfsim.cost.profile")


def _text(name: str) -> str:
    return (prof_mod._cost_dir() / f"{name}.toml").read_text()


def _fresh(text: str, origin: str) -> CostProfile:
    """The definition: the text validated now, with no memo."""
    return load_model(text, CostProfile, "cost profile", origin=origin,
                      describe=prof_mod._describe)


@pytest.mark.parametrize("name", prof_mod.cost_profile_names())
def test_the_same_text_gives_the_same_profile_validated_once(name):
    text = _text(name)
    first = parse_cost_profile(text, f"test {name}")
    again = parse_cost_profile(text, f"test {name}")
    assert again is first
    fresh = _fresh(text, f"test {name}")
    assert first == fresh
    assert first.model_dump() == fresh.model_dump()
    assert first.digest == fresh.digest and first.medians_ns == fresh.medians_ns


def test_a_text_seen_before_is_not_validated_again(monkeypatch):
    calls = []
    real = prof_mod.load_model

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(prof_mod, "load_model", counting)
    text = _text("arm64-generic") + "\n# seen once\n"
    first = parse_cost_profile(text, "seen")
    assert parse_cost_profile(text, "seen") is first
    assert len(calls) == 1
    parse_cost_profile(text, "another origin")
    assert len(calls) == 2


def test_a_builtin_name_loads_one_instance_whoever_asks():
    name = default_cost_profile("x86_64")
    assert load_cost_profile(name) is load_cost_profile(name)


@pytest.mark.parametrize("bad, needle", [
    ('name = "x"\narch = "x86_64"\n', "params"),
    ('name = "x"\narch = "no-such-arch"\narchs = ["no-such-arch"]\n', "no-such-arch"),
    ("name = \n", "not valid TOML"),
])
def test_a_bad_text_raises_the_same_error_on_every_call(bad, needle):
    messages = []
    for _ in range(3):
        with pytest.raises(PerfsimError) as exc:
            parse_cost_profile(bad, "bad.toml")
        messages.append(str(exc.value))
    assert len(set(messages)) == 1
    assert messages[0].startswith("bad.toml") and needle in messages[0]
    assert "\n" not in messages[0]


def test_the_origin_is_part_of_the_key_so_errors_name_the_file_asked_about():
    text = _text("x86_64-generic").replace("syscall_ns", "sycall_ns", 1)
    for origin in ("a.toml", "b.toml", "a.toml"):
        with pytest.raises(PerfsimError, match=f"^{origin}"):
            parse_cost_profile(text, origin)


def test_the_memo_is_bounded():
    base = _text("x86_64-generic")
    for i in range(prof_mod._parse_cost_profile.cache_info().maxsize + 10):
        parse_cost_profile(base + f"\n# variant {i}\n", "variant")
    info = prof_mod._parse_cost_profile.cache_info()
    assert info.currsize <= info.maxsize


def test_a_derived_profile_leaves_the_memoised_one_as_parsed():
    text = _text("x86_64-generic")
    shared = parse_cost_profile(text, "derive")
    before = shared.model_dump()
    changed = shared.with_values(syscall_ns=shared.value("syscall_ns") + 7)
    shared.fixed()
    shared.model_copy(update={"name": "other"})
    assert changed.value("syscall_ns") == before["params"]["syscall_ns"]["ns"] + 7
    assert parse_cost_profile(text, "derive") is shared
    assert shared.model_dump() == before


@pytest.mark.parametrize("name", ["exec_stack", "ipi_storm"])
def test_a_run_leaves_its_memoised_profile_as_parsed(name):
    res, _, _ = run_workload(name, seed=3)
    prof_name = res.config["cost_profile"]
    prof = load_cost_profile(prof_name)
    fresh = _fresh(_text(prof_name), f"built-in cost profile {prof_name!r}")
    assert prof.digest == fresh.digest == res.config["cost_profile_digest"]
    assert prof.model_dump() == fresh.model_dump()
    again, _, _ = run_workload(name, seed=3)
    assert again.frame("calls").equals(res.frame("calls"))
