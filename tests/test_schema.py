"""One input vocabulary (docs/inputs.md): every TOML kind is a StrictModel read by
``perfsim.schema.load_model``; sizes, addresses and durations are one type each, parsed the
same way in every kind; one concept has one key name."""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from perfsim.batch.sweep import SweepFile, load_sweep
from perfsim.cost.profile import CostParam, CostProfile, load_cost_profile
from perfsim.engine.scenario import (
    CallerCfg,
    RequestCfg,
    Scenario,
    UserCfg,
    VmaCfg,
    WalkerCfg,
    load_scenario,
)
from perfsim.errors import PerfsimError
from perfsim.profiles import ArchProfile, KernelProfile, load_arch, load_kernel
from perfsim.report.study import Contention, SizeRange, Study, TraceCall, load_study
from perfsim.request_file import PlanRequest, VmaTable, _normalise, load_request
from perfsim.schema import StrictModel, load_model
from perfsim.tune.spec import TuneSpec, load_tune
from perfsim.units import parse_duration, parse_size
from perfsim.workload.schema import (
    Call,
    Closed,
    Periodic,
    Process,
    SyntheticStream,
    VmaSpec,
    Walker,
    Workload,
    load_workload,
    resolve_paths,
)

ROOT = Path(__file__).resolve().parents[1]


def _study_prepare(path: Path):
    def prepare(data: dict) -> dict:
        tunes = data.get("tune")
        if isinstance(tunes, list):
            data = dict(data, tune=[dict(tomllib.loads((path.parent / t).read_text()),
                                         base_dir=str(path.parent)) if isinstance(t, str)
                                    else t for t in tunes])
        return data
    return prepare


def _kind(path: Path):
    """(model, what, prepare, public loader) of a shipped TOML file, or None."""
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("perfsim/data/arch/"):
        return ArchProfile, "arch", None, load_arch
    if rel.startswith("perfsim/data/kernels/"):
        return KernelProfile, "kernel profile", None, load_kernel
    if rel.startswith("perfsim/data/cost/"):
        return CostProfile, "cost profile", None, load_cost_profile
    if rel.startswith("workloads/scenarios/"):
        return Scenario, "scenario", None, load_scenario
    if rel.startswith("workloads/"):
        return Workload, "workload", lambda d: resolve_paths(d, path.parent), load_workload
    if rel.startswith("sweeps/"):
        return SweepFile, "sweep", None, lambda p: load_sweep(p).spec
    if rel.startswith("studies/tune_"):
        return TuneSpec, "tune", lambda d: dict(d, base_dir=str(path.parent.resolve())), load_tune
    if rel.startswith("studies/") or rel == "tests/golden/study.toml":
        return Study, "study", _study_prepare(path), load_study
    if rel.startswith(("examples/plan/", "tests/data/groundtruth/requests/")):
        return PlanRequest, "request", _normalise, load_request
    return None


NOT_AN_INPUT_KIND = {
    # perfsim.groundtruth's list of known mismatches: test data of the ground-truth harness.
    "tests/data/groundtruth/known_mismatches.toml",
}

