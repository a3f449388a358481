"""Drift checks of a new batch against the champion's reference rows (issue 17), calibrated by
`benchmarks/drift_calibration.py`; see docs/drift.md.

- `mmd`: MMD² two-sample permutation test on embeddings (per modality and fused);
- `properties`: raw image/text properties and their two-sample tests;
- `predictions`: the champion's confidence and predicted-class balance, temperature scaling and
  the estimated accuracy of an unlabelled batch;
- `report`: the Bonferroni-corrected `DriftReport`, its JSON and its plot;
- `check`: `profile` + `check_batch`, everything in one call.
"""

from mmcore.drift.check import Profile, check_batch, load_profile, profile, save_profile
from mmcore.drift.report import DriftReport, DriftTest, TestResult, build_report, plot_report

__all__ = ["DriftReport", "DriftTest", "Profile", "TestResult", "build_report", "check_batch",
           "load_profile", "plot_report", "profile", "save_profile"]
