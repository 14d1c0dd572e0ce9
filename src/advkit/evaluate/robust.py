"""Robust accuracy under the standard AutoAttack composition (Croce & Hein, ICML 2020).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML 2020: a robustness figure is the accuracy left after four complementary attacks, each run only on the points
every earlier one left robust (as the original ``autoattack.py`` does), so the figure is the worst case over them:

* ``standard``: APGD-CE (no restarts), APGD-T (9 target classes), FAB-T (9 target classes), Square (5,000
  queries, ``p_init`` 0.8), as the original's standard version for L-inf and L2;
* ``fast``: APGD-CE then APGD-T, the two that break nearly every point the standard version breaks (the original's
  logs on its model zoo), for quick checks; say which version a figure comes from;
* ``rand``: APGD-CE and APGD-DLR, each averaging 20 gradients per iteration (EOT), the original's version for
  randomised defences (:mod:`advkit.evaluate.defended` uses it against ``random_resize_pad``).

The members are advkit's registered attacks, run by name (:func:`advkit.attacks.create`); each one's
``AttackResult.success`` marks exactly the points it fooled within ``eps``. A point counts as broken only after the
final check: its adversarial example is within ``eps`` of ``x`` (in ``norm``), in ``[0, 1]``, and the model
misclassifies it (re-predicted here, not taken from the attack). Points the model misclassifies clean are not robust
and are not attacked.

    report = robust_accuracy(model, x, y, eps=0.1)          # L-inf, standard version
    print(report.table())                                    # the per-attack table auto-attack prints
    report.accuracy, report.interval                         # robust accuracy and its 95% Wilson interval
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advkit.attacks.core.budget import check_eps
from advkit.attacks.core.checks import check_choice, check_number
from advkit.evaluate.metrics import distortion, predict, wilson_interval

__all__ = ["VERSIONS", "RobustReport", "robust_accuracy"]

VERSIONS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (("apgd-ce", {"n_restarts": 1}), ("apgd-t", {"n_target_classes": 9, "n_restarts": 1}),
                 ("fab-t", {"n_target_classes": 9, "n_restarts": 1}), ("square", {"max_queries": 5000, "p_init": 0.8})),
    "fast": (("apgd-ce", {"n_restarts": 1}), ("apgd-t", {"n_target_classes": 9, "n_restarts": 1})),
    "rand": (("apgd-ce", {"n_restarts": 1, "eot_iter": 20}), ("apgd-dlr", {"n_restarts": 1, "eot_iter": 20})),
}
"""Each version's attacks in the order they run, with the original's settings for them."""


@dataclass
class AttackRow:
    """One attack of the composition: the points it was run on, how many it broke, the robust accuracy after it."""

    attack: str
    attempted: int
    broken: int
    robust_after: int
    seconds: float


@dataclass
class RobustReport:
    """What :func:`robust_accuracy` measured.

    Attributes:
        eps, norm, version: the threat model and the composition.
        n: images; clean: how many the model classifies correctly; robust: how many no attack broke.
        rows: one :class:`AttackRow` per attack, in the order they ran.
        broken_by: per image, ``"clean"`` (misclassified without attack), the attack that broke it, or ``None``.
        x_adv: the adversarial examples (``x`` where nothing was found).
    """

    eps: float
    norm: str
    version: str
    n: int
    clean: int
    robust: int
    rows: list[AttackRow] = field(default_factory=list)
    broken_by: list[str | None] = field(default_factory=list)
    x_adv: torch.Tensor | None = None

    @property
    def accuracy(self) -> float:
        """Robust accuracy: the share of all images that are classified correctly after every attack."""
        return self.robust / self.n if self.n else 0.0

    @property
    def clean_accuracy(self) -> float:
        return self.clean / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the robust accuracy."""
        return wilson_interval(self.robust, self.n)

    def table(self) -> str:
        """The per-attack table, as auto-attack prints it: robust accuracy after each attack."""
        lo, hi = self.interval
        lines = [f"clean accuracy: {100 * self.clean_accuracy:.2f}% ({self.clean}/{self.n})"]
        for r in self.rows:
            lines.append(f"robust accuracy after {r.attack.upper()}: {100 * r.robust_after / max(self.n, 1):.2f}% "
                         f"(broke {r.broken} of {r.attempted}, {r.seconds:.1f} s)")
        lines.append(f"robust accuracy ({self.version}, {self.norm}, eps {self.eps:g}): {100 * self.accuracy:.2f}% "
                     f"[{100 * lo:.2f}, {100 * hi:.2f}]")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"eps": self.eps, "norm": self.norm, "version": self.version, "n": self.n, "clean": self.clean,
                "robust": self.robust, "robust_accuracy": self.accuracy, "ci_low": lo, "ci_high": hi,
                "attacks": [vars(r) for r in self.rows]}