def _tree_tomls() -> list[Path]:
    """The tree's own TOML files: in a git checkout those git tracks or would (not what it
    ignores: a ``pip install .`` leaves copies under build/), else every one below ROOT."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard", "--", "*.toml"], capture_output=True,
                             check=True, timeout=60).stdout.decode()
        found = [ROOT / n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        found = list(ROOT.rglob("*.toml"))
    return [p for p in found if p.is_file()]


SHIPPED = sorted(p for p in _tree_tomls()
                 if ".venv" not in p.parts and p.name != "pyproject.toml"
                 and not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def test_every_shipped_toml_file_is_of_a_known_kind():
    unknown = [p.relative_to(ROOT).as_posix() for p in SHIPPED
               if _kind(p) is None and p.relative_to(ROOT).as_posix() not in NOT_AN_INPUT_KIND]
    assert not unknown
    assert len(SHIPPED) >= 40


@pytest.mark.parametrize("path", [p for p in SHIPPED if _kind(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_file_loads_through_load_model_as_its_loader_does(path):
    model, what, prepare, loader = _kind(path)
    assert issubclass(model, StrictModel)
    m = load_model(path, model, what, prepare=prepare)
    assert isinstance(m, model)
    if model is Study:  # the study's loader reads tune files by their own loader
        assert loader(path).model_dump(exclude={"tune"}) == m.model_dump(exclude={"tune"})
    else:
        assert loader(path) == m


def _tables(doc, loc=()):
    """Every table (dict) location of a parsed TOML document."""
    if isinstance(doc, dict):
        yield loc
        for k, v in doc.items():
            yield from _tables(v, loc + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _tables(v, loc + (i,))


# Tables whose keys are names the user chooses (sweep axes, tune knobs and fixed settings,
# objective weights), not a model's fields.
FREE_FORM = {"grid", "set", "knobs", "weights"}


def _inject(doc, loc, key="bogus_key"):
    import copy

    out = copy.deepcopy(doc)
    t = out
    for part in loc:
        t = t[part]
    t[key] = 1
    return out


@pytest.mark.parametrize("path", [p for p in SHIPPED if _kind(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_an_unknown_key_anywhere_names_the_allowed_keys(path):
    model, what, prepare, _ = _kind(path)
    doc = tomllib.loads(path.read_text())
    checked = 0
    for loc in _tables(doc):
        if any(part in FREE_FORM for part in loc if isinstance(part, str)):
            continue
        with pytest.raises(PerfsimError) as exc:
            load_model(_inject(doc, loc), model, what, origin=str(path), prepare=prepare)
        msg = str(exc.value)
        assert msg.startswith(str(path)) and "\n" not in msg, msg
        assert "unknown key 'bogus_key'" in msg and "allowed keys: " in msg, (loc, msg)
        allowed = msg.split("allowed keys: ", 1)[1].split(";")[0]
        assert "bogus_key" not in allowed and allowed.strip(), msg
        checked += 1
    assert checked >= 1


# --------------------------------------------------------------------------- unit types
SIZE_FIELDS = {
    "workload vmas.size": lambda v: VmaSpec(name="a", start=0, size=v).size,
    "workload vmas.hugepage_size": lambda v: VmaSpec(name="a", start=0, size=4096,
                                                    hugepage_size=v).hugepage_size,
    "workload calls.old_len": lambda v: Call(old_addr=0, old_len=v).old_len,
    "workload calls.offset": lambda v: Call(vma="a", offset=v, old_len=4096).offset,
    "workload streams.size": lambda v: SyntheticStream(name="s", process="p",
                                                       size=v).size.value,
    "workload streams.folio_size": lambda v: SyntheticStream(name="s", process="p",
                                                             folio_size=v).folio_size,
    "scenario vmas.size": lambda v: VmaCfg(name="a", start=0, size=v).size,
    "scenario requests.old_len": lambda v: RequestCfg(old_addr=0, old_len=v).old_len,
    "scenario requests.new_len": lambda v: RequestCfg(old_addr=0, old_len=1, new_len=v).new_len,
    "study reference_size": lambda v: Study(reference_size=v).reference_size,
    "study contention.size": lambda v: Contention(size=v).size,
    "study calls.sizes.min": lambda v: SizeRange(min=v, max="1T").min,
}
ADDRESS_FIELDS = {
    "workload vmas.start": lambda v: VmaSpec(name="a", start=v, size=4096).start,
    "workload calls.old_addr": lambda v: Call(old_addr=v, old_len=4096).old_addr,
    "workload calls.new_addr": lambda v: Call(old_addr=0, old_len=4096, new_addr=v).new_addr,
    "scenario vmas.start": lambda v: VmaCfg(name="a", start=v, size=4096).start,
    "scenario requests.old_addr": lambda v: RequestCfg(old_addr=v, old_len=4096).old_addr,
    "scenario requests.new_addr": lambda v: RequestCfg(old_addr=0, old_len=4096,
                                                       new_addr=v).new_addr,
}
DURATION_FIELDS = {
    "workload arrival.interval_ns": lambda v: Periodic(interval_ns=v).interval_ns,
    "workload arrival.think_ns": lambda v: Closed(think_ns=v).think_ns.value,
    "workload processes.quantum_ns": lambda v: Process(name="p", quantum_ns=v).quantum_ns,
    "workload streams.start_ns": lambda v: SyntheticStream(name="s", process="p",
                                                           start_ns=v).start_ns,
    "workload walkers.hold_ns": lambda v: Walker(name="w", anon="a", cpus=[0], interval_ns=1,
                                                 hold_ns=v).hold_ns,
    "scenario callers.interval_ns": lambda v: CallerCfg(
        name="c", process="p", cpu=0, interval_ns=v,
        requests=[RequestCfg(old_addr=0, old_len=4096)]).interval_ns,
    "scenario walkers.hold_ns": lambda v: WalkerCfg(name="w", process="p", vma="v", cpu=0,
                                                    interval_ns=1, hold_ns=v).hold_ns,
    "scenario walkers.ptl_hold_ns": lambda v: WalkerCfg(name="w", process="p", vma="v", cpu=0,
                                                        interval_ns=1, hold_ns=1,
                                                        ptl_hold_ns=v).ptl_hold_ns,
    "scenario users.quantum_ns": lambda v: UserCfg(name="u", process="p", cpu=0,
                                                   quantum_ns=v).quantum_ns,
    "study contention.walker_interval_ns": lambda v: Contention(
        walker_interval_ns=v).walker_interval_ns,
    "cost profile params.*.ns": lambda v: CostParam(ns=v, source="test").ns,
}


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("text", ["1G+4K", "0x200000", "2MiB-4K", "64K", 8192])
def test_a_size_parses_the_same_in_every_kind(field, text):
    assert SIZE_FIELDS[field](text) == parse_size(text)


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("bad", [True, 1.5, "lots", "-4K", [True]])
def test_a_size_rejects_bools_floats_and_junk_in_every_kind(field, bad):
    with pytest.raises(ValidationError, match="size|cannot parse|negative"):
        SIZE_FIELDS[field](bad)


@pytest.mark.parametrize("field", ADDRESS_FIELDS)
@pytest.mark.parametrize("text", ["0x7f0000200000", "0x7f0000200000+4K", 45088768])
def test_an_address_parses_the_same_in_every_kind(field, text):
    assert ADDRESS_FIELDS[field](text) == parse_size(text)


@pytest.mark.parametrize("field", ADDRESS_FIELDS)
@pytest.mark.parametrize("bad", [False, 4096.0, "heap"])
def test_an_address_rejects_bools_floats_and_names_in_every_kind(field, bad):
    with pytest.raises(ValidationError, match="address|cannot parse"):
        ADDRESS_FIELDS[field](bad)


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("text", ["1.5us", "20ms", "300ns", "2s", 700])
def test_a_duration_parses_the_same_in_every_kind(field, text):
    assert DURATION_FIELDS[field](text) == parse_duration(text)


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("bad", [True, 1.5, "soon", "20 minutes"])
def test_a_duration_rejects_bools_floats_and_junk_in_every_kind(field, bad):
    with pytest.raises(ValidationError, match="duration|cannot parse"):
        DURATION_FIELDS[field](bad)


def test_a_bad_duration_in_a_file_is_one_line_naming_file_and_field(tmp_path):
    text = (ROOT / "workloads/scenarios/gc-compaction-reclaim.toml").read_text()
    p = tmp_path / "s.toml"
    p.write_text(text.replace('interval_ns = "20us"', 'interval_ns = "20 parsecs"'))
    with pytest.raises(PerfsimError) as exc:
        load_scenario(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: walkers[0].interval_ns: ") and "\n" not in msg
    assert "cannot parse '20 parsecs'" in msg


# --------------------------------------------------------------------------- names
ROOTS = (ArchProfile, KernelProfile, CostProfile, Workload, Scenario, SweepFile, Study,
         TuneSpec, PlanRequest)

# Kept as the user wrote them on purpose: a plan request's sizes and addresses are parsed with
# perfsim.units where the target (and the A/B bases of "A+2M+4K") is known, exactly like
# `perfsim plan`'s options, and its top-level keys are the options' names (--old-len, --old-addr);
# `perfsim report --trace-call CLASS:SIZE` checks its size against the target itself.
AS_WRITTEN = {PlanRequest, VmaTable, TraceCall}


def _models(ann) -> list:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list = []
    for a in typing.get_args(ann):
        out += _models(a)
    return out


def _all_models() -> list[type[BaseModel]]:
    seen: dict = {}
    stack = list(ROOTS)
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen[m] = None
        for f in m.model_fields.values():
            stack += _models(f.annotation)
    return list(seen)


def _validators(ann, metadata=()) -> set[str]:
    names = {getattr(getattr(x, "func", None), "__name__", "") for x in metadata}
    for a in typing.get_args(ann):
        if hasattr(a, "func"):
            names.add(a.func.__name__)
        names |= _validators(a)
    if hasattr(ann, "__metadata__"):
        names |= {getattr(getattr(x, "func", None), "__name__", "") for x in ann.__metadata__}
    return names


_UNIT = {"to_size_bytes": "size", "_sizes": "size", "to_address": "address",
         "to_duration_ns": "duration", "_durations": "duration"}


def _unit(field) -> str | None:
    units = {_UNIT[v] for v in _validators(field.annotation, field.metadata) if v in _UNIT}
    assert len(units) <= 1, units
    return units.pop() if units else None


def test_every_input_model_is_strict():
    for m in _all_models():
        assert issubclass(m, StrictModel), m
        assert m.model_config.get("extra") == "forbid", m


def test_no_model_spells_a_length_other_than_size_or_old_len_new_len():
    for m in _all_models():
        for name in m.model_fields:
            assert name not in ("length", "new_length", "nbytes"), (m, name)
            assert name not in ("len", "src", "dst"), (m, name)  # the call: old_len, old_addr


def test_no_duration_key_without_its_ns_unit():
    unitless = {"interval", "hold", "quantum", "duration", "think", "ptl_hold", "delay",
                "period", "timeout", "gap"}
    for m in _all_models():
        for name in m.model_fields:
            assert name not in unitless, (m, name)


def test_every_ns_key_is_a_duration():
    for m in _all_models():
        for name, f in m.model_fields.items():
            if name == "ns" or name.endswith("_ns"):
                if _models(f.annotation) == [CostParam]:
                    continue  # a cost parameter's table; its ``ns`` is checked itself
                assert _unit(f) == "duration", (m, name)


def test_every_size_and_address_key_uses_the_shared_types():
    sizes = {"size", "old_len", "new_len", "offset", "reference_size", "hugepage_size",
             "folio_size", "shift"}
    addresses = {"start", "old_addr", "new_addr", "user_va_top"}
    for m in _all_models():
        if m in AS_WRITTEN:
            continue
        for name, f in m.model_fields.items():
            if name in sizes:
                assert _unit(f) == "size", (m, name)
            if name in addresses:
                assert _unit(f) == "address", (m, name)


def test_one_key_name_has_one_unit_in_every_model():
    units: dict[str, set] = {}
    for m in _all_models():
        if m in AS_WRITTEN:
            continue
        for name, f in m.model_fields.items():
            units.setdefault(name, set()).add(_unit(f))
    mixed = {n: u for n, u in units.items() if len(u) > 1}
    # min/max are sizes in a size range and plain numbers in knob ranges and constraints.
    assert set(mixed) <= {"min", "max"}, mixed


def test_scenario_and_workload_share_the_vma_and_request_vocabulary():
    from perfsim.workload.schema import VmaBase

    assert issubclass(VmaCfg, VmaBase) and issubclass(VmaSpec, VmaBase)
    assert {"old_addr", "old_len", "new_len", "new_addr", "fixed", "dontunmap"} <= (
        set(RequestCfg.model_fields) & set(Call.model_fields))
    for a, b in ((Scenario, Workload), (WalkerCfg, Walker), (UserCfg, Process)):
        shared = set(a.model_fields) & set(b.model_fields)
        for name in shared:
            assert _unit(a.model_fields[name]) == _unit(b.model_fields[name]), (a, b, name)
    assert {"processes", "walkers", "duration_ns", "cpus", "seed", "kernel", "arch",
            "cost_profile"} <= set(Scenario.model_fields) & set(Workload.model_fields)


@pytest.mark.parametrize("rel, key", [
    ("workloads/gc_compaction.toml", "seed"),
    ("workloads/scenarios/gc-compaction-reclaim.toml", "seed"),
    ("sweeps/kernels_ab.toml", "replications"),
    ("studies/quick.toml", "seed"),
    ("studies/tune_flush_ceiling.toml", "replications"),
    ("perfsim/data/arch/x86_64.toml", "levels"),
])
def test_a_wrong_type_says_what_was_given_and_what_is_allowed(rel, key):
    path = ROOT / rel
    model, what, prepare, _ = _kind(path)
    doc = dict(tomllib.loads(path.read_text()), **{key: "many"})
    with pytest.raises(PerfsimError) as exc:
        load_model(doc, model, what, origin=rel, prepare=prepare)
    assert f"{rel}: {key}: " in str(exc.value)
    assert "got 'many'; allowed: an integer" in str(exc.value)


def test_a_union_tag_is_not_part_of_the_field_name():
    path = ROOT / "workloads/ipi_storm.toml"
    doc = tomllib.loads(path.read_text())
    doc["streams"][0]["arrival"] = {"kind": "periodic", "interval_ns": "often"}
    with pytest.raises(PerfsimError) as exc:
        load_model(doc, Workload, "workload", origin="w.toml")
    assert "w.toml: streams[0].arrival.interval_ns: cannot parse 'often'" in str(exc.value)
