"""Evaluation: metrics with confidence intervals (success over all / clean-correct, L-inf / L2 / L0), statistics
(intervals, paired tests), 8-bit quantisation with its re-checks, query attacks' query statistics, and the sanity
checks run on a model before it is attacked, and the robust accuracy under AutoAttack
(:mod:`advkit.evaluate.robust`). The transfer study runner is :mod:`advkit.study`."""

from advkit.evaluate.checks import AdvkitSanityWarning, ModelCheck, check_model, checks_failed
from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval
from advkit.evaluate.queries import query_stats
from advkit.evaluate.robust import RobustReport, robust_accuracy

__all__ = ["AdvkitSanityWarning", "ModelCheck", "Rate", "check_model", "checks_failed", "distortion", "predict",
           "RobustReport", "query_stats", "rate", "robust_accuracy", "wilson_interval"]
