"""Sanity checks on a model before it is attacked (after auto-attack's ``checks.py``).

An attack's figures mean little when the model under attack hides its gradients or is not the model the user
thinks it is. :func:`check_model` looks once, on a small batch, for the five usual causes and warns with the reason
(an :class:`AdvkitSanityWarning`, filtered like any warning):

* ``eval_mode``: a BatchNorm or dropout layer left in train mode (BatchNorm normalises with the batch's statistics,
  dropout is on);
* ``logits``: outputs that are probabilities (non-negative rows summing to 1): a softmax already applied, so the
  attacks' losses saturate and their gradients vanish; log-probabilities are reported but fine;
* ``deterministic``: two identical forward passes differ (dropout at eval time, a stochastic defence): a single
  forward pass then says little, and the gradient is one sample of a random function (use EOT);
* ``input_gradients``: the gradient of the margin (true logit minus the best other one) with respect to the input
  is zero or non-finite for some images: gradient masking, a non-differentiable step (rounding, JPEG), or a model
  whose backward pass fails (e.g. ``memory_efficient`` DenseNets under some versions);
* ``saturation``: for a quarter or more of the images the float32 softmax gives the true class a probability of
  exactly 1.0 (a logit margin above about 17). Cross-entropy's input gradient is ``softmax - onehot`` through the
  logits, so its true-class term is then exactly zero and only the other classes' underflowing probabilities are
  left: the FGSM family (FGSM, I-FGSM, PGD, MI, SGM) under-reports on such a model, although no gradient is zero.
  The cure is the margin loss (``loss="margin"``), which sees the logits themselves. Confident models trained
  without weight decay (MNIST LeNets) are the usual case.

The model is left as it was: its train/eval flags are restored, nothing is written to its buffers (the checks run in
eval mode; BatchNorm statistics are not updated), and the global random state is restored afterwards.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["AdvkitSanityWarning", "ModelCheck", "check_model", "checks_failed"]

SATURATED_SHARE = 0.25  # the saturation check fails from this share of images whose true class rounds to 1.0


class AdvkitSanityWarning(UserWarning):
    """A model failed one of :func:`check_model`'s checks: the attack's figures may not mean what they seem."""


@dataclass(frozen=True)
class ModelCheck:
    """One check's outcome: ``name`` (see the module docstring), ``ok`` and a sentence saying what was seen."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device(model: nn.Module) -> torch.device:
    return next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))


# layers whose forward pass depends on train/eval mode (a container left in train mode changes nothing by itself)
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout,
                   nn.modules.instancenorm._InstanceNorm)


def _train_mode(model: nn.Module) -> ModelCheck:
    training = [name or type(model).__name__ for name, m in model.named_modules()
                if m.training and isinstance(m, _MODE_DEPENDENT)]
    if not training:
        return ModelCheck("eval_mode", True, "no BatchNorm or dropout layer is in train mode")
    shown = ", ".join(training[:3]) + (f" and {len(training) - 3} more" if len(training) > 3 else "")
    return ModelCheck("eval_mode", False,
                      f"{len(training)} BatchNorm/dropout layer(s) in train mode ({shown}): BatchNorm uses batch "
                      f"statistics and dropout is on; call model.eval() before attacking (advkit's own models are "
                      f"frozen in eval mode)")


def _outputs(out: torch.Tensor) -> ModelCheck:
    if out.dim() != 2:
        return ModelCheck("logits", False, f"the model returns shape {tuple(out.shape)}, not (batch, classes)")
    if not torch.isfinite(out).all():
        return ModelCheck("logits", False, "the model's outputs hold NaN or infinite values on clean images")
    rows = out.double()
    if bool((rows >= -1e-6).all()) and bool(((rows.sum(1) - 1).abs() < 1e-3).all()):
        return ModelCheck("logits", False,
                          "the outputs are probabilities (non-negative rows summing to 1): a softmax is already "
                          "applied, so cross-entropy saturates and gradients vanish; return the logits (remove the "
                          "final softmax)")
    if bool((rows <= 1e-6).all()) and bool((torch.logsumexp(rows, 1).abs() < 1e-3).all()):
        return ModelCheck("logits", True, "the outputs are log-probabilities (log-softmax): fine for cross-entropy "
                                          "and margin losses")
    return ModelCheck("logits", True, "the outputs are logits")


def _deterministic(model: nn.Module, x: torch.Tensor, first: torch.Tensor) -> ModelCheck:
    with torch.no_grad():
        second = model(x)
    diff = float((second.double() - first.double()).abs().max()) if second.shape == first.shape else float("inf")
    scale = max(float(first.double().abs().max()), 1.0)
    if diff <= 1e-5 * scale:
        return ModelCheck("deterministic", True, "two forward passes on the same images agree")
    changed = int((second.argmax(1) != first.argmax(1)).sum()) if second.shape == first.shape else len(x)
    return ModelCheck("deterministic", False,
                      f"two forward passes on the same images differ (largest difference {diff:.3g}, {changed} of "
                      f"{len(x)} predictions change): dropout at eval time or a stochastic defence; attack success "
                      f"is then one draw, and gradients need expectation over transformation (EOT)")


