"""Adversarial training's pieces (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015, section 6): FGSM crafted on the fly, the paper's mixed objective, and accuracy on FGSM examples.

With ``Recipe(adversarial={"attack": "fgsm", "eps": 0.25, "alpha": 0.5})`` every training step minimises
``alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J(x, y)), y)``, the FGSM examples crafted against the
current model (:func:`adversarial_objective`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.models.frozen import frozen_eval

__all__ = ["adversarial_objective", "fgsm_accuracy", "fgsm_craft"]

def fgsm_craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015, eq. 3): ``clip01(x + eps * sign(grad_x J(theta, x, y)))``, in the model's
    current mode and precision context.

    The gradient comes from :func:`torch.autograd.grad` with respect to the input only, so no parameter's
    ``.grad`` is touched. ``J`` is the mean cross-entropy (its sign equals that of the summed loss's gradient).

    Args:
        model: a classifier taking pixels ``(N, C, H, W)`` in ``[0, 1]``.
        x: pixels ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        eps: L-inf radius in pixel units.

    Returns:
        The adversarial batch ``(N, C, H, W)``, detached, in ``[0, 1]``.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), y)
        (grad,) = torch.autograd.grad(loss, xg)
    return (x.detach() + eps * grad.sign()).clamp_(0.0, 1.0)


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
    if craft == "eval":
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            x_adv = fgsm_craft(model, x, y, eps)
        finally:
            for m, mode in modes:
                m.training = mode
    else:
        x_adv = fgsm_craft(model, x, y, eps)
    clean = F.cross_entropy(model(x), y)
    adv = F.cross_entropy(model(x_adv), y)
    return alpha * clean + (1.0 - alpha) * adv, x_adv


def fgsm_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                  batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on FGSM examples of radius ``eps`` crafted against itself."""
    correct = 0
    with frozen_eval(model):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = fgsm_craft(model, xb, yb, eps)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / max(len(y), 1)
