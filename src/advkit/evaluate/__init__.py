"""Evaluation: metrics with confidence intervals (success over all / clean-correct, L-inf / L2 / L0), statistics
(intervals, paired tests), 8-bit quantisation with its re-checks, query attacks' query statistics, and the sanity
checks run on a model before it is attacked, the robust accuracy under AutoAttack
(:mod:`advkit.evaluate.robust`), and a defended model's robust accuracy through its own gradients and under BPDA /
EOT (:mod:`advkit.evaluate.defended`). The transfer study runner is :mod:`advkit.study`."""

from advkit.evaluate.checks import AdvkitSanityWarning, ModelCheck, check_model, checks_failed
from advkit.evaluate.defended import DefenceReport, defence_robust_accuracy
from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval
from advkit.evaluate.queries import query_stats
from advkit.evaluate.robust import RobustReport, robust_accuracy

__all__ = ["AdvkitSanityWarning", "DefenceReport", "ModelCheck", "Rate", "RobustReport", "check_model", "checks_failed",
           "defence_robust_accuracy", "distortion", "predict", "query_stats", "rate", "robust_accuracy",
           "wilson_interval"]