def _query_attacks() -> str:
    """The registered query attacks, for the advice in a failed check."""
    from advkit.attacks import query_attacks

    return ", ".join(query_attacks())


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ModelCheck:
    xg = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(xg)
            true = out.gather(1, y[:, None]).squeeze(1)
            other = out.masked_fill(torch.nn.functional.one_hot(y, out.shape[1]).bool(), float("-inf")).amax(1)
            (grad,) = torch.autograd.grad((true - other).sum(), xg)
    except RuntimeError as e:
        return ModelCheck("input_gradients", False,
                          f"the input gradient cannot be computed ({str(e).splitlines()[0]}): gradient attacks cannot "
                          f"run on this model; use a query attack ({_query_attacks()}) or fix the backward pass")
    flat = grad.flatten(1)
    bad = int((~torch.isfinite(flat)).any(1).sum())
    if bad:
        return ModelCheck("input_gradients", False,
                          f"non-finite input gradients for {bad} of {len(x)} images: the model's backward pass is "
                          f"numerically broken; gradient attacks will produce NaN or no steps")
    zero = int((flat.abs().amax(1) == 0).sum())
    if zero:
        return ModelCheck("input_gradients", False,
                          f"zero input gradients for {zero} of {len(x)} images: gradient masking or a "
                          f"non-differentiable step (rounding, quantisation, thresholds); gradient attacks cannot "
                          f"move these images; try a query attack ({_query_attacks()}) or BPDA")
    return ModelCheck("input_gradients", True, f"finite, non-zero input gradients for all {len(x)} images")


def _saturation(out: torch.Tensor, y: torch.Tensor) -> ModelCheck:
    if out.dim() != 2 or not torch.isfinite(out).all():
        return ModelCheck("saturation", True, "not measured: the outputs are not finite (batch, classes) logits")
    p_true = out.float().softmax(1).gather(1, y[:, None]).squeeze(1)
    saturated = int((p_true == 1.0).sum())
    share = saturated / len(y)
    if share < SATURATED_SHARE:
        return ModelCheck("saturation", True, f"the float32 softmax rounds the true class to 1.0 for {saturated} of "
                                              f"{len(y)} images")
    return ModelCheck("saturation", False,
                      f"the float32 softmax rounds the true class's probability to exactly 1.0 for {saturated} of "
                      f"{len(y)} images ({100 * share:.0f}%): cross-entropy's gradient loses its true-class term "
                      f"there, so cross-entropy attacks (FGSM, I-FGSM, PGD, MI, SGM) under-report; attack with the "
                      f"margin loss too (loss='margin'; advkit attack --loss margin)")


def check_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, warn: bool = True,
                name: str | None = None) -> list[ModelCheck]:
    """Run the checks of the module docstring on ``model`` with the images ``x`` (a few dozen are enough).

    Args:
        model: the model to attack (an ``nn.Module``; a query-only target has no gradients to check).
        x: images ``(N, C, H, W)`` in ``[0, 1]``, moved to the model's device.
        y: labels ``(N,)``; the gradient check uses the model's predictions without them.
        warn: issue an :class:`AdvkitSanityWarning` for each failed check.
        name: the model's name in the warnings (default: its ``name`` attribute or class).

    Returns:
        One :class:`ModelCheck` per check, in the module docstring's order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check_model needs an nn.Module, got {type(model).__name__}")
    dev = _device(model)
    x = x.detach().to(dev)
    label = name or getattr(model, "name", None) or type(model).__name__
    flags = {m: m.training for m in model.modules()}
    checks = [_train_mode(model)]
    try:
        model.eval()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            with torch.no_grad():
                first = model(x)
            checks.append(_outputs(first))
            checks.append(_deterministic(model, x, first))
            target = first.argmax(1) if y is None else y.to(dev).long()
            checks.append(_gradients(model, x, target))
            checks.append(_saturation(first, target))
    finally:
        for m, was in flags.items():
            m.train(was)
    if warn:
        for c in checks:
            if not c.ok:
                warnings.warn(f"{label}: {c.detail}", AdvkitSanityWarning, stacklevel=2)
    return checks


def checks_failed(checks: list[ModelCheck] | list[dict[str, Any]]) -> list[str]:
    """The failed checks' sentences (from :class:`ModelCheck` objects or their ``as_dict`` records)."""
    out = []
    for c in checks:
        ok, detail = (c.ok, c.detail) if isinstance(c, ModelCheck) else (c["ok"], c["detail"])
        if not ok:
            out.append(detail)
    return out
