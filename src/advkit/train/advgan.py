"""AdvGAN (Xiao, Li, Zhu, He, Liu & Song, IJCAI 2018, "Generating Adversarial Examples with Adversarial Networks").

The perturbation generator ``G`` (:class:`~advkit.models.generator.PerturbationGenerator`) is trained against the
source model(s) ``f`` *and* a discriminator ``D`` (:class:`~advkit.models.discriminator.Discriminator`) that tells
clean images from adversarial ones, so the adversarial images look like the data. With ``x_adv = Proj_eps(G(x))``
(the L-inf ball of ``eps`` around ``x`` and ``[0, 1]``, as every advkit generator) and ``delta = x_adv - x``,
each step (the paper's eq. 4, alternating):

* ``D`` minimises ``L_D = -[log D(x) + log(1 - D(x_adv))]`` (``gan_loss="bce"``, the paper's eq. 1) or the least
  squares ``(D(x) - 1)^2 + D(x_adv)^2`` (``"lsgan"``, the reimplementation's choice), ``x_adv`` held fixed;
* ``G`` minimises ``L = L_adv + alpha * L_GAN + beta * L_hinge`` with

  - ``L_adv``: the C&W margin on each source's logits ``Z`` (eq. 3, ``kappa`` 0): untargeted
    ``max(Z_l - max_{i != l} Z_i, -kappa)`` with ``l`` the source's prediction on the clean image (as advkit's
    other generators: no ground truth needed), targeted ``max(max_{i != t} Z_i - Z_t, -kappa)``; summed over
    sources, batch mean;
  - ``L_GAN``: the non-saturating generator loss ``-log D(x_adv)`` (Goodfellow et al. 2014's practical form of
    ``log(1 - D(x_adv))``), or ``(D(x_adv) - 1)^2`` with ``"lsgan"``;
  - ``L_hinge = E max(0, ||delta||_2 - c)`` (eq. 2), ``c`` the user's L2 bound.

Defaults and their sources: ``alpha = 1`` and ``beta = 10`` (advkit's choice; the paper's eq. 4 leaves both free,
and the reimplementation at github mathcbc/advGAN_pytorch weights ``10 * L_adv + 1 * ||delta||_2 + 1 * L_GAN`` with
its hinge disabled); ``kappa = 0`` (the paper, eq. 3); ``c = eps * sqrt(C * H * W) / 2``, half the L2 norm of a
perturbation that uses the whole L-inf budget on every pixel (advkit's choice; the paper names no value);
``gan_loss = "bce"`` (the paper's eq. 1); ``ndf = 8`` (the reimplementation's MNIST discriminator); Adam with
learning rate 1e-3 for ``G`` and ``D`` (the reimplementation) and betas (0.5, 0.999) (DCGAN, as advkit's other
generators).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks.query.base import margin
from advkit.models.discriminator import Discriminator

__all__ = ["ADVGAN_DEFAULTS", "ADVGAN_LR", "GAN_LOSSES", "AdvGANStep", "advgan_settings", "cw_margin_loss",
           "discriminator_loss", "gan_generator_loss", "hinge_loss"]

GAN_LOSSES = ("bce", "lsgan")
ADVGAN_LR = 1e-3  # github mathcbc/advGAN_pytorch: Adam(lr=0.001) for G and D
ADVGAN_DEFAULTS: dict[str, Any] = {"alpha": 1.0, "beta": 10.0, "bound": None, "kappa": 0.0, "gan_loss": "bce",
                                   "ndf": 8, "target": None}


def advgan_settings(spec: Mapping[str, Any] | None, eps: float, shape: Sequence[int],
                    num_classes: int | None = None) -> dict[str, Any]:
    """Check and complete AdvGAN's settings (:data:`ADVGAN_DEFAULTS`); ``bound`` ``None`` becomes
    ``eps * sqrt(C * H * W) / 2``.

    Raises:
        ValueError: an unknown key, or a value out of range (named, with the fix).
    """
    spec = dict(spec or {})
    unknown = set(spec) - set(ADVGAN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown AdvGAN setting(s) {sorted(unknown)}; known: {', '.join(ADVGAN_DEFAULTS)}")
    out = {**ADVGAN_DEFAULTS, **spec}
    for key in ("alpha", "beta", "kappa"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"AdvGAN's {key} must be a finite number >= 0, got {v!r}")
        out[key] = float(v)
    if out["bound"] is None:
        out["bound"] = round(float(eps) * math.sqrt(math.prod(shape)) / 2, 6)
    b = out["bound"]
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b < 0:
        raise ValueError(f"AdvGAN's hinge bound c must be a finite L2 norm >= 0 in pixel units, got {b!r}")
    out["bound"] = float(b)
    if out["gan_loss"] not in GAN_LOSSES:
        raise ValueError(f"AdvGAN's gan_loss must be one of {GAN_LOSSES}, got {out['gan_loss']!r}")
    if isinstance(out["ndf"], bool) or not isinstance(out["ndf"], int) or out["ndf"] < 1:
        raise ValueError(f"the discriminator's width ndf must be an integer >= 1, got {out['ndf']!r}")
    t = out["target"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0
                          or (num_classes is not None and t >= num_classes)):
        raise ValueError(f"AdvGAN's target must be a class index in [0, {num_classes or 'classes'}) or None "
                         f"(untargeted), got {t!r}")
    return out


def cw_margin_loss(logits: torch.Tensor, label: torch.Tensor, target: int | None = None,
                   kappa: float = 0.0) -> torch.Tensor:
    """AdvGAN's ``L_adv`` (eq. 3, the C&W margin on logits ``(N, K)``), batch mean.

    Untargeted: ``max(Z_label - max_{i != label} Z_i, -kappa)``; targeted: ``max(max_{i != t} Z_i - Z_t, -kappa)``.
    """
    t = None if target is None else torch.full_like(label, target)
    return margin(logits, label, t).clamp(min=-kappa).mean()


def hinge_loss(delta: torch.Tensor, bound: float) -> torch.Tensor:
    """AdvGAN's ``L_hinge = E max(0, ||delta||_2 - c)`` (eq. 2) over a batch of perturbations ``(N, C, H, W)``."""
    return (delta.flatten(1).norm(dim=1) - bound).clamp(min=0).mean()


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """``D``'s loss on clean (``real``) and adversarial (``fake``) logits ``(N,)``: BCE (eq. 1) or least squares
    on ``sigmoid`` outputs (the reimplementation)."""
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    if kind == "lsgan":
        return (torch.sigmoid(real_logit) - 1).pow(2).mean() + torch.sigmoid(fake_logit).pow(2).mean()
    raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {kind!r}")


