"""Adversarial training's pieces: examples crafted on the fly, the mixed objective, and robust accuracy.

Three methods (:data:`advkit.train.recipe.ADVERSARIAL_METHODS`), each minimising
``alpha * J(x, y) + (1 - alpha) * J(x_adv, y)`` with ``x_adv`` crafted by the attack engine and held constant:

* ``fgsm`` (Goodfellow, Shlens & Szegedy, ICLR 2015, section 6): ``x_adv = clip01(x + eps * sign(grad_x J))``
  against the current model, alpha 0.5;
* ``pgd`` (Madry et al., ICLR 2018): PGD from a random start against the current model, alpha 0 (the loss on
  adversarial examples only);
* ``ensemble`` (Tramer et al., ICLR 2018): FGSM examples from a source drawn per batch among the current model and
  the static pre-trained models, alpha 0.5, so the model cannot learn to mask its own gradients only;
* ``generator`` (Papernot et al. 2016, section VI: train on generated adversarial samples): ``x_adv =
  Proj_eps(G(x))`` from a trained perturbation generator (``advkit train-generator``, AdvGAN or Naseer et al.),
  fixed during training, alpha 0.5 (:func:`load_training_generator` checks it fits the data).

:func:`robust_accuracy` is the figure a card records: accuracy under PGD with random restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from advkit.attacks import attack_batched, create
from advkit.models.frozen import frozen_eval
from advkit.models.generator import PerturbationGenerator, load_generator, project_linf

__all__ = ["adversarial_objective", "craft_adversarial", "fgsm_accuracy", "fgsm_craft", "load_training_generator",
           "robust_accuracy"]


def load_training_generator(settings: dict[str, Any], dataset: str, shape: Sequence[int]) -> PerturbationGenerator:
    """The generator of ``generator`` adversarial training (a completed recipe ``adversarial`` dict), loaded
    (hash checked) and checked against the images it will perturb.

    Raises:
        ValueError: a generator for another image shape, or trained on another dataset (named, with the fix).
    """
    path, trained_on = settings["generator"], settings.get("generator_dataset")
    want = "x".join(map(str, shape))
    got = "x".join(map(str, settings.get("generator_input_shape") or ()))
    if got and got != want:
        raise ValueError(f"generator {path} was trained on {got} images but {dataset} images are {want}; train one "
                         f"on {dataset} (advkit train-generator --dataset {dataset} --source MODEL --out G."
                         f"safetensors)")
    if isinstance(trained_on, str) and trained_on != dataset:
        raise ValueError(f"generator {path} was trained on {trained_on} images, not {dataset}: its samples are not "
                         f"{dataset} images; train one with advkit train-generator --dataset {dataset}")
    return load_generator(path)[0]


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
                          craft: str = "eval", x_adv: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
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
        alpha: weight of the clean term (the paper: 0.5; 0 skips the clean pass).
        craft: ``"eval"`` crafts with the model switched to eval mode (dropout off; the mode is restored even on
            error), the full-strength FGSM an attacker uses at test time; ``"train"`` crafts through the model as
            it is (with dropout, input dropout leaves about a fifth of the pixels unperturbed).
        x_adv: an adversarial batch crafted already (:func:`craft_adversarial`); FGSM against ``model`` otherwise.

    Returns:
        ``(loss, x_adv)``: the scalar objective (with a graph to the parameters) and the FGSM batch.
    """
    if craft not in ("eval", "train"):
        raise ValueError(f"craft must be 'eval' or 'train', got {craft!r}")
    if x_adv is None:
        x_adv = fgsm_craft(model, x, y, eps, keep_mode=craft == "train")
    if alpha == 0.0:  # Madry et al.: the adversarial loss alone (no clean forward pass)
        return F.cross_entropy(model(x_adv), y), x_adv
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


def craft_adversarial(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any], *,
                      static: Sequence[torch.nn.Module] | None = None, generator: torch.Generator,
                      perturber: PerturbationGenerator | None = None) -> torch.Tensor:
    """The adversarial batch of one training step for ``settings`` (a completed recipe ``adversarial`` dict).

    ``generator`` draws PGD's random start and the ensemble's source, so a run is reproducible from its seed. For
    the ensemble, index 0 is the current model and ``1..len(static)`` the static models (frozen, eval mode).
    ``perturber`` is the ``generator`` method's trained generator (:func:`load_training_generator`).
    """
    method, eps = settings["attack"], settings["eps"]
    keep = settings["craft"] == "train"
    if method == "fgsm":
        return fgsm_craft(model, x, y, eps, keep_mode=keep)
    if method == "pgd":
        atk = create("pgd", eps=eps, steps=settings["steps"], alpha=settings["step_size"],
                     random_init=settings["random_init"])
        return atk(model, x.detach(), y, generator=generator, keep_mode=keep).x_adv
    if method == "ensemble":
        sources = [model, *(static or [])]
        k = int(torch.randint(len(sources), (), generator=generator))
        if k == 0:
            return fgsm_craft(model, x, y, eps, keep_mode=keep)
        return create("fgsm", eps=eps)(sources[k], x.detach(), y).x_adv
    if method == "generator":
        if perturber is None:
            raise ValueError("generator adversarial training: pass the loaded generator (load_training_generator)")
        with torch.no_grad():
            xd = x.detach()
            return project_linf(perturber.to(xd.device)(xd.float()), xd, eps)
    raise ValueError(f"unknown adversarial-training method {method!r}")


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
                    restarts: int = 1, step_size: float | None = None, batch_size: int = 500,
                    seed: int = 0) -> dict[str, Any]:
    """Accuracy of ``model`` (eval mode) under L-inf PGD of radius ``eps`` from ``restarts`` random starts: an image
    counts as robust only if no restart fools it. Step size ``2.5 * eps / steps`` by default (Madry et al.).

    Returns:
        ``{"attack": "pgd", "eps", "steps", "step_size", "restarts", "random_start", "accuracy", "correct", "n"}``
        (``advkit.evaluate.wilson_interval(correct, n)`` gives its interval).
    """
    step_size = 2.5 * eps / steps if step_size is None else step_size
    atk = create("pgd", eps=eps, steps=steps, alpha=step_size, random_init=True)
    robust = torch.ones(len(y), dtype=torch.bool)
    with frozen_eval(model):
        for r in range(restarts):
            res = attack_batched(atk, model, x, y, batch_size=batch_size, seed=seed + 1000 * r)
            robust &= ~res.success.cpu()
    k, n = int(robust.sum()), len(y)
    return {"attack": "pgd", "eps": eps, "steps": steps, "step_size": step_size, "restarts": restarts,
            "random_start": True, "accuracy": round(k / max(n, 1), 4), "correct": k, "n": n}
