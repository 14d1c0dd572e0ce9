"""Robust accuracy of a defended model, with and without the adaptive attack that defence calls for.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
Adversarial Examples", ICML 2018: an input transformation that is not differentiable (JPEG, bit-depth reduction,
median smoothing) gives a gradient attack zero or useless gradients, so a robust accuracy measured through them
overstates the defence; BPDA (the transform's backward pass replaced by the identity) removes that. A randomised
transformation (random resizing and padding) gives a different gradient at every pass; EOT (the gradient averaged
over many passes) removes that.

:func:`defence_robust_accuracy` measures a :class:`~advkit.defences.Defended` model twice on the same images,
eps and seed, with :func:`~advkit.evaluate.robust.robust_accuracy`:

* ``plain``: the defended model attacked through its own gradients (``bpda=False``), the composition ``version``;
* ``adaptive``: for ``jpeg``, ``bit_depth`` and ``median``, the same composition on the same defence with
  ``bpda=True`` (the forward pass is identical, so every example is judged on the same model); for
  ``random_resize_pad``, AutoAttack's ``rand`` version (APGD-CE and APGD-DLR with 20 EOT gradients per step).

and runs :func:`~advkit.evaluate.checks.check_model` on the plain model, whose gradient check flags zero gradients.
A defence whose adaptive robust accuracy is clearly below its plain one (:attr:`DefenceReport.masked`: the
points only the adaptive attack breaks outnumber those only the plain one breaks, McNemar's exact test at 5%)
only hides its gradients, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import binomtest
from torch import nn

from advkit.defences import Defended, wrap
from advkit.evaluate.checks import ModelCheck, check_model
from advkit.evaluate.metrics import wilson_interval
from advkit.evaluate.robust import RobustReport, robust_accuracy

__all__ = ["DefenceReport", "defence_robust_accuracy"]

RANDOM = ("random_resize_pad",)


@dataclass
class DefenceReport:
    """What :func:`defence_robust_accuracy` measured.

    Attributes:
        defence: the defence's name; settings: its settings (``bpda`` as the model had it).
        plain: the robust evaluation through the defence's own gradients.
        adaptive: the evaluation with BPDA or EOT; how: which (a sentence).
        checks: :func:`check_model` of the plain defended model.
    """

    defence: str
    settings: dict[str, Any]
    plain: RobustReport
    adaptive: RobustReport
    how: str
    checks: list[ModelCheck] = field(default_factory=list)

    @property
    def robust(self) -> int:
        """Images neither evaluation broke (the worst case over both, the figure to report)."""
        return sum(p is None and a is None for p, a in zip(self.plain.broken_by, self.adaptive.broken_by, strict=True))

    @property
    def accuracy(self) -> float:
        return self.robust / self.plain.n if self.plain.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`accuracy`."""
        return wilson_interval(self.robust, self.plain.n)

    @property
    def only_adaptive(self) -> int:
        """Images only the adaptive evaluation broke."""
        return sum(p is None and a not in (None, "clean")
                   for p, a in zip(self.plain.broken_by, self.adaptive.broken_by, strict=True))

    @property
    def only_plain(self) -> int:
        """Images only the plain evaluation broke."""
        return sum(a is None and p not in (None, "clean")
                   for p, a in zip(self.plain.broken_by, self.adaptive.broken_by, strict=True))

    @property
    def p_value(self) -> float:
        """McNemar's exact two-sided test of the two evaluations on the same images (1.0 when they agree)."""
        b, c = self.only_adaptive, self.only_plain
        return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)

    @property
    def masked(self) -> bool:
        """The plain figure overstates the defence: the adaptive attack breaks significantly more images."""
        return self.only_adaptive > self.only_plain and self.p_value < 0.05

    def verdict(self) -> str:
        drop = 100 * (self.plain.accuracy - self.adaptive.accuracy)
        if self.masked:
            return (f"{self.defence}: gradient masking. Its own gradients leave {100 * self.plain.accuracy:.2f}% "
                    f"robust, {self.how} leaves {100 * self.adaptive.accuracy:.2f}% ({drop:.2f} points lower, "
                    f"McNemar p = {self.p_value:.2g}); report the adaptive figure")
        return (f"{self.defence}: no sign of gradient masking at this size: {100 * self.plain.accuracy:.2f}% robust "
                f"through its own gradients, {100 * self.adaptive.accuracy:.2f}% under {self.how} "
                f"(McNemar p = {self.p_value:.2g})")

    def table(self) -> str:
        rows = []
        for label, rep in (("own gradients", self.plain), (self.how, self.adaptive)):
            lo, hi = rep.interval
            rows.append(f"robust accuracy, {label}: {100 * rep.accuracy:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
                        f"({rep.version})")
        lo, hi = self.interval
        rows.append(f"robust accuracy, worst case over both: {100 * self.accuracy:.2f}% [{100 * lo:.2f}, "
                    f"{100 * hi:.2f}]")
        failed = [f"sanity check {c.name}: {c.detail}" for c in self.checks if not c.ok]
        return "\n".join([*rows, *failed, self.verdict()])

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"defence": self.defence, "robust": self.robust, "robust_accuracy": self.accuracy, "ci_low": lo,
                "ci_high": hi, "settings": self.settings, "how": self.how, "plain": self.plain.as_dict(),
                "adaptive": self.adaptive.as_dict(), "only_adaptive": self.only_adaptive,
                "only_plain": self.only_plain, "p_value": self.p_value, "masked": self.masked,
                "failed_checks": [c.name for c in self.checks if not c.ok]}


