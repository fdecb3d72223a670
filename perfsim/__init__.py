"""perfsim: a discrete-event performance simulator of Linux mremap()'s page-table move path.

Layers: geometry and kernel profiles (:mod:`perfsim.profiles`), address space and page-table
state (:mod:`perfsim.mm`), the kernel-faithful planner (:mod:`perfsim.planner`), the cost
model (:mod:`perfsim.cost`), the SimPy engine (:mod:`perfsim.engine`), workloads and batch
runs (:mod:`perfsim.workload`, :mod:`perfsim.batch`), calibration against the host kernel
(:mod:`perfsim.host`, :mod:`perfsim.calibrate`), reports and tuning (:mod:`perfsim.report`,
:mod:`perfsim.tune`), and the command line (:mod:`perfsim.cli`).
"""

__version__ = "0.1.0"

from perfsim.errors import PerfsimError  # noqa: E402
from perfsim.profiles import Target, load_arch, load_kernel, resolve_target  # noqa: E402

__all__ = [
    "PerfsimError", "Target", "load_arch", "load_kernel", "resolve_target", "__version__",
    "plan_mremap", "MoveRequest", "simulate", "predict", "load_cost_profile",
]

_LAZY = {
    "plan_mremap": ("perfsim.planner", "plan_mremap"),
    "MoveRequest": ("perfsim.planner", "MoveRequest"),
    "simulate": ("perfsim.engine", "simulate"),
    "predict": ("perfsim.cost", "predict"),
    "load_cost_profile": ("perfsim.cost", "load_cost_profile"),
}


def __getattr__(name: str):
    """Import the heavier layers (SimPy, pandas) only when they are used."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'perfsim' has no attribute {name!r}")
