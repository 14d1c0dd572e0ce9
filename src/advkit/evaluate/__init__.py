"""Evaluation: metrics with confidence intervals, statistics, and the transfer study runner (local or Ray)."""

from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval

__all__ = ["Rate", "distortion", "predict", "rate", "wilson_interval"]