def defence_robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                            version: str = "standard", seed: int = 0, batch_size: int = 500,
                            progress: Callable[[str, int, int | None, str], None] | None = None) -> DefenceReport:
    """Robust accuracy of a defended ``model`` through its own gradients and under BPDA or EOT.

    Args:
        model: a :class:`~advkit.defences.Defended` model (``advkit.defences.wrap`` or a ``defended:`` name).
        x, y, eps, norm, seed, batch_size, progress: as :func:`~advkit.evaluate.robust.robust_accuracy`.
        version: the composition of the plain evaluation, and of the BPDA one (EOT uses ``rand``).

    Returns:
        A :class:`DefenceReport`.

    Raises:
        ValueError: ``model`` is not a defended model (how to make one is said), or any refusal of
            :func:`robust_accuracy`; before any attack runs.
    """
    if not isinstance(model, Defended):
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} is not a defended model: wrap it first "
                         f"(advkit.defences.wrap(model, 'jpeg'), or load 'defended:jpeg:MODEL'); for an undefended "
                         f"model use robust_accuracy")
    name, settings = model.transform.defence, dict(model.transform.settings)
    if name in RANDOM:
        plain_model, adaptive_model, adaptive_version = model, model, "rand"
        how = "EOT (APGD-CE and APGD-DLR, 20 gradients per step)"
    else:
        plain_model = wrap(model.model, name, **{**settings, "bpda": False})
        adaptive_model, adaptive_version = wrap(model.model, name, **{**settings, "bpda": True}), version
        how = "BPDA (identity backward pass)"
    kw: dict[str, Any] = {"eps": eps, "norm": norm, "seed": seed, "batch_size": batch_size, "progress": progress}
    reports = []
    for m, v in ((plain_model, version), (adaptive_model, adaptive_version)):
        if name in RANDOM:
            model.transform.reseed()  # both evaluations see the same sequence of random draws
        reports.append(robust_accuracy(m, x, y, version=v, **kw))
    plain, adaptive = reports
    checks = check_model(plain_model, x[:64], y[:64], warn=False)
    return DefenceReport(defence=name, settings=settings, plain=plain, adaptive=adaptive, how=how, checks=checks)
