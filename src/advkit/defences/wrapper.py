"""A defended model: an input transformation applied to the pixels before a classifier.

``wrap(model, name, **settings)`` returns a :class:`Defended` model, a
:class:`~advkit.models.Classifier` whose ``preprocess`` is the defence's :class:`Transform` and whose ``net`` is the
undefended model, with the undefended model's ``input_shape``, ``num_classes`` and card (plus a ``defence`` entry).

Defences and their settings (paper defaults; see :mod:`advkit.defences.transforms` for the formulas):

==================  =======================================================================================
``jpeg``            ``quality=75`` (Guo et al. 2018), ``bpda=False``
``bit_depth``       ``bits``: 1 on MNIST, else 5 (Xu et al. 2018: MNIST 1, CIFAR-10 and ImageNet 5), ``bpda=False``
``median``          ``size``: 3 on inputs of 224 pixels or more (ImageNet), else 2 (Xu et al.: MNIST and CIFAR-10
                    2x2), ``bpda=False``
``random_resize_pad``  ``seed=0`` (the wrapper's own generator, one fresh draw per forward pass),
                    ``resize_back=True``
==================  =======================================================================================

Gradients (Athalye et al., ICML 2018). With ``bpda=True`` the backward pass of the transform is the identity
(BPDA with ``g(x) = x``): the gradient is the undefended model's gradient at the transformed input. Without it,
autograd's own derivative flows: exactly zero for ``bit_depth`` (``torch.round``) and for ``jpeg`` (computed by PIL
outside autograd and attached to the graph with derivative zero, the almost-everywhere derivative of its 8-bit
rounding, so that an attack gets zero gradients rather than an autograd error), and the selection gradient for
``median`` (each output pixel's gradient goes to the input pixel that is the median). ``random_resize_pad`` is
differentiable; attack it with EOT (``pgd+eot``). ``random_resize_pad`` produces ``round(side * 331 / 299)``
pixels; the fixed-input models of advkit take ``side``, so ``resize_back=True`` resizes the padded image back to
``side`` (bilinear, no antialiasing; Xie et al. feed 331 pixels to a network that pools globally).

Refused before any work (``ValueError``): an unknown defence (the known ones are listed), an unknown or out-of-range
setting, a model without ``input_shape`` / ``num_classes``, a model whose outputs are probabilities (rows of a
probe batch of two images, black and mid-grey, that are non-negative and sum to 1: a final softmax; the
defended model must output logits), ``jpeg`` on images of other than 1 or 3 channels, and a transform whose output
shape the model cannot take (``random_resize_pad`` with ``resize_back=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advkit.defences import transforms as T
from advkit.models import Classifier, frozen_eval

DEFENCES: dict[str, dict[str, Any]] = {
    "jpeg": {"quality": 75, "bpda": False},
    "bit_depth": {"bits": None, "bpda": False},
    "median": {"size": None, "bpda": False},
    "random_resize_pad": {"seed": 0, "resize_back": True},
}
PAPERS = {
    "jpeg": "Guo et al. 2018", "bit_depth": "Xu et al. 2018", "median": "Xu et al. 2018",
    "random_resize_pad": "Xie et al. 2018",
}


def _int(name: str, defence: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{defence}: {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _bool(name: str, defence: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{defence}: {name} must be true or false, got {value!r}")
    return value


def resolve_settings(defence: str, settings: dict[str, Any], input_shape: tuple[int, ...],
                     dataset: str | None) -> dict[str, Any]:
    """The defence's full settings: ``settings`` checked and the dataset-dependent defaults filled in."""
    if defence not in DEFENCES:
        raise ValueError(f"unknown defence {defence!r}; known: {', '.join(DEFENCES)}")
    known = DEFENCES[defence]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"{defence} has no setting {', '.join(map(repr, unknown))}; its settings: "
                         f"{', '.join(known)}")
    out = {**known, **settings}
    if defence == "jpeg":
        out["quality"] = _int("quality", defence, out["quality"], 1, 100)
        if input_shape[0] not in (1, 3):
            raise ValueError(f"jpeg encodes grey (1 channel) or RGB (3 channels) images; the model takes "
                             f"{input_shape[0]} channels")
    elif defence == "bit_depth":
        default = 1 if (dataset or "").lower() == "mnist" else 5
        out["bits"] = _int("bits", defence, default if out["bits"] is None else out["bits"], 1, 8)
    elif defence == "median":
        default = 3 if min(input_shape[1:]) >= 224 else 2
        out["size"] = _int("size", defence, default if out["size"] is None else out["size"], 1,
                           min(input_shape[1:]))
    else:
        out["seed"] = _int("seed", defence, out["seed"], 0, 2 ** 63 - 1)
        out["resize_back"] = _bool("resize_back", defence, out["resize_back"])
        if input_shape[1] != input_shape[2]:
            raise ValueError(f"random_resize_pad takes square images; the model takes "
                             f"{input_shape[1]}x{input_shape[2]}")
    if "bpda" in out:
        out["bpda"] = _bool("bpda", defence, out["bpda"])
    return out


