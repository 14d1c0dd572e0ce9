"""Adapters for ImageNet models from torchvision and timm, wrapped as pixel-space :class:`Classifier` s.

``load_adapter("torchvision:resnet50")`` or ``load_adapter("timm:resnet50")`` builds the model, takes its
preprocessing from the weights' own metadata (torchvision's ``weights.transforms()``, timm's ``pretrained_cfg``),
and wraps it so that it takes pixels in ``[0, 1]`` of any size, ``(N, 3, H, W)``: a differentiable bilinear resize
to the weights' crop size, then per-channel normalisation, both inside the model (STYLE: the model is the only
place that knows about preprocessing). Neither package is a dependency of advkit: each is imported lazily, and a
missing or broken install is a ``ValueError`` that says how to install it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from advkit.models.frozen import frozen_eval
from advkit.models.wrapper import Classifier, Preprocess

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's Inception v3 and GoogLeNet with ``transform_input=True`` map ImageNet-normalised inputs to the
# ``(x - 0.5) / 0.5`` normalisation their ported weights were trained with, using these hard-coded constants.
_TV_TRANSFORM_INPUT_MEAN = IMAGENET_MEAN
_TV_TRANSFORM_INPUT_STD = IMAGENET_STD

ACCEPTED = "'torchvision:NAME' (e.g. torchvision:resnet50) or 'timm:NAME' (e.g. timm:resnet50.a1_in1k)"


def random_weights_hint(label: str) -> str:
    """How to ask for random weights instead, in each place a model is named (the end of an error message)."""
    return (f"random weights: {label}@random on the command line and in experiment files, "
            f"advkit.models.load({label!r}, weights=None) or load_adapter({label!r}, pretrained=False) in Python")


def random_weights_seed(label: str) -> int:
    """The seed of ``label``'s random weights (``"torchvision:resnet50"``): the first 8 bytes of the SHA-256 of
    the name, as a non-negative 63-bit integer. It depends on the name only, so every process (a resumed run, a
    Ray worker) builds the same weights under one name."""
    return int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big") >> 1


def _seeded(label: str, build: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
    """``build()`` under the global torch RNG seeded by :func:`random_weights_seed`, which is restored after."""
    seed = random_weights_seed(label)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(), seed


def load_adapter(spec: str, pretrained: bool = True, weights: str | None = None) -> Classifier:
    """Build a torchvision or timm ImageNet classifier as a frozen, eval-mode, pixel-space :class:`Classifier`.

    The preprocessing is the weights' own: mean/std, crop size (the model's input size, e.g. 299 px for Inception
    v3), resize size and interpolation are read from torchvision's ``weights.transforms()`` or timm's data config
    and recorded in ``model.card``. The wrapper resizes any input to the crop size with bilinear interpolation
    (see :class:`Resize`) and normalises once. torchvision's Inception v3 and GoogLeNet set ``transform_input=True``
    for pretrained weights (they re-normalise ImageNet-normalised inputs to ``(x - 0.5) / 0.5``); the adapter folds
    that affine map into its own normalisation and sets ``transform_input=False``, so inputs are normalised exactly
    once, to what the weights were trained with.

    Args:
        spec: ``"torchvision:NAME"`` or ``"timm:NAME"`` (a timm name may carry a pretrained tag,
            ``"timm:vit_base_patch16_224.augreg_in21k"``).
        pretrained: load pretrained weights (fetched by torchvision / timm, or read from their local caches);
            ``False`` gives random weights with the same preprocessing and works offline. Random weights are
            drawn from a seed derived from the name (:func:`random_weights_seed`, recorded as ``card["seed"]``),
            so every process builds the same ones; the global torch RNG is left as it was.
        weights: torchvision: the weights enum member (``"IMAGENET1K_V2"``; default: ``DEFAULT``). timm: a
            pretrained tag (``"a1_in1k"``) or a local ``.safetensors`` file with the weights.

    Returns:
        The frozen classifier; input shape ``(3, crop, crop)``, ``num_classes`` logits.

    Raises:
        ValueError: an unknown prefix or model name, a missing or broken optional package (with how to install
            it), weights that cannot be fetched (with how to point at local copies), or ``weights`` given with
            ``pretrained=False``.
    """
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"adapter spec {spec!r} not understood; accepted: {ACCEPTED}")
    if weights is not None and not pretrained:
        raise ValueError(f"weights={weights!r} was given with pretrained=False; drop one of them")
    if source == "torchvision":
        model = _load_torchvision(name, pretrained, weights)
    elif source == "timm":
        model = _load_timm(name, pretrained, weights)
    else:
        raise ValueError(f"unknown adapter prefix {source!r} in {spec!r}; accepted: {ACCEPTED}")
    log.info("loaded %s (pretrained=%s, input %s, %d classes)", spec, pretrained, model.input_shape,
             model.num_classes)
    return model.freeze()


# --- optional imports and errors ---------------------------------------------------------------------------------


def _import_optional(package: str, hint: str) -> ModuleType:
    """Import ``package`` lazily; any failure (not only ``ImportError``) becomes a ``ValueError`` with ``hint``."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:
        why = f"it is not installed ({type(e).__name__}: {e})"
    except Exception as e:  # a broken install: operator mismatches raise RuntimeError, missing libraries OSError
        why = f"it failed to import ({type(e).__name__}: {e})"
    raise ValueError(f"{package} adapters need the optional package {package!r}, but {why}. {hint}")


