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

__all__ = [
    "PerfsimError", "Target", "load_arch", "load_kernel", "resolve_target", "__version__",
    "plan_mremap", "MoveRequest", "simulate", "predict", "load_cost_profile",
]

_LAZY = {
    "Target": ("perfsim.profiles", "Target"),
    "load_arch": ("perfsim.profiles", "load_arch"),
    "load_kernel": ("perfsim.profiles", "load_kernel"),
    "resolve_target": ("perfsim.profiles", "resolve_target"),
    "plan_mremap": ("perfsim.planner", "plan_mremap"),
    "MoveRequest": ("perfsim.planner", "MoveRequest"),
    "simulate": ("perfsim.engine", "simulate"),
    "predict": ("perfsim.cost", "predict"),
    "load_cost_profile": ("perfsim.cost", "load_cost_profile"),
}


def __getattr__(name: str):
    """Import the layers behind these names only when one is used: the profiles (pydantic,
    about 0.1 s), the planner, the engine (SimPy), the cost model. ``python -m perfsim``
    imports this package first, so the command line starts with none of them loaded and
    each command imports what it needs (``perfsim tune`` forks its figure process before
    it imports the simulator)."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'perfsim' has no attribute {name!r}")
