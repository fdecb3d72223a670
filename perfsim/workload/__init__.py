"""Workloads (layer 6): validated TOML specs of who calls mremap(), with what, when, and who
else contends; compiled, seeded, into the engine's input.

>>> from perfsim.workload import load_workload, workload_names
>>> "allocator_realloc" in workload_names()
True
"""

from perfsim.workload.generate import Compiled, compile_workload, layout_call, synthetic_requests
from perfsim.workload.run import (
    WORKLOAD_DIR,
    resolve_workload,
    run_workload,
    summarize,
    workload_names,
)
from perfsim.workload.schema import Workload, load_workload, parse_workload
from perfsim.workload.trace import convert_strace, parse_trace_csv, read_trace_csv

__all__ = [
    "Compiled", "WORKLOAD_DIR", "Workload", "compile_workload", "convert_strace", "layout_call",
    "load_workload", "parse_trace_csv", "parse_workload", "read_trace_csv", "resolve_workload",
    "run_workload", "summarize", "synthetic_requests", "workload_names",
]
