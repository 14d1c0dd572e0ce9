"""The neighbour-pixel detector studied as a defence by Papernot et al., "The Limitations of Deep Learning in
Adversarial Settings" (EuroS&P 2016), Section VI: JSMA saturates isolated pixels, so an adversarial image should
have larger differences between neighbouring pixels than a clean one.

The score of an image is the sum of squared differences between horizontally and vertically adjacent pixels
(over all channels); a larger score flags "adversarial". :func:`roc_auc` measures how well the score separates
clean from adversarial images (the Mann-Whitney statistic with ties counted as one half), and
:func:`detection_study` runs it for clean vs JSMA and clean vs FGSM examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def neighbour_score(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between neighbouring pixels, per image.

    Args:
        x: images ``(N, C, H, W)``.

    Returns:
        float64 ``(N,)``: ``sum (x[..., i, j+1] - x[..., i, j])^2 + sum (x[..., i+1, j] - x[..., i, j])^2``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    x = x.double()
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).square().sum((1, 2, 3))
    vertical = (x[..., 1:, :] - x[..., :-1, :]).square().sum((1, 2, 3))
    return horizontal + vertical


def _as_array(v: Any, what: str, need: str = "ROC AUC needs at least one score on each side") -> np.ndarray:
    """``v`` (array-like or tensor) as a flat float64 array; ``ValueError`` when empty (``need`` says why it
    may not be) or not finite."""
    a = v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float64)
    a = a.ravel()
    if a.size == 0:
        raise ValueError(f"{what} is empty: {need}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite scores")
    return a


def _labelled(negative: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    neg, pos = _as_array(negative, "negative"), _as_array(positive, "positive")
    return np.concatenate([np.zeros(neg.size), np.ones(pos.size)]), np.concatenate([neg, pos])


def roc_auc(negative: Any, positive: Any) -> float:
    """Area under the ROC curve of a score that should be larger for ``positive`` samples (scikit-learn's
    ``roc_auc_score``): ``P(s_pos > s_neg) + 0.5 * P(s_pos == s_neg)`` over all (positive, negative) pairs.

    Args:
        negative: scores of the negative class (clean images), any array-like or tensor.
        positive: scores of the positive class (adversarial images).

    Returns:
        AUC in ``[0, 1]``; 0.5 is chance, below 0.5 means the score ranks the classes the wrong way round.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(*_labelled(negative, positive)))


def roc_curve(negative: Any, positive: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for "flag when score >= threshold", thresholds decreasing (scikit-learn's ``roc_curve``, every
    threshold kept).

    Returns:
        ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` (threshold ``+inf``) and ending at ``(1, 1)``.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, thresholds = sk_roc_curve(*_labelled(negative, positive), drop_intermediate=False)
    return fpr, tpr, thresholds


def detection_auc(clean: torch.Tensor, adversarial: torch.Tensor) -> float:
    """ROC AUC of :func:`neighbour_score` for ``clean`` (negative) vs ``adversarial`` (positive) images."""
    return roc_auc(neighbour_score(clean), neighbour_score(adversarial))


def detection_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, jsma_adv: torch.Tensor,
                    fgsm_eps: float = 0.25, fgsm_adv: torch.Tensor | None = None) -> dict[str, Any]:
    """The paper's detection defence: clean vs JSMA and clean vs FGSM, by the neighbour-pixel score.

    Args:
        model: the classifier (used to craft FGSM examples when ``fgsm_adv`` is not given).
        x: clean images ``(N, C, H, W)`` in ``[0, 1]``.
        y: their labels ``(N,)``.
        jsma_adv: JSMA adversarial examples ``(M, C, H, W)`` (e.g. the successful ones of a study).
        fgsm_eps: L-inf budget of FGSM (Goodfellow et al. 2015's MNIST setting: 0.25).
        fgsm_adv: precomputed FGSM examples; default: ``advkit.attacks.create("fgsm", eps=fgsm_eps)`` on ``x``.

    Returns:
        ``{"auc_jsma", "auc_fgsm", "mean_score_clean", "mean_score_jsma", "mean_score_fgsm", "n_clean", "n_jsma",
        "n_fgsm", "fgsm_eps"}``; AUCs treat the adversarial examples as positives (higher score = flagged).
    """
    if fgsm_adv is None:
        from advkit.attacks import create

        fgsm_adv = create("fgsm", eps=fgsm_eps)(model, x, y).x_adv
    clean, jsma, fgsm = neighbour_score(x), neighbour_score(jsma_adv), neighbour_score(fgsm_adv)
    return {
        "auc_jsma": roc_auc(clean, jsma), "auc_fgsm": roc_auc(clean, fgsm),
        "mean_score_clean": float(clean.mean()), "mean_score_jsma": float(jsma.mean()),
        "mean_score_fgsm": float(fgsm.mean()), "n_clean": int(clean.numel()), "n_jsma": int(jsma.numel()),
        "n_fgsm": int(fgsm.numel()), "fgsm_eps": float(fgsm_eps),
    }
