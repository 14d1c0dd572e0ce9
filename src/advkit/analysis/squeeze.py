"""Feature squeezing's detector: Xu, Evans, Qi, NDSS 2018, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks".

The score of an image ``x`` is the largest L1 distance between the model's softmax output on ``x`` and on each of
its squeezed versions, ``max_i || softmax(f(x)) - softmax(f(squeeze_i(x))) ||_1`` (in ``[0, 2]``); a larger score
flags "adversarial". The squeezers are :func:`advkit.defences.bit_depth` and :func:`advkit.defences.median`. The
default is the paper's joint detector for MNIST-like grey images: bit depth 1 and a 2x2 median
(:data:`MNIST_SQUEEZERS`), also used here for Fashion-MNIST, as the paper's only grey-image choice; note that 1-bit
squeezing costs accuracy on Fashion-MNIST (its textures do not survive thresholding at 0.5), so clean images
score higher there than on MNIST and the detector separates less well.

The threshold is the authors' (EvadeML-Zoo ``detections/feature_squeezing.py``, ``train``): the
``ceil(n * (1 - fpr))``-th smallest score of ``n`` legitimate images, an image flagged when its score is strictly
above it; the paper's target false-positive rate is 5%. :func:`squeeze_detection` sets it on one half of the clean
images (or on a separate calibration set) and measures the false-positive rate on the other half, as the authors
train the threshold on legitimate examples held apart from those it is tested on. ROC AUC is scikit-learn's
(:func:`advkit.analysis.detector.roc_auc`) with the Hanley-McNeil (1982) standard error (deterministic; at an AUC
of exactly 0 or 1 it is 0 and the interval collapses to a point, so read it with the counts); rates carry Wilson
intervals. :func:`detector_comparison` puts it next to the JSMA paper's neighbour-pixel detector on the examples
that fool the model, crafted by JSMA, FGSM and transfer attacks on a zoo surrogate (:func:`craft_transfer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.analysis.detector import _as_array, neighbour_score, roc_auc
from advkit.defences import bit_depth, median
from advkit.evaluate.metrics import predict, wilson_interval
from advkit.models.frozen import frozen_eval

__all__ = ["MNIST_SQUEEZERS", "SQUEEZERS", "TRANSFER_ATTACKS", "craft_transfer", "detector_comparison",
           "hanley_mcneil_se", "squeeze_detection", "squeeze_score", "threshold_at_fpr"]

SQUEEZERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"bit_depth": bit_depth, "median": median}
MNIST_SQUEEZERS: tuple[tuple[str, int], ...] = (("bit_depth", 1), ("median", 2))  # the paper's MNIST joint detector
TRANSFER_ATTACKS = ("mi", "sgm+mi", "pgn+mi", "sia+mi")

Squeezers = Sequence[tuple[str, int]]


def _check_squeezers(squeezers: Squeezers) -> None:
    if len(squeezers) == 0:
        raise ValueError("squeezers is empty; give at least one, e.g. (('bit_depth', 1), ('median', 2))")
    for item in squeezers:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"each squeezer is a (name, parameter) pair, e.g. ('median', 2); got {item!r}")
        name, param = item
        if name not in SQUEEZERS:
            raise ValueError(f"unknown squeezer {name!r}; choose one of {', '.join(sorted(SQUEEZERS))}")
        if int(param) < 1:
            raise ValueError(f"squeezer {name!r} needs a parameter >= 1 (bits or window size), got {param}")


def _check_images(x: torch.Tensor, what: str, like: torch.Tensor | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{what} must be images (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if like is not None and tuple(x.shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(f"{what} has image shape {tuple(x.shape[1:])} but the clean images have "
                         f"{tuple(like.shape[1:])}; pass examples of the same images' shape")


def squeeze_score(model: nn.Module, x: torch.Tensor, squeezers: Squeezers = MNIST_SQUEEZERS,
                  batch_size: int = 500) -> torch.Tensor:
    """Feature squeezing's score per image: the largest L1 distance between softmax outputs on ``x`` and on each
    squeezed ``x``.

    Args:
        model: the classifier (pixels in ``[0, 1]`` -> logits); evaluated in eval mode, without gradients.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        squeezers: ``(name, parameter)`` pairs: ``("bit_depth", bits)``, ``("median", window side)``.
        batch_size: images per forward pass.

    Returns:
        float64 ``(N,)`` in ``[0, 2]``.
    """
    _check_squeezers(squeezers)
    _check_images(x, "x")
    out = []
    with torch.no_grad(), frozen_eval(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            p = torch.softmax(model(xb).double(), dim=1)
            d = [(p - torch.softmax(model(SQUEEZERS[n](xb, int(k))).double(), dim=1)).abs().sum(1)
                 for n, k in squeezers]
            out.append(torch.stack(d).amax(0))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def threshold_at_fpr(clean_scores: Any, fpr: float = 0.05) -> float:
    """The authors' threshold: the ``ceil(n * (1 - fpr))``-th smallest of ``n`` legitimate scores; an input is
    flagged when its score is strictly above it, so at most ``fpr`` of these scores are flagged.

    Args:
        clean_scores: scores of legitimate images (array-like or tensor, at least one).
        fpr: target false-positive rate in ``[0, 1)`` (the paper: 0.05).
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr} (the paper's target is 0.05)")
    s = np.sort(_as_array(clean_scores, "clean_scores", "give at least one clean (legitimate) image's score"))
    k = max(int(math.ceil(s.size * (1.0 - fpr) - 1e-9)), 1)
    return float(s[k - 1])


def hanley_mcneil_se(auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (Radiology 1982)'s standard error of an ROC AUC ``A`` from ``n_p`` positives and ``n_n``
    negatives: ``sqrt((A(1-A) + (n_p-1)(Q1-A^2) + (n_n-1)(Q2-A^2)) / (n_p n_n))``, ``Q1 = A/(2-A)``,
    ``Q2 = 2A^2/(1+A)``."""
    if n_positive < 1 or n_negative < 1:
        raise ValueError(f"need at least one positive and one negative, got {n_positive} and {n_negative}")
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)) / (n_positive * n_negative)
    return math.sqrt(max(var, 0.0))


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = (n + 1) // 2
    return perm[:half], perm[half:]


def squeeze_detection(model: nn.Module, clean: torch.Tensor, adversarial: Mapping[str, torch.Tensor], *,
                      squeezers: Squeezers = MNIST_SQUEEZERS, fpr: float = 0.05,
                      calibration: torch.Tensor | None = None, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Feature squeezing's detection of each set of adversarial examples against ``clean`` images.

    The threshold is set at ``fpr`` on ``calibration`` when given, otherwise on a seeded random half of ``clean``
    (``ceil(N / 2)`` images), and the false-positive rate is measured on the rest (all of ``clean`` when
    ``calibration`` is given). ROC AUC uses every clean image.

    Args:
        model: the classifier whose outputs are compared.
        clean: legitimate images ``(N, C, H, W)``, ``N >= 2`` without ``calibration``.
        adversarial: attack name -> its examples ``(M, C, H, W)`` (``M`` may be 0: the figures are then ``None``).
        squeezers: see :func:`squeeze_score`.
        fpr: target false-positive rate (the paper: 0.05).
        calibration: separate legitimate images to set the threshold on.
        seed: seeds the split of ``clean``.
        confidence: level of the intervals.

    Returns:
        Per attack: ``auc``, ``auc_se`` (Hanley-McNeil), ``auc_ci`` (``auc +- z se``, clipped to ``[0, 1]``),
        ``detection_rate`` and ``detection_ci`` (Wilson), ``fpr_measured`` and ``fpr_ci`` (Wilson), ``threshold``,
        ``n_clean``, ``n_calibration``, ``n_fpr``, ``n_adv``, ``mean_score_clean``, ``mean_score_adv``.

    Raises:
        ValueError: no clean images, shapes that differ, an unknown squeezer, ``fpr`` outside ``[0, 1)``.
    """
    _check_squeezers(squeezers)
    _check_images(clean, "clean")
    if clean.shape[0] == 0:
        raise ValueError("clean holds no images; the threshold and the AUC need legitimate images")
    if calibration is None and clean.shape[0] < 2:
        raise ValueError("clean needs at least 2 images to set the threshold on one half and measure the "
                         "false-positive rate on the other (or pass calibration=...)")
    if calibration is not None:
        _check_images(calibration, "calibration", like=clean)
    for name, adv in adversarial.items():
        _check_images(adv, f"adversarial[{name!r}]", like=clean)
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr} (the paper's target is 0.05)")
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + confidence / 2)))
    s_clean = squeeze_score(model, clean, squeezers).numpy()
    if calibration is not None:
        s_cal, s_fpr = squeeze_score(model, calibration, squeezers).numpy(), s_clean
    else:
        fit, held = _split(clean.shape[0], seed)
        s_cal, s_fpr = s_clean[fit.numpy()], s_clean[held.numpy()]
    threshold = threshold_at_fpr(s_cal, fpr)
    false_pos = int((s_fpr > threshold).sum())
    out: dict[str, dict[str, Any]] = {}
    for name, adv in adversarial.items():
        row: dict[str, Any] = {"threshold": threshold, "n_clean": int(s_clean.size), "n_calibration": int(s_cal.size),
                               "n_fpr": int(s_fpr.size), "n_adv": int(adv.shape[0]),
                               "fpr_measured": false_pos / s_fpr.size,
                               "fpr_ci": list(wilson_interval(false_pos, int(s_fpr.size), confidence)),
                               "mean_score_clean": float(s_clean.mean()), "target_fpr": fpr}
        if adv.shape[0] == 0:
            row.update(auc=None, auc_se=None, auc_ci=None, detection_rate=None, detection_ci=None,
                       mean_score_adv=None)
        else:
            s_adv = squeeze_score(model, adv, squeezers).numpy()
            auc = roc_auc(s_clean, s_adv)
            se = hanley_mcneil_se(auc, int(s_adv.size), int(s_clean.size))
            hits = int((s_adv > threshold).sum())
            row.update(auc=auc, auc_se=se, auc_ci=[max(auc - z * se, 0.0), min(auc + z * se, 1.0)],
                       detection_rate=hits / s_adv.size,
                       detection_ci=list(wilson_interval(hits, int(s_adv.size), confidence)),
                       mean_score_adv=float(s_adv.mean()))
        out[name] = row
    return out


