"""SimPy engine (layer 5): CPUs, mms, kernel-semantics locks, callers, walkers, user threads.

Public API: :func:`simulate` (spec, scenario or TOML path → :class:`SimResult` of DataFrames),
the spec dataclasses, and :func:`load_scenario`/:func:`build_spec` for TOML scenarios.
"""

from perfsim.engine.coalesce import segments
from perfsim.engine.locks import RwSem, SpinLock
from perfsim.engine.scenario import Scenario, build_spec, load_scenario, parse_duration
from perfsim.engine.simulate import SimResult, run, simulate
from perfsim.engine.spec import CallerSpec, ColdCall, MmSpec, SimSpec, UserSpec, WalkerSpec

__all__ = [
    "CallerSpec", "ColdCall", "MmSpec", "RwSem", "Scenario", "SimResult", "SimSpec", "SpinLock",
    "UserSpec", "WalkerSpec", "build_spec", "load_scenario", "parse_duration", "run", "segments", "simulate",
]