class Transform(nn.Module):
    """The defence's input transformation as a module (``Defended.preprocess``).

    Attributes:
        defence: the defence's name; settings: its full settings.
        generator: ``random_resize_pad``'s own generator (seeded with ``seed``; every forward pass draws from it).
    """

    def __init__(self, defence: str, settings: dict[str, Any], side: int) -> None:
        super().__init__()
        self.defence = defence
        self.settings = dict(settings)
        self.side = side
        self.generator = torch.Generator()
        if defence == "random_resize_pad":
            self.generator.manual_seed(int(settings["seed"]))

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random draws (from ``seed``, default the ``seed`` setting)."""
        self.generator.manual_seed(int(self.settings.get("seed", 0) if seed is None else seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if self.defence == "random_resize_pad":
            out = T.random_resize_pad(x, self.generator)
            if s["resize_back"]:
                out = F.interpolate(out, size=(self.side, self.side), mode="bilinear", align_corners=False,
                                    antialias=False)
            return out
        if self.defence == "jpeg":
            value = T.jpeg(x, s["quality"])
            if not s["bpda"]:
                return value + 0.0 * x  # derivative zero (see the module docstring)
        elif self.defence == "bit_depth":
            value = T.bit_depth(x, s["bits"])
        else:
            value = T.median(x, s["size"])
        return T.straight_through(x, value) if s["bpda"] else value

    def extra_repr(self) -> str:
        return f"{self.defence}, " + ", ".join(f"{k}={v!r}" for k, v in self.settings.items())


@dataclass(frozen=True)
class _Probe:
    shape: tuple[int, ...]
    probabilities: bool


def _probe(model: nn.Module, transform: Transform, input_shape: tuple[int, int, int]) -> _Probe:
    """One forward pass of a black and a mid-grey image: the transform's output shape and whether the model's
    outputs look like probabilities. The transform's generator is restored afterwards."""
    tensors = [*model.parameters(), *model.buffers()]
    ref = next((t for t in tensors if t.is_floating_point()), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (torch.device("cpu"), torch.float32)
    x = torch.stack([torch.zeros(input_shape), torch.full(input_shape, 0.5)]).to(device, dtype)
    state = transform.generator.get_state()
    try:
        with torch.no_grad():
            out = transform(x)
            if tuple(out.shape[1:]) != tuple(input_shape):
                return _Probe(tuple(out.shape[1:]), False)
            with frozen_eval(model):
                logits = model(x)
    finally:
        transform.generator.set_state(state)
    rows = logits.float()
    probs = bool((rows >= 0).all() and torch.allclose(rows.sum(1), torch.ones(len(rows), device=rows.device),
                                                      atol=1e-4))
    return _Probe(tuple(out.shape[1:]), probs)


class Defended(Classifier):
    """``logits = model(transform(x))`` for pixels ``x`` in ``[0, 1]``: a :class:`Classifier` whose
    ``preprocess`` is the :class:`Transform` and whose ``net`` is the undefended model.

    Attributes:
        transform: the :class:`Transform` (also ``preprocess``); model: the undefended model (also ``net``).
    """

    def __init__(self, model: nn.Module, transform: Transform, name: str, card: dict[str, Any]) -> None:
        shape = tuple(int(v) for v in model.input_shape)  # type: ignore[union-attr]
        super().__init__(model, (), (), (shape[0], shape[1], shape[2]), int(model.num_classes),  # type: ignore[arg-type]
                         name=name, card=card, preprocess=transform)

    @property
    def transform(self) -> Transform:
        return self.preprocess  # type: ignore[return-value]

    @property
    def model(self) -> nn.Module:
        return self.net


def wrap(model: nn.Module, name: str, **settings: Any) -> Defended:
    """Defend ``model`` with the input transformation ``name`` (see the module docstring for the defences and
    their settings).

    Args:
        model: a classifier taking pixels ``(N, C, H, W)`` in ``[0, 1]`` and returning logits, with
            ``input_shape`` ``(C, H, W)`` and ``num_classes`` (an :class:`~advkit.models.Classifier`).
        name: ``"jpeg"``, ``"bit_depth"``, ``"median"`` or ``"random_resize_pad"``.
        **settings: the defence's settings (``quality=75``, ``bits=5``, ``size=2``, ``bpda=True``, ``seed=0``...).

    Returns:
        the :class:`Defended` model; ``model`` is its ``net``, its modes and ``requires_grad`` flags untouched
        (attacks and evaluation freeze it themselves).

    Raises:
        ValueError: see the module docstring; raised before any image is transformed.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"wrap takes an nn.Module classifier, got {type(model).__name__}")
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}; known: {', '.join(DEFENCES)}")
    shape = getattr(model, "input_shape", None)
    if shape is None or len(tuple(shape)) != 3 or getattr(model, "num_classes", None) is None:
        raise ValueError(f"the model ({type(model).__name__}) states no input_shape (C, H, W) and num_classes; "
                         f"wrap the network first: advkit.models.wrap(net, mean=..., std=..., input_shape=..., "
                         f"num_classes=...)")
    shape = tuple(int(v) for v in shape)
    card = dict(getattr(model, "card", None) or {})
    full = resolve_settings(name, settings, shape, card.get("dataset"))
    transform = Transform(name, full, shape[1])
    probe = _probe(model, transform, shape)  # type: ignore[arg-type]
    if probe.shape != shape:
        raise ValueError(f"{name} turns {'x'.join(map(str, shape))} images into {'x'.join(map(str, probe.shape))}, "
                         f"which the model cannot take; set resize_back=True to resize them back")
    if probe.probabilities:
        raise ValueError(f"the model ({getattr(model, 'name', type(model).__name__)}) outputs probabilities (rows "
                         f"non-negative and summing to 1 on a probe batch): remove its final softmax so that it "
                         f"returns logits, as every advkit classifier does")
    label = f"{name}[" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                  for k, v in full.items()) + "]"
    card["defence"] = {"name": name, "settings": full, "paper": PAPERS[name]}
    return Defended(model, transform, f"defended:{label}:{getattr(model, 'name', 'model')}", card)