def craft_transfer(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str] = TRANSFER_ATTACKS,
                   eps: float = 0.25, seed: int = 0) -> dict[str, torch.Tensor]:
    """Transfer examples: each of ``attacks`` (``advkit.attacks.create(name, eps=eps)``, the paper's other settings)
    run on ``surrogate`` over ``x``, batched with ``seed``. Returns name -> ``(N, C, H, W)``."""
    from advkit.attacks import attack_batched, create

    return {a: attack_batched(create(a, eps=eps), surrogate, x, y, batch_size=256, seed=seed).x_adv for a in attacks}


def _fooling(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x_adv.shape[0] == 0:
        return x_adv
    return x_adv[predict(model, x_adv).to(y.device) != y]


def detector_comparison(model: nn.Module, clean: torch.Tensor, sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                        *, squeezers: Squeezers = MNIST_SQUEEZERS, fpr: float = 0.05,
                        seed: int = 0) -> dict[str, Any]:
    """Both detectors on the examples of each set that fool ``model`` (the feature-squeezing paper's rule: only
    successful adversarial examples are detected).

    Args:
        model: the network the examples are evaluated on (and whose outputs feature squeezing compares).
        clean: legitimate images ``(N, C, H, W)``.
        sets: attack name -> ``(x_adv (M, C, H, W), true labels (M,))``.
        squeezers, fpr, seed: see :func:`squeeze_detection`.

    Returns:
        ``{"squeezers": [[name, param], ...], "fpr": fpr, "attacks": {name: row}}``; each row is
        :func:`squeeze_detection`'s plus ``crafted`` (examples given) and ``auc_neighbour`` (the neighbour-pixel
        score's AUC on the same examples, ``None`` when none fools the model).
    """
    for name, (x_adv, y) in sets.items():
        if x_adv.shape[0] != y.shape[0]:
            raise ValueError(f"sets[{name!r}] holds {x_adv.shape[0]} examples but {y.shape[0]} labels")
    fooling = {name: _fooling(model, x_adv, y) for name, (x_adv, y) in sets.items()}
    rows = squeeze_detection(model, clean, fooling, squeezers=squeezers, fpr=fpr, seed=seed)
    neighbour = neighbour_score(clean)
    for name, adv in fooling.items():
        rows[name]["crafted"] = int(sets[name][0].shape[0])
        rows[name]["auc_neighbour"] = roc_auc(neighbour, neighbour_score(adv)) if adv.shape[0] else None
    return {"squeezers": [list(s) for s in squeezers], "fpr": fpr, "attacks": rows}
