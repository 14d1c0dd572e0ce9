"""Training a perturbation generator against one or several source models (Naseer et al., NeurIPS 2019).

The generator ``G`` maps a clean batch to ``x_adv = Proj_eps(G(x))``; it is trained to *maximise*, summed over the
sources ``f``, the relativistic cross-entropy ``CE(f(x_adv) - f(x), argmax f(x))`` (``loss="relativistic"``, the
paper's), or the plain ``CE(f(x_adv), argmax f(x))`` (``loss="ce"``: GAP, Poursaeed et al. CVPR 2018, without the
relativistic term). The labels are the sources' own predictions, so no ground truth is needed and any image set
can be the training domain. Adam with learning rate 2e-4 and betas (0.5, 0.999), as in the paper's code.
``loss="advgan"`` trains the same generator the AdvGAN way (Xiao et al., IJCAI 2018: a discriminator, the C&W
margin and a hinge on the perturbation's L2 norm; :mod:`advkit.train.advgan`), Adam at 1e-3 by default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import advkit
from advkit.data import Dataset
from advkit.data import load as load_data
from advkit.models import load as load_model
from advkit.models.generator import PerturbationGenerator, project_linf
from advkit.progress import ProgressFn
from advkit.train.fit import check_model_fits

__all__ = ["LOSSES", "generator_loss", "train_command", "train_generator"]

LOSSES = ("relativistic", "ce", "advgan")
PAPERS = {"relativistic": "Naseer et al. 2019", "ce": "Poursaeed et al. 2018 (GAP loss)",
          "advgan": "Xiao et al. 2018 (AdvGAN)"}


def generator_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss the generator *minimises* for one source (the negated fooling objective), batch mean."""
    label = clean_logits.argmax(1)
    if kind == "relativistic":
        return -F.cross_entropy(adv_logits - clean_logits, label)
    if kind == "ce":
        return -F.cross_entropy(adv_logits, label)
    if kind == "advgan":
        raise ValueError("the advgan loss needs a discriminator: use advkit.train.advgan.AdvGANStep")
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def train_command(sources: Sequence[str], dataset: str, eps: float, epochs: int, seed: int, loss: str,
                  limit: int | None, ngf: int, blocks: int, batch_size: int, lr: float, out: str,
                  cross_domain: bool = False, advgan: dict[str, Any] | None = None) -> str:
    """The ``advkit train-generator`` command that reproduces a training."""
    parts = ["advkit train-generator", *[f"--source {s}" for s in sources], f"--dataset {dataset}",
             f"--eps {eps:g}", f"--epochs {epochs}", f"--seed {seed}", f"--loss {loss}", f"--ngf {ngf}",
             f"--blocks {blocks}", f"--batch-size {batch_size}", f"--lr {lr:g}"]
    if limit is not None:
        parts.append(f"--limit {limit}")
    if cross_domain:
        parts.append("--cross-domain")
    if advgan is not None:
        parts += [f"--gan-alpha {advgan['alpha']:g}", f"--hinge-beta {advgan['beta']:g}",
                  f"--hinge-bound {advgan['bound']:g}", f"--gan-loss {advgan['gan_loss']}"]
        if advgan["target"] is not None:
            parts.append(f"--target {advgan['target']}")
    parts.append(f"--out {out}")
    return " ".join(parts)


@torch.no_grad()
def fooling_rate(gen: PerturbationGenerator, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 batch_size: int = 500) -> float:
    """Share of ``x`` whose prediction differs from ``y`` after the generator's perturbation."""
    gen.eval()
    wrong = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        wrong += int((model(project_linf(gen(xb), xb, eps)).argmax(1) != y[i:i + batch_size]).sum())
    return wrong / max(len(x), 1)


