"""Computing a universal adversarial perturbation for one source model (Moosavi-Dezfooli et al., CVPR 2017) and
its card: the library behind ``advkit train-uap`` and the cross-domain study.

The algorithm itself is :func:`advkit.train.deepfool.universal_perturbation`; this module picks the images,
measures the result on held-out test images and records what reproduces it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

import advkit
from advkit.data import load as load_data
from advkit.models import load as load_model
from advkit.progress import ProgressFn
from advkit.train.deepfool import universal_perturbation
from advkit.train.fit import check_model_fits

__all__ = ["NORMS", "check_uap_settings", "train_uap", "uap_command"]

NORMS = ("linf", "l2")


def check_uap_settings(eps: float, norm: str, images: int, max_passes: int, delta: float) -> None:
    """Raise ``ValueError`` naming the first bad setting (before any model or data is loaded)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be linf or l2, got {norm!r}")
    if (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0
            or (norm == "linf" and eps > 1)):
        raise ValueError(f"eps must be in (0, 1] for an L-inf radius in pixel units (e.g. 0.1), or > 0 for an L2 "
                         f"one; got {eps!r}")
    for name, v in (("images", images), ("max_passes", max_passes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (the target fooling rate is 1 - delta), got {delta!r}")


def uap_command(source: str, dataset: str, eps: float, norm: str, images: int, max_passes: int, delta: float,
                seed: int, subset: str, out: str, cross_domain: bool = False) -> str:
    """The ``advkit train-uap`` command that reproduces a perturbation."""
    return (f"advkit train-uap --source {source} --dataset {dataset} --eps {eps:g} --norm {norm} --images {images} "
            f"--max-passes {max_passes} --delta {delta:g} --seed {seed} --subset {subset}"
            f"{' --cross-domain' if cross_domain else ''} --out {out}")


def train_uap(source: str, dataset: str = "fashion-mnist", *, eps: float = 0.1, norm: str = "linf",
              images: int = 1000, max_passes: int = 10, delta: float = 0.2, seed: int = 0, subset: str = "first",
              eval_images: int = 1000, out: str = "uap.safetensors",
              progress: ProgressFn | None = None, cross_domain: bool = False
              ) -> tuple[torch.Tensor, dict[str, Any]]:
    """A universal perturbation for ``source`` from ``images`` training images of ``dataset``, and its card.

    Args:
        source: a model name or path (:func:`advkit.models.load`).
        dataset: the images it is computed on (train split).
        eps, norm: the radius ``xi`` and its norm.
        images: training images used.
        max_passes, delta: at most ``max_passes`` passes, stopping once ``1 - delta`` of the images are fooled.
        seed: the order in which the images are visited, and with ``subset="random"`` which images.
        subset: ``"first"`` (the first ``images`` of the split) or ``"random"`` (drawn with ``seed``).
        eval_images: test images (a class-balanced, seeded sample) on which the card reports the fooling rate.
        out: where it will be written (for the card's command).
        progress: :data:`advkit.progress.ProgressFn` over the passes (see
            :func:`~advkit.train.deepfool.universal_perturbation`).
        cross_domain: compute it on ``dataset`` images for a source trained on another dataset of the same image
            shape; refused unless asked for, as it is usually a mistake.

    Returns:
        ``(v, card)``: the perturbation ``(C, H, W)`` and its card, for
        :func:`~advkit.models.universal.save_universal`.

    Raises:
        ValueError: a bad setting (:func:`check_uap_settings`), or a source that does not fit ``dataset``
            (another input shape, or, without ``cross_domain``, another training dataset), before any data is
            loaded.
    """
    check_uap_settings(eps, norm, images, max_passes, delta)
    model = load_model(source, dataset=dataset)
    check_model_fits(model, source, dataset, "source", same_classes=False, allow_other_dataset=cross_domain,
                     allowed_by="--cross-domain")
    data = load_data(dataset, "train", limit=images, subset=subset, seed=seed)
    t0 = time.perf_counter()
    v, fooling = universal_perturbation(model, data.x, xi=eps, norm=norm, delta=delta, max_passes=max_passes,
                                        seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    test = load_data(dataset, "test", limit=eval_images)
    with torch.no_grad():
        clean = torch.cat([model(test.x[i:i + 500]).argmax(1) for i in range(0, len(test.x), 500)])
        adv = torch.cat([model((test.x[i:i + 500] + v).clamp(0, 1)).argmax(1) for i in range(0, len(test.x), 500)])
    card = {"name": f"uap-{model.name}", "paper": "Moosavi-Dezfooli et al. 2017", "dataset": dataset,
            "data_note": data.note, "images": len(data.x), "subset": subset, "eps": float(eps), "norm": norm,
            "delta": delta, "max_passes": max_passes, "seed": seed, **({"cross_domain": True} if cross_domain else {}),
            "source": {"spec": source, "name": model.name, "sha256": model.card.get("sha256")},
            "fooling_rate_train_per_pass": [round(r, 4) for r in fooling],
            "fooling_rate_test": round(float((adv != clean).float().mean()), 4), "fooling_rate_images": len(test.x),
            "seconds": round(seconds, 1), "advkit_version": advkit.__version__,
            "command": uap_command(source, dataset, eps, norm, images, max_passes, delta, seed, subset, out,
                                   cross_domain)}
    return v, card
