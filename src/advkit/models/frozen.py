"""The one save-and-restore of a model's state around work that must see it frozen in eval mode.

Attacks, evaluation and adversarial training all need the same thing: every module in eval mode (dropout off,
batch-norm running statistics used and not updated) and no parameter requiring a gradient (so that
``torch.autograd.grad`` with respect to the input builds no parameter graph), then every module's mode and every
parameter's flag put back exactly as they were, also when the work raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_eval(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Freeze ``model`` inside a ``with`` block and restore it on exit.

    Args:
        model: any ``nn.Module``.
        eval_mode: put every module in eval mode (the default). ``False`` keeps each module's mode as it is
            (adversarial training that crafts through the training-mode network) and only freezes parameters.

    Yields:
        ``model`` itself.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, req in flags:
            p.requires_grad_(req)