def train_generator(sources: Sequence[str], dataset: str = "fashion-mnist", *, eps: float = 0.1, epochs: int = 1,
                    batch_size: int = 64, lr: float | None = None, loss: str = "relativistic", ngf: int = 16,
                    blocks: int = 6, seed: int = 0, limit: int | None = None, eval_images: int = 1000,
                    out: str = "generator.safetensors",
                    progress: ProgressFn | None = None, cross_domain: bool = False,
                    advgan: dict[str, Any] | None = None, train_data: Dataset | None = None
                    ) -> tuple[PerturbationGenerator, dict[str, Any]]:
    """Train a generator against ``sources`` on ``dataset``'s training split.

    Args:
        sources: model names or paths (:func:`advkit.models.load`); the loss is summed over them.
        dataset: the training domain.
        eps: the L-inf budget the generator is trained for.
        epochs, batch_size, lr: Adam's schedule (betas 0.5, 0.999); ``lr`` ``None``: 2e-4 (Naseer et al.'s code),
            1e-3 for ``"advgan"`` (the AdvGAN reimplementation's).
        loss: ``"relativistic"`` (Naseer et al.), ``"ce"`` (GAP without the relativistic term) or ``"advgan"``
            (Xiao et al. 2018, with a discriminator: :mod:`advkit.train.advgan`).
        ngf, blocks: generator width and depth (:class:`~advkit.models.generator.PerturbationGenerator`).
        seed: seeds the initialisation, the shuffling and dropout.
        limit: train on the first ``limit`` training images only.
        eval_images: test images on which the card reports each source's fooling rate.
        out: where the weights will be written (recorded in the card's command).
        progress: :data:`advkit.progress.ProgressFn`, called after every Adam step as ``("generator vs SOURCES",
            steps done, total steps, "loss L")`` (``L`` the step's objective, 4 decimals).
        cross_domain: train on ``dataset`` images against sources trained on another dataset of the same image
            shape (Naseer et al.'s cross-domain setting); refused unless asked for, as it is usually a mistake.
        advgan: with ``loss="advgan"``, its settings (:data:`advkit.train.advgan.ADVGAN_DEFAULTS`: ``alpha``,
            ``beta``, ``bound``, ``kappa``, ``gan_loss``, ``ndf``, ``target``); refused with another loss.
        train_data: the images to train on (already loaded; ``limit`` is then ignored), instead of ``dataset``'s
            training split.

    Returns:
        ``(generator, card)``: the trained generator (eval mode) and its card, ready for
        :func:`~advkit.models.generator.save_generator`.

    Raises:
        ValueError: no source, a bad or non-finite setting, or a source that does not fit ``dataset`` (another
            input shape, or, without ``cross_domain``, another training dataset): all before any data is loaded.
    """
    if not sources:
        raise ValueError("train a generator against at least one source model (--source NAME)")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (an L-inf budget in pixel units, e.g. 0.1), got {eps!r}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("ngf", ngf), ("blocks", blocks)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if advgan is not None and loss != "advgan":
        raise ValueError(f"AdvGAN settings apply to loss='advgan' only, got loss={loss!r}")
    if lr is None:
        from advkit.train.advgan import ADVGAN_LR

        lr = ADVGAN_LR if loss == "advgan" else 2e-4
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"the learning rate (--lr) must be a finite number > 0 (the paper's: 2e-4), got {lr!r}")
    models = [load_model(s, dataset=dataset) for s in sources]
    for s, m in zip(sources, models, strict=True):
        check_model_fits(m, s, dataset, "source", same_classes=False, allow_other_dataset=cross_domain,
                         allowed_by="--cross-domain")
    train = train_data if train_data is not None else load_data(dataset, "train", limit=limit)
    c, h, w = train.x.shape[1:]
    if loss == "advgan":
        from advkit.train.advgan import AdvGANStep, advgan_settings

        advgan = advgan_settings(advgan, eps, (c, h, w), getattr(models[0], "num_classes", None))
    for s, m in zip(sources, models, strict=True):
        shape = tuple(getattr(m, "input_shape", (c, h, w)))
        if shape != (c, h, w):
            raise ValueError(f"source {s} takes {shape} inputs but {dataset} images are {(c, h, w)}")
    torch.manual_seed(seed)
    gen = PerturbationGenerator(c, ngf, blocks, h)
    step_fn = AdvGANStep(models, c, advgan, lr) if advgan is not None else None  # after G: D's init draws too
    opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    n = len(train.x)
    per_epoch = -(-n // batch_size)
    total, step, t0 = epochs * per_epoch, 0, time.perf_counter()
    last = float("nan")
    stage = f"generator vs {', '.join(sources)}"
    for _ in range(epochs):
        gen.train()
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            xb = train.x[order[i:i + batch_size]]
            adv = project_linf(gen(xb), xb, eps)
            if step_fn is not None:  # AdvGAN: D's update, then G's L_adv + alpha L_GAN + beta L_hinge
                objective = step_fn.objective(xb, adv)
            else:
                objective = torch.zeros(())
                for m in models:
                    with torch.no_grad():
                        clean = m(xb)
                    objective = objective + generator_loss(m(adv), clean, loss)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            step += 1
            last = float(objective.detach())
            if progress is not None:
                progress(stage, step, total, f"loss {last:.4f}")
    gen.eval()
    test = load_data(dataset, "test", limit=eval_images)
    fooling = {}
    for s, m in zip(sources, models, strict=True):
        with torch.no_grad():
            pred = torch.cat([m(test.x[i:i + 500]).argmax(1) for i in range(0, len(test.x), 500)])
        fooling[m.name if hasattr(m, "name") else s] = round(fooling_rate(gen, m, test.x, pred, eps), 4)
    card = {
        "name": f"generator-{'+'.join(getattr(m, 'name', s) for s, m in zip(sources, models, strict=True))}",
        "paper": PAPERS[loss],
        "dataset": dataset, "data_note": train.note, "train_images": n, "eps": float(eps), "loss": loss,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "limit": limit,
        **({"cross_domain": True} if cross_domain else {}),
        **({"advgan": {**step_fn.settings,
                       "objective": "L_adv + alpha * L_GAN + beta * L_hinge (Xiao et al. 2018, eq. 4)",
                       **step_fn.summary(per_epoch)}} if step_fn is not None else {}),
        "sources": [{"spec": s, "name": getattr(m, "name", s), "sha256": (getattr(m, "card", {}) or {}).get("sha256")}
                    for s, m in zip(sources, models, strict=True)],
        "final_loss": round(last, 4), "train_seconds": round(time.perf_counter() - t0, 1),
        "fooling_rate_test": fooling, "fooling_rate_images": len(test.x),
        "fooling_rate_note": ("share of a class-balanced, seeded sample of test images (advkit.data.load's "
                              "limit) whose source prediction changes"),
        "advkit_version": advkit.__version__,
        "command": train_command(sources, dataset, eps, epochs, seed, loss, limit, ngf, blocks, batch_size, lr, out,
                                 cross_domain, advgan),
    }
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen, card