def _torchvision_hint() -> str:
    version = torch.__version__.split("+")[0]
    parts = version.split(".")
    pair = ""
    if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit():
        pair = f" (torch {parts[0]}.{parts[1]} pairs with torchvision 0.{int(parts[1]) + 15})"
    return (f"Install the torchvision build that matches torch {torch.__version__}{pair}: `pip install torchvision` "
            f"from the same index as torch (CPU builds: --index-url https://download.pytorch.org/whl/cpu).")


def _is_fetch_error(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a failed download: network or missing cache file."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) or "invalid hash value" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


# --- torchvision --------------------------------------------------------------------------------------------------


def _size_pair(value: Any) -> tuple[int, int]:
    """``224``, ``[224]`` or ``[224, 224]`` (torchvision stores sizes as one-element lists) -> ``(224, 224)``."""
    if isinstance(value, int):
        return value, value
    seq = [int(v) for v in value]
    if len(seq) == 1:
        return seq[0], seq[0]
    if len(seq) == 2:
        return seq[0], seq[1]
    raise ValueError(f"cannot read an image size from {value!r}")


def _interp_name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _fold_transform_input(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """Compose ``(x - mean) / std`` with torchvision's ``transform_input`` into one ``(x - mean') / std'``.

    ``transform_input`` maps channel ``c`` as ``z * (s_c / 0.5) + (m_c - 0.5) / 0.5`` (``m, s``: ImageNet
    constants). Composed with ``z = (x - M_c) / S_c`` this is ``(x - mean'_c) / std'_c`` with
    ``std'_c = 0.5 * S_c / s_c`` and ``mean'_c = M_c - S_c * (m_c - 0.5) / s_c``; for the weights' own ImageNet
    mean/std it is exactly ``(x - 0.5) / 0.5``.
    """
    if len(mean) != len(_TV_TRANSFORM_INPUT_MEAN):
        raise ValueError(f"transform_input expects 3 channels, the weights' mean has {len(mean)}")
    new_std = [0.5 * big_s / s for big_s, s in zip(std, _TV_TRANSFORM_INPUT_STD, strict=True)]
    new_mean = [big_m - big_s * (m - 0.5) / s
                for big_m, big_s, m, s in zip(mean, std, _TV_TRANSFORM_INPUT_MEAN, _TV_TRANSFORM_INPUT_STD,
                                              strict=True)]
    return new_mean, new_std


def _probe_num_classes(net: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad(), frozen_eval(net):
        out = net(torch.zeros(1, *shape))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(f"cannot tell the number of classes: the network returned {type(out).__name__}")
    return int(out.shape[1])


def _num_classes(net: nn.Module, categories: Sequence[str] | None, shape: tuple[int, int, int]) -> int:
    """From the weights' categories, else the model's ``num_classes``, else a forward pass on a zero image."""
    if categories:
        return len(categories)
    n = getattr(net, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    return _probe_num_classes(net, shape)


def _load_torchvision(name: str, pretrained: bool, weights: str | None) -> Classifier:
    tv = _import_optional("torchvision", _torchvision_hint())
    models = tv.models
    available = list(models.list_models(module=models))
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        raise ValueError(f"torchvision has no classification model {name!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" ({len(available)} available: torchvision.models.list_models())")
    try:
        enum_cls = models.get_model_weights(name)
    except Exception:  # a builder without weights metadata
        enum_cls = None
    chosen = None
    if enum_cls is not None:
        member = (weights or "DEFAULT").rsplit(".", 1)[-1]
        try:
            chosen = enum_cls[member]
        except KeyError:
            raise ValueError(f"torchvision model {name!r} has no weights {weights!r}; available: "
                             f"{', '.join(m.name for m in enum_cls)}") from None
    elif pretrained:
        raise ValueError(f"torchvision model {name!r} has no pretrained weights; use "
                         f"{random_weights_hint(f'torchvision:{name}')}.")

    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    crop, resize, interpolation, categories = (224, 224), (256, 256), "bilinear", []
    if chosen is not None:
        tf = chosen.transforms()
        mean, std = [float(v) for v in tf.mean], [float(v) for v in tf.std]
        crop, resize = _size_pair(tf.crop_size), _size_pair(tf.resize_size)
        interpolation = _interp_name(tf.interpolation)
        categories = list(chosen.meta.get("categories") or [])
    else:
        log.warning("torchvision:%s has no weights metadata; using ImageNet mean/std at 224 px", name)

    seed = None
    try:
        if pretrained:
            net = models.get_model(name, weights=chosen)
        else:
            net, seed = _seeded(f"torchvision:{name}", lambda: models.get_model(name, weights=None))
    except Exception as e:
        if pretrained and _is_fetch_error(e):
            url = str(getattr(chosen, "url", "") or "")
            filename = os.path.basename(urlparse(url).path) or "the weights file"
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise ValueError(
                f"torchvision:{name}: pretrained weights {chosen.name if chosen else ''} could not be fetched "
                f"({type(e).__name__}: {e}). On a machine without network, download {url or 'them'} elsewhere and "
                f"put {filename} into {hub} (set TORCH_HOME to use another cache root: it reads "
                f"$TORCH_HOME/hub/checkpoints); or use {random_weights_hint(f'torchvision:{name}')}."
            ) from e
        raise

    card: dict[str, Any] = {"source": "torchvision", "torchvision_version": str(getattr(tv, "__version__", "?"))}
    if seed is not None:
        card["seed"] = seed
    folded = bool(getattr(net, "transform_input", False))
    if folded:
        card["weights_mean"], card["weights_std"] = mean, std
        mean, std = _fold_transform_input(mean, std)
        net.transform_input = False
    card["transform_input_folded"] = folded
    return _wrap(net, f"torchvision:{name}", name, chosen.name if (pretrained and chosen) else None, pretrained,
                 mean, std, crop, resize, interpolation, categories, card)


# --- timm ---------------------------------------------------------------------------------------------------------


def _cfg_dict(model: nn.Module) -> dict[str, Any]:
    """A timm model's ``pretrained_cfg`` (older timm: ``default_cfg``; a dataclass in some versions) as a dict."""
    cfg: Any = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def _timm_data_config(timm: ModuleType, model: nn.Module) -> dict[str, Any]:
    """The model's data config: ``timm.data.resolve_data_config`` when timm has it, else ``pretrained_cfg``."""
    resolve = getattr(getattr(timm, "data", None), "resolve_data_config", None)
    if resolve is not None:
        return dict(resolve({}, model=model))
    cfg = _cfg_dict(model)
    return {"input_size": tuple(cfg.get("input_size", (3, 224, 224))),
            "mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD)),
            "interpolation": cfg.get("interpolation", "bicubic"), "crop_pct": cfg.get("crop_pct", 0.875)}


def _load_timm(name: str, pretrained: bool, weights: str | None) -> Classifier:
    timm = _import_optional("timm", "Install it with `pip install timm` (it needs torchvision as well).")
    kwargs: dict[str, Any] = {}
    model_name = name
    if weights is not None:
        if weights.endswith(".safetensors") or os.sep in weights or Path(weights).is_file():
            path = Path(weights)
            if path.suffix != ".safetensors" or not path.is_file():
                raise ValueError(f"timm:{name}: local weights must be an existing .safetensors file, got {weights!r}"
                                 f" (advkit never unpickles; convert .pth files with safetensors.torch.save_file)")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        else:
            model_name = f"{name.split('.', 1)[0]}.{weights}"
    seed = None
    try:
        if pretrained:
            net = timm.create_model(model_name, pretrained=True, **kwargs)
        else:
            net, seed = _seeded(f"timm:{model_name}", lambda: timm.create_model(model_name, pretrained=False,
                                                                                **kwargs))
    except Exception as e:
        if "unknown model" in str(e).lower():
            raise ValueError(f"timm has no model {model_name!r} (see timm.list_models())") from e
        if pretrained and _is_fetch_error(e):
            raise ValueError(
                f"timm:{model_name}: pretrained weights could not be fetched ({type(e).__name__}: {e}). timm reads "
                f"them from the Hugging Face Hub cache: point HF_HOME (or HF_HUB_CACHE) at a cache that holds them "
                f"and set HF_HUB_OFFLINE=1, or pass weights='/path/to/model.safetensors'; "
                f"or use {random_weights_hint(f'timm:{model_name}')}."
            ) from e
        raise
    cfg = _timm_data_config(timm, net)
    c, h, w = (int(v) for v in cfg["input_size"])
    mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    if len(mean) == 1 and c > 1:  # a grey mean/std for a colour model: one value per channel
        mean, std = mean * c, std * c
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    resize = (int(h / crop_pct), int(w / crop_pct))
    pcfg = _cfg_dict(net)
    tag = pcfg.get("tag")
    card: dict[str, Any] = {"source": "timm", "timm_version": str(getattr(timm, "__version__", "?")),
                            "crop_pct": crop_pct, "transform_input_folded": False}
    if seed is not None:
        card["seed"] = seed
    if "file" in kwargs.get("pretrained_cfg_overlay", {}):
        card["weights_file"] = kwargs["pretrained_cfg_overlay"]["file"]
    categories = list(pcfg.get("label_names") or [])
    return _wrap(net, f"timm:{model_name}", model_name, (tag or weights or "default") if pretrained else None,
                 pretrained, mean, std, (h, w), resize, _interp_name(cfg.get("interpolation", "bilinear")),
                 categories, card)


# --- the wrapper --------------------------------------------------------------------------------------------------


def _wrap(net: nn.Module, label: str, model_name: str, weights_name: str | None, pretrained: bool,
          mean: Sequence[float], std: Sequence[float], crop: tuple[int, int], resize: tuple[int, int],
          interpolation: str, categories: Sequence[str], card: dict[str, Any]) -> Classifier:
    """Wrap ``net`` with resize + normalise and a card recording where its preprocessing came from."""
    shape = (len(mean), crop[0], crop[1])
    net.eval()
    n_classes = _num_classes(net, categories, shape)
    card.update({
        "name": label, "arch": label, "model": model_name, "weights": weights_name, "pretrained": pretrained,
        "input_shape": list(shape), "num_classes": n_classes, "mean": list(mean), "std": list(std),
        "crop_size": list(crop), "resize_size": list(resize), "interpolation": interpolation,
        "resize_mode": "bilinear", "torch_version": torch.__version__,
    })
    if categories and len(categories) == n_classes:
        card["classes"] = list(categories)
    preprocess = Preprocess(crop, mean, std, mode="bilinear")
    return Classifier(net, mean, std, shape, n_classes, name=label, card=card, preprocess=preprocess)
