"""Evaluation: metrics with confidence intervals (success over all / clean-correct, L-inf / L2 / L0), statistics
(intervals, paired tests), 8-bit quantisation with its re-checks, and query attacks' query statistics. The
transfer study runner is :mod:`advkit.study`."""

from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval
from advkit.evaluate.queries import query_stats

__all__ = ["Rate", "distortion", "predict", "query_stats", "rate", "wilson_interval"]
