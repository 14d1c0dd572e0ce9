"""Your own network, already in memory, as the classifier every attack sees.

``advkit.models.wrap(net, mean=..., std=..., input_shape=..., num_classes=...)`` puts the normalisation inside
(foolbox's ``PyTorchModel(model, bounds=(0, 1), preprocessing=...)``), so the result takes pixels in ``[0, 1]``
and returns logits, like every model :func:`advkit.models.load` returns. A timm model carries its preprocessing
in ``pretrained_cfg`` (older timm: ``default_cfg``): ``wrap(timm_model)`` needs no arguments.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advkit.models.adapters import _cfg_dict
from advkit.models.frozen import frozen_eval
from advkit.models.wrapper import Classifier

__all__ = ["wrap"]


def wrap(net: nn.Module, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         input_shape: Sequence[int] | None = None, num_classes: int | None = None,
         name: str | None = None) -> Classifier:
    """Wrap a network that is already in memory: ``logits = net((x - mean) / std)`` for pixels ``x`` in ``[0, 1]``.

    Each value not given is read from timm's ``pretrained_cfg`` (``mean``, ``std``, ``input_size``; the class
    count from the model's ``num_classes``, which follows a replaced head, else the cfg's), so a timm model needs
    no arguments; a value given overrides the cfg. The network is put in eval mode and its parameters stop
    requiring gradients, as for :func:`advkit.models.load` (``net`` itself is changed: it is not copied), and one
    forward pass on a zero image of ``input_shape`` checks that it returns ``num_classes`` logits.

    Args:
        net: the network, taking normalised ``(N, C, H, W)`` inputs and returning ``(N, num_classes)`` logits.
        mean: per-channel mean the network was trained with (one value, or one per channel); ``(0,)`` with
            ``std=(1,)`` for a network that takes raw pixels in ``[0, 1]``.
        std: per-channel standard deviation, each > 0.
        input_shape: ``(C, H, W)`` of the pixel images it classifies.
        num_classes: the number of logits, >= 2.
        name: a label for reports (default: timm's architecture name, else the network's class name).

    Returns:
        A frozen, eval-mode :class:`~advkit.models.wrapper.Classifier` whose ``card`` records the preprocessing
        and where each value came from.

    Raises:
        ValueError: a value that is missing (saying how to pass it) or out of range, a network that is already an
            advkit classifier, or a forward pass that fails or returns other than ``(1, num_classes)`` logits.
    """
    if isinstance(net, Classifier):
        raise ValueError(f"{net.name!r} is already an advkit Classifier (it normalises its inputs itself); use it "
                         f"as it is, or wrap its network: wrap(model.net, ...)")
    if not isinstance(net, nn.Module):
        raise ValueError(f"wrap() takes a torch.nn.Module, got {type(net).__name__}")
    cfg = _cfg_dict(net)
    given = {"mean": mean, "std": std, "input_shape": input_shape, "num_classes": num_classes}
    head = getattr(net, "num_classes", None)  # timm: the head's size, also after create_model(num_classes=K)
    found = {"mean": cfg.get("mean"), "std": cfg.get("std"), "input_shape": cfg.get("input_size"),
             "num_classes": head if isinstance(head, int) and not isinstance(head, bool) else cfg.get("num_classes")}
    values: dict[str, Any] = {k: v if v is not None else found[k] for k, v in given.items()}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"wrap({type(net).__name__}): {', '.join(missing)} not given and the network has no timm "
                         f"pretrained_cfg stating {'it' if len(missing) == 1 else 'them'}; pass "
                         f"{'it' if len(missing) == 1 else 'them'} as keyword arguments, e.g. wrap(net, "
                         f"{', '.join(f'{k}={_EXAMPLES[k]}' for k in missing)})"
                         + (" (mean and std: the normalisation it was trained with; mean=(0,), std=(1,) if it takes "
                            "raw pixels in [0, 1])" if {"mean", "std"} & set(missing) else ""))
    shape = _shape(values["input_shape"])
    c = shape[0]
    mu, sigma = _channels(values["mean"], "mean", c), _channels(values["std"], "std", c)
    if any(s <= 0 for s in sigma):
        raise ValueError(f"std must be positive (it divides the pixels), got {tuple(values['std'])}")
    k = values["num_classes"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (the number of logits), got {k!r}")
    label = name or str(cfg.get("architecture") or type(net).__name__)
    card: dict[str, Any] = {
        "name": label, "arch": type(net).__name__, "source": "wrap", "input_shape": list(shape), "num_classes": k,
        "mean": mu, "std": sigma,
        "read_from_model": sorted(key for key, v in given.items() if v is None),
    }
    model = Classifier(net, mu, sigma, shape, k, name=label, card=card)
    model.preprocess.to(_device(net))
    _check_forward(model, shape, k)
    return model.freeze()


_EXAMPLES = {"mean": "(0.485, 0.456, 0.406)", "std": "(0.229, 0.224, 0.225)", "input_shape": "(3, 224, 224)",
             "num_classes": "1000"}


def _shape(value: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(value)
    except TypeError:
        dims = ()
    if len(dims) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"input_shape must be (C, H, W), three positive integers such as (3, 224, 224), got "
                         f"{value!r}")
    return (dims[0], dims[1], dims[2])


def _channels(value: Any, what: str, c: int) -> list[float]:
    """One finite number per channel (a single value is used for every channel)."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, c) or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{what} needs one number per channel ({c}, from input_shape) or a single number, got "
                         f"{value!r}")
    return numbers * c if len(numbers) == 1 else numbers


def _device(net: nn.Module) -> torch.device:
    """Where the network's first parameter (or buffer) lives; CPU for a network without either."""
    for t in itertools.chain(net.parameters(), net.buffers()):
        return t.device
    return torch.device("cpu")


def _check_forward(model: Classifier, shape: tuple[int, int, int], k: int) -> None:
    """``ValueError`` unless the wrapped network maps one zero image to ``(1, k)`` logits."""
    x = torch.zeros(1, *shape, device=_device(model.net))
    try:
        with torch.no_grad(), frozen_eval(model):
            out = model(x)
    except Exception as e:  # any failure of the user's forward: report it with the shape that was tried
        raise ValueError(f"{model.name}: the forward pass on a zero image of input_shape {shape} failed "
                         f"({type(e).__name__}: {e}); check input_shape (C, H, W) and that the network takes "
                         f"(N, C, H, W) batches") from e
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{model.name}: the network returned a {type(out).__name__}, not a tensor of logits; wrap "
                         f"a module whose forward returns the (N, num_classes) logits (e.g. one that returns "
                         f"output.logits)")
    if tuple(out.shape) != (1, k):
        hint = f"pass num_classes={out.shape[1]} if that is its class count, or " if out.ndim == 2 else ""
        raise ValueError(f"{model.name}: the network returned shape {tuple(out.shape)} for one image, expected "
                         f"(1, {k}) logits; {hint}check that it returns logits and not features")
