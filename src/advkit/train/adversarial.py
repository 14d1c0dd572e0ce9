"""Adversarial training's pieces (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015, section 6): FGSM crafted on the fly, the paper's mixed objective, and accuracy on FGSM examples.

With ``Recipe(adversarial={"attack": "fgsm", "eps": 0.25, "alpha": 0.5})`` every training step minimises
``alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J(x, y)), y)``, the FGSM examples crafted against the
current model (:func:`adversarial_objective`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.attacks import attack_batched, create
from advkit.models.frozen import frozen_eval

__all__ = ["adversarial_objective", "fgsm_accuracy", "fgsm_craft"]

def fgsm_craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
               keep_mode: bool = False) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015, eq. 3): ``clip01(x + eps * sign(grad_x J(theta, x, y)))``, crafted by the
    attack engine (``advkit.attacks.create("fgsm", eps=eps)``) in the current precision context.

    The gradient comes from :func:`torch.autograd.grad` with respect to the input only (parameters frozen while
    crafting), so no parameter's ``.grad`` is touched.

    Args:
        model: a classifier taking pixels ``(N, C, H, W)`` in ``[0, 1]``.
        x: pixels ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        eps: L-inf radius in pixel units.
        keep_mode: craft through the model in its current mode (dropout on during training); else eval mode.

    Returns:
        The adversarial batch ``(N, C, H, W)``, detached, in ``[0, 1]``.
    """
    return create("fgsm", eps=eps)(model, x.detach(), y, keep_mode=keep_mode).x_adv


def adversarial_objective(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                          craft: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial training objective of Goodfellow et al. 2015 (section 6) for one batch.

    ``J~(theta, x, y) = alpha * J(theta, x, y) + (1 - alpha) * J(theta, x + eps * sign(grad_x J(theta, x, y)), y)``
    with ``J`` the mean cross-entropy. The FGSM example is crafted against the current parameters (on the fly,
    as in the paper), clipped to ``[0, 1]`` and then held constant: the parameter gradient flows through the
    network's two evaluations, not through the crafting. Crafting uses :func:`torch.autograd.grad` on the input
    only, so parameters' ``.grad`` are untouched until the caller back-propagates the returned loss.

    Args:
        model: the classifier being trained (pixels ``(N, C, H, W)`` in ``[0, 1]`` in, logits out), in the mode
            the two loss terms are computed in (train mode during training).
        x: pixels ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        eps: FGSM radius in pixel units (the paper: 0.25 on MNIST).
        alpha: weight of the clean term (the paper: 0.5).
        craft: ``"eval"`` crafts with the model switched to eval mode (dropout off; the mode is restored even on
            error), the full-strength FGSM an attacker uses at test time; ``"train"`` crafts through the model as
            it is (with dropout, input dropout leaves about a fifth of the pixels unperturbed).

    Returns:
        ``(loss, x_adv)``: the scalar objective (with a graph to the parameters) and the FGSM batch.
    """
    if craft not in ("eval", "train"):
        raise ValueError(f"craft must be 'eval' or 'train', got {craft!r}")
    x_adv = fgsm_craft(model, x, y, eps, keep_mode=craft == "train")
    clean = F.cross_entropy(model(x), y)
    adv = F.cross_entropy(model(x_adv), y)
    return alpha * clean + (1.0 - alpha) * adv, x_adv


def fgsm_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                  batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on FGSM examples of radius ``eps`` crafted against itself."""
    with frozen_eval(model):
        r = attack_batched(create("fgsm", eps=eps), model, x, y, batch_size=batch_size)
        correct = int((~r.success).sum())
    return correct / max(len(y), 1)
