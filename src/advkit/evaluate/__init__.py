"""Evaluation: metrics with confidence intervals (success over all / clean-correct, L-inf / L2 / L0), statistics
(intervals, paired tests) and 8-bit quantisation with its re-checks. The transfer study runner is
:mod:`advkit.study`."""

from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval

__all__ = ["Rate", "distortion", "predict", "rate", "wilson_interval"]
