"""Ground truth for the kernel profiles: real kernels' TLB-flush counts for mremap() layouts.

* :mod:`perfsim.groundtruth.probe` -- builds the C probe (``probes/groundtruth/probe.c``)
  into perfsim's cache directory.
* :mod:`perfsim.groundtruth.grid` -- the grids of cases the probe runs (E1-E5 shapes,
  ordinary-program layouts).
* :mod:`perfsim.groundtruth.records` -- turns the probe's output into JSON records, counting
  flushes with :mod:`perfsim.host.trace`'s parser.
* :mod:`perfsim.groundtruth.native` -- runs the probe on the host kernel.
* :mod:`perfsim.groundtruth.model` -- rebuilds a record as a perfsim address space and
  compares the kernel's counts with :func:`perfsim.plan_mremap`.
* :mod:`perfsim.groundtruth.debian`, :mod:`~perfsim.groundtruth.initramfs`,
  :mod:`~perfsim.groundtruth.qemu` -- fetch a Debian kernel image, build an initramfs with
  the probe, and boot it under QEMU's TCG.
* :mod:`perfsim.groundtruth.mismatches` -- the list of known planner/kernel disagreements.
"""
