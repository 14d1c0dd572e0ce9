"""Models: the architecture registry, the zoo's shipped checkpoints, the pixel-space wrapper, safetensors
checkpoints with model cards, and optional torchvision / timm adapters (imported lazily); training is
:mod:`advkit.train`.

``advkit.models.load("resnet20", dataset="fashion-mnist")`` returns the wrapped, frozen, eval-mode model from the
shipped zoo; it also accepts a checkpoint path, ``"torchvision:NAME"``,
``"timm:NAME"`` and ``"ensemble:A+B"`` (:func:`ensemble`).
``advkit.models.list()`` lists architectures and shipped checkpoints with their metadata.
``advkit.models.wrap(net, mean=..., std=..., input_shape=..., num_classes=...)`` wraps a network already in memory
(a timm model needs no arguments); architectures of other installed packages come in through the entry-point
group ``advkit.architectures`` (:mod:`advkit.models.registry`).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advkit.models.checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from advkit.models.ensemble import Ensemble, ensemble, is_ensemble_name, parse_name, split_weights
from advkit.models.frozen import frozen_eval
from advkit.models.own import wrap
from advkit.models.registry import ArchSpec, arch_names, get_arch, name_scheme, register_arch
from advkit.models.wrapper import Classifier, Normalize, check_input_shape

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATORS = "generators"  # WEIGHTS_DIR/generators: the shipped perturbation generators, not classifiers
UNIVERSAL = "universal"    # WEIGHTS_DIR/universal: the shipped universal perturbations


@dataclass(frozen=True)
class ModelInfo:
    """One row of :func:`list`: an architecture, and the shipped checkpoint if there is one."""

    name: str
    arch: str
    family: str
    connections: str
    paper: str
    dataset: str | None
    test_accuracy: float | None
    params: int | None
    path: str | None
    command: str | None


def zoo_path(name: str, dataset: str = "fashion-mnist") -> Path:
    """Path of the shipped checkpoint ``name`` for ``dataset`` (it may not exist)."""
    return WEIGHTS_DIR / dataset / f"{name}.safetensors"


def shipped(dataset: str | None = None) -> builtins.list[Path]:
    """Paths of the shipped checkpoints (for one dataset or all), sorted."""
    pattern = f"{dataset}/*.safetensors" if dataset else "*/*.safetensors"
    return sorted(p for p in WEIGHTS_DIR.glob(pattern) if p.parent.name not in (GENERATORS, UNIVERSAL))


def adversarially_trained(card: dict[str, Any]) -> bool:
    """Whether a model card says its model was trained on adversarial examples (FGSM, PGD or ensemble adversarial
    training: an ``adversarial_training`` entry, or a recipe with ``adversarial`` set). Studies that pick their
    sources and targets from the zoo by themselves take only plainly trained models unless robust ones are asked
    for: a robust source makes a newcomer's first table look as if the attacks failed."""
    recipe = card.get("recipe")
    return bool(card.get("adversarial_training") or (isinstance(recipe, dict) and recipe.get("adversarial")))


