"""Evaluation: metrics with confidence intervals, and (later) the transfer study runner."""

from advkit.evaluate.metrics import Rate, distortion, predict, rate, wilson_interval

__all__ = ["Rate", "distortion", "predict", "rate", "wilson_interval"]