def gan_generator_loss(fake_logit: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """``G``'s ``L_GAN`` on the adversarial images' logits: ``-log D(x_adv)`` or ``(D(x_adv) - 1)^2``, batch mean."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
    if kind == "lsgan":
        return (torch.sigmoid(fake_logit) - 1).pow(2).mean()
    raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {kind!r}")


class AdvGANStep:
    """One AdvGAN step's two halves, for the generator training loop (:func:`advkit.train.generator.
    train_generator` with ``loss="advgan"``): :meth:`objective` updates ``D`` on ``(x, x_adv)`` and returns
    ``G``'s objective, which the loop back-propagates into ``G``.

    Args:
        models: the source models (frozen, eval mode).
        channels: image channels.
        settings: completed :func:`advgan_settings`.
        lr: Adam's learning rate for ``D`` (betas 0.5, 0.999).
    """

    def __init__(self, models: Sequence[nn.Module], channels: int, settings: Mapping[str, Any], lr: float) -> None:
        self.models, self.settings = list(models), dict(settings)
        self.disc = Discriminator(channels, int(settings["ndf"]))
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999))
        self.history: list[dict[str, float]] = []  # per step: d_loss, d_accuracy, l_adv, l_gan, l_hinge

    def parts(self, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three terms of ``G``'s objective for a batch (``x_adv`` with its graph to ``G``), no update."""
        s = self.settings
        l_adv = torch.zeros((), device=x.device)
        for m in self.models:
            with torch.no_grad():
                label = m(x).argmax(1)
            l_adv = l_adv + cw_margin_loss(m(x_adv), label, s["target"], s["kappa"])
        return {"l_adv": l_adv, "l_gan": gan_generator_loss(self.disc(x_adv), s["gan_loss"]),
                "l_hinge": hinge_loss(x_adv - x, s["bound"])}

    def combine(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``L_adv + alpha * L_GAN + beta * L_hinge``."""
        s = self.settings
        return parts["l_adv"] + s["alpha"] * parts["l_gan"] + s["beta"] * parts["l_hinge"]

    def objective(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Update ``D`` once on clean ``x`` vs ``x_adv`` (detached), then return ``G``'s objective."""
        self.disc.train()
        real, fake = self.disc(x), self.disc(x_adv.detach())
        d_loss = discriminator_loss(real, fake, self.settings["gan_loss"])
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        acc = float(torch.cat([real > 0, fake < 0]).float().mean())
        self.disc.requires_grad_(False)  # G's step must not touch D's gradients
        try:
            parts = self.parts(x, x_adv)
        finally:
            self.disc.requires_grad_(True)
        self.history.append({"d_loss": float(d_loss.detach()), "d_accuracy": acc,
                             **{k: float(v.detach()) for k, v in parts.items()}})
        return self.combine(parts)

    def summary(self, steps_per_epoch: int) -> dict[str, Any]:
        """Per-epoch means of the recorded terms (for the card)."""
        out: dict[str, Any] = {}
        for key in ("d_loss", "d_accuracy", "l_adv", "l_gan", "l_hinge"):
            vals = [h[key] for h in self.history]
            out[f"{key}_per_epoch"] = [round(sum(vals[i:i + steps_per_epoch]) / len(vals[i:i + steps_per_epoch]), 4)
                                       for i in range(0, len(vals), steps_per_epoch)]
        return out
