"""An ensemble of surrogate classifiers, attacked as one model.

Three ways to fuse the members (each a :class:`~advkit.models.wrapper.Classifier` taking pixels in ``[0, 1]``
with its own normalisation):

* ``"logits"``: Dong et al., CVPR 2018 ("Boosting Adversarial Attacks with Momentum", Eq. 6): the weighted mean
  of the members' logits.
* ``"probs"``: Liu, Chen, Liu, Song, ICLR 2017 ("Delving into Transferable Adversarial Examples"): the weighted
  mean of the members' softmax probabilities, returned as its logarithm so that argmax and cross-entropy apply
  unchanged (``cross_entropy(log p, y) = -log p_y``).
* ``"loss"``: the attack loss averaged over the members. The forward pass (predictions, success) returns the
  weighted mean of the logits; the iterative engine asks :meth:`Ensemble.fused_loss` for the loss, which applies
  the attack's loss to each member's logits and averages.

``ensemble:A+B+C`` (and ``ensemble:A+B+C@probs``) in :func:`advkit.models.load` builds one by name
(:func:`parse_name`). Backward-pass modifiers (SGM, LinBP, ILA) act per member, each with its own settings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from advkit.models.wrapper import Classifier

__all__ = ["FUSES", "PREFIX", "Ensemble", "ensemble", "is_ensemble_name", "parse_name", "split_weights"]

_WEIGHTED = re.compile(r"^(?P<name>ensemble:.+)\[(?P<weights>[^\[\]]*)\]$")

FUSES = ("logits", "probs", "loss")
PREFIX = "ensemble:"


def _describe(m: nn.Module, i: int) -> str:
    return f"member {i} ({getattr(m, 'name', None) or type(m).__name__})"


def _check_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 / n for _ in range(n))
    w = [float(v) for v in weights]
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} entries for {n} members; give one weight per member (or none for "
                         "equal weights)")
    if any(not math.isfinite(v) or v < 0 for v in w):
        raise ValueError(f"weights must be finite and >= 0, got {tuple(w)}")
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights sum to {total:g}; at least one member needs a positive weight")
    return tuple(v / total for v in w)


def _check_members(members: Sequence[nn.Module]) -> None:
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}; attack the model itself "
                         "instead")
    for i, m in enumerate(members):
        if not isinstance(m, nn.Module) or getattr(m, "input_shape", None) is None or \
                getattr(m, "num_classes", None) is None:
            raise ValueError(f"ensemble {_describe(m, i)} is not an advkit classifier with an input_shape and "
                             "num_classes; load it with advkit.models.load or wrap it with advkit.models.wrap")
    for key, what in (("input_shape", "input shape"), ("num_classes", "class count")):
        seen = [(i, getattr(m, key, None)) for i, m in enumerate(members)]
        values = {tuple(v) if isinstance(v, (tuple, list, torch.Size)) else v for _, v in seen}
        if len(values) > 1:
            listed = ", ".join(f"{_describe(members[i], i)}: {v}" for i, v in seen)
            raise ValueError(f"ensemble members differ in {what} ({listed}); every member must take the same "
                             "images and predict the same classes")
    datasets = [(i, (getattr(m, "card", None) or {}).get("dataset")) for i, m in enumerate(members)]
    if len({d for _, d in datasets if d}) > 1:
        listed = ", ".join(f"{_describe(members[i], i)}: {d}" for i, d in datasets)
        raise ValueError(f"ensemble members were trained on different datasets ({listed}); pick members of one "
                         "dataset")


class Ensemble(Classifier):
    """Several classifiers fused into one (see the module docstring for the three fuses). A
    :class:`~advkit.models.wrapper.Classifier` whose ``net`` is the members and whose ``preprocess`` is the
    identity: each member normalises its own input.

    Attributes:
        members: the member classifiers (``nn.ModuleList``, also ``net``), each taking ``(N, C, H, W)`` pixels in
            ``[0, 1]``.
        weights: the members' weights, normalised to sum to 1.
        fuse: ``"logits"``, ``"probs"`` or ``"loss"``.
        input_shape: ``(C, H, W)`` shared by the members.
        num_classes: the class count shared by the members.
        name: ``ensemble:A+B`` (with ``@fuse`` unless it is ``logits``).
        card: ``{"ensemble": [member names], "fuse", "weights", "dataset", "input_shape", "num_classes"}``, and
            ``connections`` when every member's card states it (``residual`` if any member is residual).
    """

    def __init__(self, members: Sequence[nn.Module], fuse: str = "logits",
                 weights: Sequence[float] | None = None, name: str | None = None) -> None:
        if fuse not in FUSES:
            raise ValueError(f"fuse must be one of {', '.join(map(repr, FUSES))}, got {fuse!r}")
        members = list(members)
        _check_members(members)
        norm_weights = _check_weights(weights, len(members))
        shape = tuple(int(v) for v in getattr(members[0], "input_shape"))  # noqa: B009 - checked above
        num_classes = int(getattr(members[0], "num_classes"))  # noqa: B009
        names = [str(getattr(m, "name", None) or type(m).__name__) for m in members]
        label = name or PREFIX + "+".join(names) + ("" if fuse == "logits" else f"@{fuse}")
        cards: list[dict[str, Any]] = [getattr(m, "card", None) or {} for m in members]
        dataset = next((c["dataset"] for c in cards if c.get("dataset")), None)
        card: dict[str, Any] = {"name": label, "ensemble": names, "fuse": fuse, "weights": list(norm_weights),
                                "dataset": dataset,
                                "input_shape": list(shape), "num_classes": num_classes}
        kinds = [c.get("connections") for c in cards]
        if all(k in ("residual", "dense", "none") for k in kinds):  # what studies read (SGM's default gamma)
            skips = {k for k in kinds if k != "none"}
            card["connections"] = "none" if not skips else "dense" if skips == {"dense"} else "residual"
        super().__init__(nn.ModuleList(members), mean=(), std=(), input_shape=(shape[0], shape[1], shape[2]),
                         num_classes=num_classes, name=label, card=card, preprocess=nn.Identity())
        self.weights = norm_weights
        self.fuse = fuse

    @property
    def members(self) -> nn.ModuleList:
        """The member classifiers, in order."""
        net = self.net
        assert isinstance(net, nn.ModuleList)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused output ``(N, K)``: mean logits (``logits``, ``loss``) or log mean probabilities (``probs``)."""
        if self.fuse == "probs":
            logp = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
            logw = torch.tensor([math.log(w) if w > 0 else -math.inf for w in self.weights],
                                dtype=logp.dtype, device=logp.device).view(-1, 1, 1)
            return torch.logsumexp(logp + logw, dim=0)
        return self._weighted([m(x) for m in self.members])

    def _weighted(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        total = values[0] * self.weights[0]
        for w, v in zip(self.weights[1:], values[1:], strict=True):
            total = total + v * w
        return total

    def fused_loss(self, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The ensemble's ``loss`` at ``x``: for the ``"loss"`` fuse the weighted mean over the members of
        ``loss(member(x))``, else ``loss`` of the fused output."""
        if self.fuse != "loss":
            return loss(self(x))
        return self._weighted([loss(m(x)) for m in self.members])

    def extra_repr(self) -> str:
        return f"fuse={self.fuse!r}, weights={tuple(round(w, 4) for w in self.weights)}"


def ensemble(members: Sequence[nn.Module], fuse: str = "logits", weights: Sequence[float] | None = None,
             name: str | None = None) -> Ensemble:
    """Fuse classifiers into one model that every attack takes (Dong et al. 2018; Liu et al. 2017).

    Args:
        members: two or more classifiers with the same input shape, class count and dataset (their cards').
        fuse: ``"logits"`` (weighted mean logits), ``"probs"`` (log of the weighted mean probabilities) or
            ``"loss"`` (the attack loss averaged over the members).
        weights: one non-negative weight per member (normalised to sum 1); default equal.
        name: a label for reports; default ``ensemble:A+B`` (``@fuse`` appended unless ``logits``).

    Raises:
        ValueError: fewer than two members, members of different input shape / class count / dataset, an unknown
            ``fuse``, or weights of the wrong length, negative or not summing above 0.
    """
    return Ensemble(members, fuse=fuse, weights=weights, name=name)


def is_ensemble_name(name: str) -> bool:
    """Whether ``name`` names an ensemble (``ensemble:A+B...``)."""
    return name.startswith(PREFIX)


def parse_name(name: str) -> tuple[list[str], str]:
    """``"ensemble:A+B+C@probs"`` -> ``(["A", "B", "C"], "probs")``; the fuse defaults to ``"logits"``.

    Members are separated by ``+``; a final ``@logits``, ``@probs`` or ``@loss`` names the fuse (any other ``@TAG``
    stays with the last member, as in ``torchvision:resnet18@random``).

    Raises:
        ValueError: no ``ensemble:`` prefix, an empty member, or fewer than two members.
    """
    if not is_ensemble_name(name):
        raise ValueError(f"{name!r} is not an ensemble name; write ensemble:A+B[+C...][@logits|@probs|@loss]")
    body, fuse = name[len(PREFIX):], "logits"
    head, at, tail = body.rpartition("@")
    if at and tail in FUSES:
        body, fuse = head, tail
    specs = [s.strip() for s in body.split("+")]
    if any(not s for s in specs):
        raise ValueError(f"{name!r} has an empty member; write ensemble:A+B[+C...], e.g. ensemble:resnet20+vgg11_bn")
    if len(specs) < 2:
        raise ValueError(f"{name!r} names one member; an ensemble needs at least two (ensemble:A+B)")
    return specs, fuse


def split_weights(spec: str) -> tuple[str, list[float] | None]:
    """``"ensemble:A+B@logits[1,2]"`` -> ``("ensemble:A+B@logits", [1.0, 2.0])``; a spec without brackets is
    returned with ``None``.

    Raises:
        ValueError: a bracket that is not a list of numbers, one per member.
    """
    m = _WEIGHTED.match(spec)
    if not m:
        return spec, None
    name = m["name"]
    try:
        weights = [float(w) for w in m["weights"].split(",")]
    except ValueError:
        raise ValueError(f"{spec!r}: the weights in brackets must be numbers, e.g. ensemble:A+B@logits[1,2]") from None
    members, _ = parse_name(name)
    if len(weights) != len(members):
        raise ValueError(f"{spec!r}: {len(weights)} weights for {len(members)} members; give one per member")
    return name, weights