def _check_device(device: str | torch.device) -> None:
    """``ValueError`` naming the fix unless ``device`` is one this machine has (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
    ``"mps"``, ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ValueError("device='meta' keeps shapes without weights, so the model could not classify; use 'cpu' "
                         "or 'cuda'")
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        build = f"this torch {torch.__version__} is built without CUDA" if dev.type == "cuda" and \
            torch.version.cuda is None else f"torch {torch.__version__} sees no {dev.type} device here"
        raise ValueError(f"device={device!r}: {build}; use device='cpu' (or install a torch build for your GPU)")
    count = getattr(getattr(torch, dev.type, None), "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise ValueError(f"device={device!r}: this machine has {count()} {dev.type} device(s), numbered from 0")


def load(name: str, dataset: str = "fashion-mnist", *, device: str | None = None,
         weights: str | None = "default") -> Classifier:
    """Load a frozen, eval-mode classifier that takes pixels in ``[0, 1]``.

    Args:
        name: a zoo name (``"resnet20"``, see :func:`list`), a path to a ``.safetensors`` checkpoint with its
            JSON card, ``"torchvision:NAME"`` or ``"timm:NAME"`` (pretrained weights where available), or
            ``"ensemble:A+B[+C...]"`` with an optional final ``@logits`` (default), ``@probs`` or ``@loss`` and
            optional member weights in brackets (``ensemble:A+B@logits[3,1]``): an
            :class:`~advkit.models.ensemble.Ensemble` of the named models (:func:`ensemble`).
        dataset: which zoo a bare name refers to.
        device: move the model there (``"cuda"``, ``"cpu"``); default: leave on CPU.
        weights: for ``torchvision:`` / ``timm:`` models: ``"default"`` (the pretrained default), ``None`` (random
            weights with the same preprocessing: offline, for speed tests and pipelines), or a weights tag
            (``"IMAGENET1K_V2"``, a timm tag or a local ``.safetensors`` file). In a name, ``NAME@random`` and
            ``NAME@TAG`` say the same (``"torchvision:resnet18@random"``), so experiment files and the CLI can
            too. Zoo models and checkpoints carry their own weights and take only ``"default"``.

    Raises:
        ValueError: unknown name (listing the shipped ones), a missing optional package for an adapter, or a
            device this machine does not have.
        CheckpointError: the checkpoint is refused or corrupt.
    """
    if device is not None:
        _check_device(device)
    scheme = name_scheme(name)
    if scheme is not None:  # a later layer's names (defended:...); weights go in the inner name
        built = scheme(name, dataset)
        return built.to(device) if device is not None else built  # type: ignore[return-value]
    if is_ensemble_name(name):
        if weights != "default":
            raise ValueError(f"weights={weights!r} does not apply to an ensemble; name each member's weights in "
                             f"the name (ensemble:torchvision:resnet18@random+...)")
        base, member_weights = split_weights(name)
        specs, fuse = parse_name(base)
        return ensemble([load(s, dataset, device=device) for s in specs], fuse=fuse, weights=member_weights)
    model: Classifier
    if name.startswith(("torchvision:", "timm:")):
        from advkit.models import adapters

        spec, at, tag = name.partition("@")
        if at:
            if weights != "default":
                raise ValueError(f"{name!r} names its weights after '@' and weights={weights!r} was given too; "
                                 f"use one of them")
            if not tag:
                raise ValueError(f"{name!r}: nothing after '@'; write NAME@random or NAME@TAG (e.g. "
                                 f"torchvision:resnet50@IMAGENET1K_V2)")
            weights = None if tag.lower() in ("random", "none") else tag
        if weights is None:
            model = adapters.load_adapter(spec, pretrained=False)
        else:
            model = adapters.load_adapter(spec, weights=None if weights == "default" else weights)
    elif weights != "default":
        raise ValueError(f"weights={weights!r} applies to torchvision:/timm: models only; {name!r} carries its own "
                         f"weights")
    elif name.endswith(".safetensors") or "/" in name or Path(name).suffix:
        model = load_checkpoint(name)
    else:
        path = zoo_path(name, dataset)
        if not path.is_file():
            have = [p.stem for p in shipped(dataset)]
            hint = f"shipped for {dataset}: {', '.join(have) or 'none'}"
            if name in arch_names():
                raise ValueError(f"architecture {name!r} has no shipped checkpoint for {dataset} ({hint}); train "
                                 f"one with `advkit train {name} --dataset {dataset} --out {name}.safetensors`")
            raise ValueError(f"unknown model {name!r} ({hint}); also accepted: a .safetensors path, "
                             f"torchvision:NAME, timm:NAME")
        model = load_checkpoint(path)
    if device is not None:
        model = model.to(device)
    return model


def list(dataset: str | None = None) -> builtins.list[ModelInfo]:  # noqa: A001 - the issue names it list()
    """Every architecture, with one row per shipped checkpoint (and one row without for untrained ones)."""
    rows: builtins.list[ModelInfo] = []
    trained: set[str] = set()
    for p in shipped(dataset):
        card: dict[str, Any] = json.loads(p.with_suffix(".json").read_text())
        spec = get_arch(card["arch"])
        trained.add(card["arch"])
        n_params = card.get("params")
        rows.append(ModelInfo(card.get("name", p.stem), card["arch"], spec.family, spec.connections, spec.paper,
                              card["dataset"], card.get("test_accuracy"), n_params, str(p), card.get("command")))
    for a in arch_names():
        if a not in trained:
            spec = get_arch(a)
            rows.append(ModelInfo(a, a, spec.family, spec.connections, spec.paper, None, None, None, None, None))
    return rows


__all__ = [
    "ArchSpec", "CheckpointError", "Classifier", "Ensemble", "ModelInfo", "Normalize", "WEIGHTS_DIR",
    "adversarially_trained",
    "arch_names",
    "check_input_shape", "ensemble", "frozen_eval",
    "get_arch", "list", "load", "load_checkpoint", "read_card", "register_arch", "save_checkpoint", "shipped",
    "wrap", "zoo_path",
]