def _check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, version: str) -> None:
    """Every refusal before any work: version, norm, eps range, shapes, a probability-output model."""
    check_choice("version", version, VERSIONS)
    check_choice("norm", norm, ("linf", "l2"))
    check_eps(eps)
    if eps == 0:
        raise ValueError("eps must be > 0 for a robust accuracy (eps 0 is the clean accuracy: advkit evaluate)")
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (N, C, H, W) and y (N,) with the same N, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if norm == "linf" and eps > 1:
        raise ValueError(f"an L-inf eps is in pixel units of [0, 1]; eps={eps:g} > 1 allows any image (8/255 and "
                         f"0.3 are usual); did you mean a 0-255 value? divide by 255")
    diameter = math.sqrt(x[0].numel())
    if norm == "l2" and eps > diameter:
        raise ValueError(f"an L2 eps of {eps:g} exceeds the diameter of the image box ({diameter:.1f} for "
                         f"{tuple(x.shape[1:])}); usual L2 budgets are 0.5 to 3")
    with torch.no_grad():
        out = model(x[:8])
    if out.ndim != 2:
        raise ValueError(f"the model must return logits (N, classes), got shape {tuple(out.shape)}")
    rows_sum_to_one = torch.allclose(out.sum(1), torch.ones(out.shape[0], dtype=out.dtype), atol=1e-4)
    if bool((out >= 0).all()) and rows_sum_to_one:
        raise ValueError("the model returns probabilities (non-negative rows that sum to 1); APGD's losses and "
                         "FAB's linearisation need logits: evaluate the model without its final softmax")


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                    version: str = "standard", seed: int = 0, batch_size: int = 500,
                    progress: Callable[[str, int, int | None, str], None] | None = None) -> RobustReport:
    """Robust accuracy of ``model`` on ``(x, y)`` under the AutoAttack composition ``version``.

    Args:
        model: a classifier returning logits, in eval mode (its normalisation inside).
        x: images ``(N, C, H, W)`` in ``[0, 1]``; y: labels ``(N,)``.
        eps: the budget in pixel units (L-inf radius, or L2 radius with ``norm="l2"``).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"`` or ``"fast"`` (:data:`VERSIONS`).
        seed: seeds every attack's generator (one per attack and batch).
        batch_size: images per attack call.
        progress: ``progress(stage, done, total, detail)`` (:data:`advkit.progress.ProgressFn`).

    Returns:
        A :class:`RobustReport`.

    Raises:
        ValueError: an unknown version or norm, eps out of the norm's range, mismatched shapes, a model that
            returns probabilities; all before any attack runs.
    """
    import advkit.attacks as A

    check_number("batch_size", batch_size, lo=1, integer=True)
    _check(model, x, y, eps, norm, version)
    attacks = [(name, A.create(name, eps=eps, norm=norm, **kw)) for name, kw in VERSIONS[version]]
    n = x.shape[0]
    x_adv = x.clone()
    correct = predict(model, x, batch_size) == y
    broken_by: list[str | None] = ["clean" if not bool(c) else None for c in correct]
    robust = correct.clone()
    report = RobustReport(eps=eps, norm=norm, version=version, n=n, clean=int(correct.sum()), robust=0)
    for k, (name, attack) in enumerate(attacks):
        idx = robust.nonzero().flatten()
        t0 = time.perf_counter()
        broke = 0
        for b, start in enumerate(range(0, idx.numel(), batch_size)):
            part = idx[start:start + batch_size]
            g = torch.Generator().manual_seed(seed * 1_000_003 + k * 1_009 + b)
            res = attack(model, x[part], y[part], generator=g)
            cand = res.x_adv.detach()
            dist = distortion(cand, x[part])[norm]
            within = (dist <= eps * (1 + 1e-5) + 1e-7) & (cand.flatten(1).amin(1) >= 0) & (cand.flatten(1).amax(1) <= 1)
            fooled = (predict(model, cand, batch_size) != y[part]) & within & res.success.bool()
            hit = part[fooled]
            x_adv[hit] = cand[fooled]
            robust[hit] = False
            for i in hit.tolist():
                broken_by[i] = name
            broke += int(fooled.sum())
            if progress is not None:
                progress(name, min(start + batch_size, idx.numel()), idx.numel(), f"broke {broke}")
        report.rows.append(AttackRow(attack=name, attempted=idx.numel(), broken=broke,
                                     robust_after=int(robust.sum()), seconds=time.perf_counter() - t0))
    report.robust = int(robust.sum())
    report.broken_by = broken_by
    report.x_adv = x_adv
    return report
