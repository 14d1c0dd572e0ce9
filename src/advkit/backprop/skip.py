"""The Skip Gradient Method as a scoped backward-pass modifier.

Wu, Wang, Xia, Bailey, Ma, "Skip Connections Matter: On the Transferability of Adversarial Examples Generated
with ResNets", ICLR 2020. For ``z_{i+1} = z_i + f_{i+1}(z_i)`` the input gradient becomes
``dL/dz_L * prod_i (gamma * df_i/dz_i + 1) * dz_0/dx``: each residual branch's gradient is multiplied by
``gamma`` in ``(0, 1]`` while the skip path keeps its gradient.

Usage::

    with advkit.backprop.skip_gradient(model, gamma=0.2) as found:
        loss = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    print(advkit.backprop.format_connections(found))   # every hook is gone here

Run the forward *and* the backward pass inside the context: the scaling is attached to the autograd graph built
in the forward pass, so a graph built inside and differentiated after exit still carries it, and a graph built
before entry never does.
"""

from __future__ import annotations

import logging
import numbers
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from advkit.backprop.connection import Connection
from advkit.backprop.discover import find_connections
from advkit.backprop.original import install_original
from advkit.backprop.scale import scaling_hook

logger = logging.getLogger(__name__)

VARIANTS = ("formula", "original")

_ACTIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def check_gamma(gamma: Any) -> float:
    """``gamma`` as a float in ``(0, 1]``; ``ValueError`` otherwise."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < float(gamma) <= 1:
        raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
    return float(gamma)


def _install_formula(model: nn.Module, gamma: float, found: list[Connection]) -> list[RemovableHandle]:
    handles = []
    for c in found:
        module = model.get_submodule(c.branch)
        c.scale, c.hooked = gamma, True
        handles.append(module.register_forward_hook(scaling_hook(gamma, (c,))))
    return handles


@contextmanager
def skip_gradient(model: nn.Module, gamma: float = 0.2, variant: str = "formula") -> Iterator[list[Connection]]:
    """Decay the gradient through skip-connection branches of ``model`` inside a ``with`` block.

    Wu et al., ICLR 2020 (SGM). Every hook is a forward hook that wraps a module output in a gradient-scaling
    autograd function (no module backward hooks, which break on in-place ReLU); all of them are removed on
    exit, also when the block raises.

    Args:
        model: an advkit ``Classifier``, a bare ``nn.Module``, a torchvision- / timm-structured ResNet or
            DenseNet, or any model with residual additions or dense concatenations. It is not modified.
        gamma: decay in ``(0, 1]``; the paper uses 0.2 for ResNet and 0.5 for DenseNet sources.
        variant: ``"formula"`` (default): the paper's formula. Discovery is structural
            (:func:`find_connections`); the gradient of each residual branch (only the branch: a projection
            shortcut keeps its gradient) and of each dense layer's new features is multiplied by ``gamma``
            exactly once. ``"original"``: the authors' released code, name rules and gradient normalisation
            included (:mod:`advkit.backprop.original`).

    Yields:
        The connections hooked, each with ``fired`` counting hook calls in backward passes.

    Raises:
        ValueError: ``gamma`` outside ``(0, 1]``, an unknown variant, no skip connection found, or (original)
            no module the authors' name rule matches.
        RuntimeError: ``skip_gradient`` is already active on this model or one of the modules it would hook.
    """
    gamma = check_gamma(gamma)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if model in _ACTIVE:
        raise RuntimeError(f"skip_gradient is already active on this {type(model).__name__}; nesting would apply "
                           "the decay twice")
    handles: list[RemovableHandle] = []
    guarded: list[nn.Module] = []
    try:
        if variant == "formula":
            found = [replace(c) for c in find_connections(model)]
            targets = [model.get_submodule(c.branch) for c in found]
            if any(t in _ACTIVE for t in targets):
                raise RuntimeError("skip_gradient is already active on a module this model shares; nesting would "
                                   "apply the decay twice")
            guarded = [model, *targets]
            _ACTIVE.update(guarded)
            handles = _install_formula(model, gamma, found)
        else:
            found, handles, targets = install_original(model, gamma)
            if any(t in _ACTIVE for t in targets):
                raise RuntimeError("skip_gradient is already active on a module this model shares; nesting would "
                                   "apply the decay twice")
            guarded = [model, *targets]
            _ACTIVE.update(guarded)
        logger.debug("skip_gradient(%s, gamma=%g, variant=%s): %d hooks on %d connections",
                     type(model).__name__, gamma, variant, len(handles), len(found))
        yield found
        fired = [c for c in found if c.hooked and c.fired]
        idle = [c.branch for c in found if c.hooked and not c.fired]
        if fired and idle:
            logger.warning("SGM: %d hooked modules never saw a backward pass while others did (%s); the model's "
                           "forward may differ from its trace", len(idle), ", ".join(idle[:5]))
    finally:
        for h in handles:
            h.remove()
        for m in guarded:
            _ACTIVE.discard(m)
