"""Calibration and validation against the host kernel (layer 8).

Three stages with a content hash between each (measurement → fitted model → simulator):

1. :mod:`~perfsim.calibrate.design` plans the configurations (pure) and
   :mod:`~perfsim.calibrate.measure` times real ``mremap`` calls on them (and counts their
   TLB flushes through tracefs), writing a data file (:mod:`~perfsim.calibrate.io`);
2. :mod:`~perfsim.calibrate.fit` fits the cost model's free parameters to the medians
   (robust NNLS on the per-call design matrix from ``perfsim.cost.param_counts``, bootstrap
   intervals) and :mod:`~perfsim.calibrate.profile` writes a cost profile citing the data's
   sha256;
3. :mod:`~perfsim.calibrate.validate` predicts every measured configuration with a kernel
   profile and a cost profile, in-sample and held-out, and writes the error tables and plot.

:func:`~perfsim.calibrate.pipeline.calibrate` and :func:`~perfsim.calibrate.validate.validate`
are what ``perfsim calibrate`` and ``perfsim validate`` call. See docs/calibration.md.
"""

from perfsim.calibrate.design import ALIGN_CLASSES, Config, design
from perfsim.calibrate.fit import FREE, FitResult, fit_profile
from perfsim.calibrate.io import CalibData, load_data
from perfsim.calibrate.pipeline import CalibrationResult, calibrate
from perfsim.calibrate.validate import ValidationReport, validate, write_report

__all__ = ["ALIGN_CLASSES", "CalibData", "CalibrationResult", "Config", "FREE", "FitResult",
           "ValidationReport", "calibrate", "design", "fit_profile", "load_data", "validate",
           "write_report"]
