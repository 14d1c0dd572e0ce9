"""The cross-domain experiment's parts: what a run measures (:class:`CrossDomainSetup`, the full and quick
versions, their validation), how a trained generator or universal perturbation is applied to another domain's
images (:func:`match_shape`, :func:`apply_artefact`: the artefact attacks themselves), and the records of a trained
artefact and a measured method. :mod:`advkit.reproduce.cross_domain` runs the experiment with them and
:mod:`advkit.reproduce.cross_domain_report` writes its files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks import Attack, attack_batched
from advkit.attacks.artefact.generator import GeneratorAttack
from advkit.attacks.artefact.universal import UniversalAttack
from advkit.data import get_spec
from advkit.models import shipped

__all__ = ["FULL", "QUICK", "Artefact", "CrossDomainSetup", "Method", "apply_artefact", "artefact_shape",
           "held_out", "match_shape", "target_models", "validate_setup"]


@dataclass(frozen=True)
class CrossDomainSetup:
    """What a cross-domain run measures.

    Attributes:
        datasets: the domains; every host is trained on each and every artefact applied to each.
        hosts: models (zoo names, loaded in each domain) the generators and universal perturbations are trained on.
        surrogates: in-domain models I-FGSM (and, for those with skip connections, SGM) are crafted on.
        targets: per domain, the models measured; a domain not named gets every shipped classifier of it.
        eps: the L-inf budget, shared by every method and domain.
        seeds: training and sampling seeds (at least 3 for intervals worth the name).
        images: evaluation images per domain and seed (a random sample of the test split).
        generator_images, generator_epochs: the generators' training set (the first N training images) and passes.
        uap_images, uap_passes: the universal perturbations' training images (drawn per seed) and passes at most.
        steps: I-FGSM / SGM iterations (step eps / steps).
        resize: allow domains of different shapes (see the module docstring).
        quick: a smoke-sized run (the report says so).
    """

    datasets: tuple[str, ...] = ("fashion-mnist", "mnist")
    hosts: tuple[str, ...] = ("lenet", "resnet20")
    surrogates: tuple[str, ...] = ("lenet", "resnet20")
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    eps: float = 0.2
    seeds: tuple[int, ...] = (0, 1, 2)
    images: int = 1000
    generator_images: int | None = 20000
    generator_epochs: int = 1
    uap_images: int = 200
    uap_passes: int = 3
    steps: int = 10
    resize: bool = False
    quick: bool = False


FULL = CrossDomainSetup()
QUICK = CrossDomainSetup(
    hosts=("lenet",), images=200, generator_images=2000, uap_images=50, uap_passes=2, quick=True,
    targets={"fashion-mnist": ("lenet", "resnet20", "vgg11_bn", "densenet_bc40", "mlp", "maxout"),
             "mnist": ("lenet", "resnet20", "lenet_subset", "maxout", "maxout_advtrain", "linear")})

EPS_NOTE = ("eps 0.2 is shared by both domains: Fashion-MNIST's usual budget is 0.1 and MNIST's 0.3, and at 0.1 the "
            "MNIST models resist even white-box I-FGSM (the shipped MNIST LeNet: 6.4%), while at 0.3 random noise "
            "alone fools most Fashion-MNIST models (86-88% on the residual ones), which leaves no room to see an "
            "attack above the control. 0.2 is the middle ground; pass --eps to measure another.")


# ----------------------------------------------------------------------------------------------------- validation
def _shape(dataset: str) -> tuple[int, int, int]:
    spec = get_spec(dataset)
    if spec.loader is not None:
        raise ValueError(f"{dataset}: the cross-domain study needs datasets of a fixed shape with shipped or named "
                         f"models (fashion-mnist, mnist, cifar10); image folders are not supported here")
    return tuple(int(v) for v in spec.shape)  # type: ignore[return-value]


def validate_setup(setup: CrossDomainSetup) -> None:
    """Raise ``ValueError`` naming the first problem, before any model, data or file is touched."""
    ds = setup.datasets
    if len(ds) < 2 or len(set(ds)) != len(ds):
        raise ValueError(f"give at least two different datasets (--datasets fashion-mnist,mnist), got {list(ds)}")
    shapes = {d: _shape(d) for d in ds}
    if len(set(shapes.values())) > 1 and not setup.resize:
        desc = ", ".join(f"{d} {'x'.join(map(str, s))}" for d, s in shapes.items())
        raise ValueError(f"the datasets differ in shape ({desc}): a generator or perturbation trained on one cannot "
                         f"be added to the other's images as is. Pass --resize to carry each host's perturbation "
                         f"to the other shape (bilinear; grey repeated to colour, colour averaged to grey), or "
                         f"compare datasets of one shape")
    for d, s in shapes.items():
        for e, t in shapes.items():
            if s[0] != t[0] and 1 not in (s[0], t[0]):
                raise ValueError(f"{d} has {s[0]} channels and {e} {t[0]}: only grey <-> colour (1 <-> 3) or equal "
                                 f"channel counts can be carried across")
    if isinstance(setup.eps, bool) or not isinstance(setup.eps, (int, float)) or not 0 < setup.eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (an L-inf budget in pixel units, e.g. 0.2), got {setup.eps!r}")
    if not setup.seeds or len(set(setup.seeds)) != len(setup.seeds) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in setup.seeds):
        raise ValueError(f"seeds must be distinct integers >= 0 (e.g. --seeds 0,1,2), got {list(setup.seeds)}")
    if not setup.hosts:
        raise ValueError("name at least one host model (--hosts lenet,resnet20)")
    for name in ("images", "generator_epochs", "uap_images", "uap_passes", "steps"):
        v = getattr(setup, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if setup.generator_images is not None and setup.generator_images < 1:
        raise ValueError(f"generator_images must be >= 1 (or None: the whole training split), got "
                         f"{setup.generator_images!r}")
    unknown = sorted(set(setup.targets) - set(ds))
    if unknown:
        raise ValueError(f"targets name datasets not in the run: {', '.join(unknown)} (datasets: {', '.join(ds)})")


def target_models(setup: CrossDomainSetup, dataset: str) -> tuple[str, ...]:
    if dataset in setup.targets:
        return tuple(setup.targets[dataset])
    names = tuple(p.stem for p in shipped(dataset))
    if not names:
        raise ValueError(f"{dataset} has no shipped models to measure; name them: targets={{'{dataset}': (...)}} "
                         f"(--target {dataset}=PATH.safetensors)")
    return names


# ----------------------------------------------------------------------------------------------------- carrying
def match_shape(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t`` ``(N, C, H, W)`` carried to ``(N, *shape)``: grey repeated to colour or colour averaged to grey, then
    bilinear resizing; the identity when the shapes already agree."""
    c, h, w = (int(v) for v in shape)
    if t.shape[1] != c:
        if t.shape[1] == 1:
            t = t.expand(-1, c, -1, -1)
        elif c == 1:
            t = t.mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot carry {t.shape[1]} channels to {c}")
    if tuple(t.shape[2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t


class _Carried(nn.Module):
    """``model`` fed images of another shape, carried to its own first (the artefact attack's success check)."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.shape = model, shape
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(match_shape(x, self.shape))


def artefact_shape(attack: Attack) -> tuple[int, ...]:
    """The image shape ``(C, H, W)`` a ``generator:PATH`` or ``uap:PATH`` attack was trained for."""
    if isinstance(attack, UniversalAttack):
        assert attack.perturbation is not None
        return tuple(attack.perturbation.shape)
    if isinstance(attack, GeneratorAttack):
        return tuple(int(v) for v in attack.card["input_shape"])
    raise ValueError(f"{attack.name} is not a trained artefact's attack: give generator:PATH or uap:PATH")


def apply_artefact(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 250) -> torch.Tensor:
    """The adversarial images of a trained artefact's attack (``generator:PATH`` or ``uap:PATH``) for ``x``
    ``(N, C, H, W)``, within the attack's eps and ``[0, 1]``.

    Images of the artefact's own shape go through the attack itself (:func:`advkit.attacks.attack_batched`;
    ``model``, a classifier of ``x``'s domain, serves only its success check). Images of another shape are carried:
    a generator's perturbation is made on the images carried to its shape (the attack again, on ``model`` behind
    the carrying) and carried back; a universal perturbation is carried to ``x``'s shape (:func:`match_shape`);
    either is projected onto eps and ``[0, 1]`` around ``x``.
    """
    shape, own = artefact_shape(attack), tuple(x.shape[1:])
    if own == shape:
        return attack_batched(attack, model, x, y, batch_size=batch_size).x_adv
    if isinstance(attack, UniversalAttack):
        assert attack.perturbation is not None
        return attack.project(x + match_shape(attack.perturbation[None], own)[0], x)
    xh = match_shape(x, shape)
    x_adv = attack_batched(attack, _Carried(model, own), xh, y, batch_size=batch_size).x_adv
    delta = match_shape(x_adv - xh, own).clamp(-attack.eps, attack.eps)
    return (x + delta).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------- artefacts
@dataclass
class Artefact:
    kind: str           # "generator" | "uap"
    dataset: str        # the domain it was trained on
    host: str
    seed: int
    path: Path
    card: dict[str, Any]
    reused: bool
    attack: Attack      # generator:PATH or uap:PATH at the run's eps

    def record(self, root: Path) -> dict[str, Any]:
        c = self.card
        return {"kind": self.kind, "dataset": self.dataset, "host": self.host, "seed": self.seed,
                "path": str(self.path.relative_to(root)), "sha256": c.get("sha256"), "reused": self.reused,
                "seconds": c.get("train_seconds", c.get("seconds")),
                "host_fooling_rate_test": (c["fooling_rate_test"] if self.kind == "uap"
                                           else next(iter(c["fooling_rate_test"].values()))),
                "command": c.get("command")}


@dataclass(frozen=True)
class Method:
    id: str
    kind: str           # generator | uap | ifgsm | sgm | noise
    trained_on: str     # the domain the attacker's model or data came from ("-" for the control)
    host: str           # host / surrogate model name ("-" for the control)

    def relation(self, dataset: str) -> str:
        if self.kind == "noise":
            return "control"
        return "in-domain" if self.trained_on == dataset else "cross-domain"

    def label(self, dataset: str) -> str:
        if self.kind == "noise":
            return "random-sign noise"
        name = {"generator": "generator", "uap": "UAP", "ifgsm": "I-FGSM", "sgm": "SGM"}[self.kind]
        where = "" if self.trained_on == dataset else f"from {self.trained_on} "
        return f"{name} {where}on {self.host}"


def held_out(setup: CrossDomainSetup, targets: tuple[str, ...]) -> list[str]:
    """The targets of a domain that are neither a host nor a surrogate: every method's transfer mean is over
    these, so the rows of a domain's headline compare on one target set and none of it is white-box."""
    attacker = set(setup.hosts) | set(setup.surrogates)
    return [t for t in targets if t not in attacker]
