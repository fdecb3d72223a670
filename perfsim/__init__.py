"""perfsim: a discrete-event performance simulator of Linux mremap()'s page-table move path.

Layers (see ``docs/architecture.md``): geometry and kernel profiles (:mod:`perfsim.profiles`),
address space and page-table state (:mod:`perfsim.mm`), the kernel-faithful planner
(:mod:`perfsim.planner`), and the command line (:mod:`perfsim.cli`).
"""

__version__ = "0.1.0"

from perfsim.errors import PerfsimError  # noqa: E402
from perfsim.profiles import Target, load_arch, load_kernel, resolve_target  # noqa: E402

__all__ = ["PerfsimError", "Target", "load_arch", "load_kernel", "resolve_target", "__version__"]
