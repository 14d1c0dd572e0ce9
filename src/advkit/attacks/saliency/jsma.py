"""The Jacobian-based Saliency Map Attack (JSMA) of Papernot et al., "The Limitations of Deep Learning in
Adversarial Settings", EuroS&P 2016.

Each iteration computes the forward derivative of the network's outputs ``F`` (the softmax, as in the paper, or
the logits) for target class ``t``: ``a = dF_t/dx`` and ``b = sum_{j != t} dF_j/dx``, ``(B, D)`` each, from two
vector-Jacobian products (grad_outputs one-hot of ``t``, and its complement), not one backward pass per class.
The pair variant (Algorithm 3) then moves the pair ``(p, q)`` of the search domain maximising
``(a_p + a_q) * |b_p + b_q|`` with ``a_p + a_q > 0`` and ``b_p + b_q < 0`` (mirrored for theta < 0) by theta,
clipped to ``[0, 1]``; the single-feature variant (Algorithm 1, eq. 8) moves one feature. A sample stops when the
model predicts ``t``, when no admissible pair (feature) is left, or when one more move would take the number of
modified features over ``floor(Upsilon * D)``: for theta = +-1 this is the paper's cap of
``floor(D * Upsilon / 2)`` pair iterations (Algorithm 2), and the budget holds exactly, never overshooting.

The search domain is the set of features that can still move in theta's direction (``x < 1`` for theta > 0,
``x > 0`` for theta < 0): features that reach the bound are removed, as in the paper; for ``|theta| = 1`` every
moved feature saturates, so this is the paper's "remove p1 and p2 from the search domain".

Samples are batched with per-sample stopping (only the still-active rows go through the model); the exact pair
search and its memory cap are in :mod:`advkit.attacks.saliency.search`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.registry import register_attack
from advkit.attacks.saliency.search import (
    DEFAULT_MAX_MEMORY,
    SearchPlan,
    max_iterations,
    pair_search,
    plan_search,
    single_search,
)

log = logging.getLogger(__name__)


def all_targets(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a batch to every (sample, target) pair with target != true class, as in the paper's evaluation.

    Args:
        y: true labels ``(N,)``.
        num_classes: ``K``.

    Returns:
        ``(rows, targets)``, each int64 ``(N * (K - 1),)``: row ``i`` attacks sample ``rows[i]`` towards
        ``targets[i]``; rows are grouped by sample, targets in increasing order. Use as
        ``attack(model, x[rows], y[rows], target=targets)``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    n = y.shape[0]
    classes = torch.arange(num_classes, device=y.device).expand(n, num_classes)
    keep = classes != y[:, None]
    rows = torch.arange(n, device=y.device)[:, None].expand(n, num_classes)[keep]
    return rows, classes[keep].to(y.dtype)


def modified_features(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Number of features changed per sample, ``(N,)`` int64 (the L0 distance of the paper)."""
    return (x_adv != x).flatten(1).sum(1)


@register_attack
@dataclass(frozen=True)
class JSMA(ModelAttack):
    """Papernot et al. 2016's Jacobian-based Saliency Map Attack, batched, with an exact bounded-memory search.

    Args:
        theta: change applied to each chosen feature (clipped to ``[0, 1]``): ``+1.0`` increases features (the
            paper's MNIST setting), ``-1.0`` decreases them; any non-zero value in ``[-1, 1]``.
        upsilon: maximum share of features modified, in ``(0, 1]`` (paper: 14.5%).
        output: ``"softmax"`` (the paper's ``F``) or ``"logits"``.
        pairs: the pair variant (Algorithm 3); ``False`` for the single-feature saliency map (eq. 8).
        batch_size: samples attacked together.
        max_memory_bytes: cap on the saliency search's working memory (not the model's activations); a batch
            whose search cannot fit one tile under it is refused before anything runs.

    Called like every attack: ``JSMA()(model, x, y, target=t)`` with ``x`` ``(N, C, H, W)`` in ``[0, 1]``.
    With ``target=None`` (untargeted) each sample is attacked towards every other class (the paper's targeted
    algorithm, unchanged) and the result that changes the prediction with the fewest modified features is kept
    (ties: the lowest target class); a sample where no target works is returned unchanged. This costs ``K - 1``
    targeted attacks per sample.

    The inherited ``eps`` is not used (an L0 attack: ``upsilon`` bounds it), and the attack is deterministic, so
    ``generator`` is ignored. Per iteration: one forward pass of the still-active rows and two backward passes.
    """

    name: ClassVar[str] = "jsma"
    kind: ClassVar[str] = "saliency"
    unused: ClassVar[frozenset[str]] = frozenset({"eps"})
    unused_reason: ClassVar[str] = "an L0 attack bounded by its own settings: upsilon, the share of features changed"

    eps: float = field(default=8 / 255, repr=False)  # inherited, unused: upsilon bounds this L0 attack
    norm: str = field(default="l0", init=False)
    theta: float = 1.0
    upsilon: float = 0.145
    output: str = "softmax"
    pairs: bool = True
    batch_size: int = 128
    max_memory_bytes: int = DEFAULT_MAX_MEMORY

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.theta
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t == 0 or abs(t) > 1:
            raise ValueError(f"theta must be a non-zero number in [-1, 1] (+1 increases features, -1 decreases "
                             f"them), got {t!r}")
        u = self.upsilon
        if not isinstance(u, (int, float)) or isinstance(u, bool) or not 0 < u <= 1:
            raise ValueError(f"upsilon (the maximum share of features modified) must be in (0, 1], got {u!r}")
        if self.output not in ("softmax", "logits"):
            raise ValueError(f"output must be 'softmax' (the paper) or 'logits', got {self.output!r}")
        if not isinstance(self.pairs, bool):
            raise ValueError(f"pairs must be a bool, got {self.pairs!r}")
        for name in ("batch_size", "max_memory_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

    def estimate_memory(self, batch: int, n_features: int, dtype: torch.dtype = torch.float32) -> int:
        """Peak bytes of the saliency search for ``batch`` samples of ``n_features`` features under this
        attack's cap (see :func:`advkit.attacks.saliency.search.estimate_memory`); ``ValueError`` if it cannot fit."""
        return plan_search(batch, n_features, dtype, self.max_memory_bytes, self.pairs).peak_bytes

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        n, d = x.shape[0], x[0].numel()
        if n == 0:
            return x.clone()
        # Refuse up front, before any forward pass, if the search cannot fit under the cap.
        plan_search(min(n, self.batch_size), d, x.dtype, self.max_memory_bytes, self.pairs)
        if target is None:
            return self._untargeted(model, x, y)
        out = torch.empty_like(x)
        for i in range(0, n, self.batch_size):
            out[i:i + self.batch_size] = self._targeted(model, x[i:i + self.batch_size], target[i:i + self.batch_size])
        return out

    def _untargeted(self, model: Counter, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = getattr(model.model, "num_classes", None)
        if not isinstance(k, int):
            with torch.no_grad():
                k = int(model(x[:1]).shape[1])
        rows, targets = all_targets(y, k)
        out = x.clone()
        best = torch.full((x.shape[0],), x[0].numel() + 1, dtype=torch.long, device=x.device)
        for i in range(0, rows.numel(), self.batch_size):
            r, t = rows[i:i + self.batch_size], targets[i:i + self.batch_size]
            xa = self._targeted(model, x[r], t)
            with torch.no_grad():
                fooled = model(xa).argmax(1) != y[r]
            cost = torch.where(fooled, modified_features(xa, x[r]), x[0].numel() + 1)
            for j in range(r.numel()):  # rows are grouped by sample with increasing targets: first-best wins ties
                s = int(r[j])
                if int(cost[j]) < int(best[s]):
                    best[s] = cost[j]
                    out[s] = xa[j]
        return out

    def _targeted(self, model: Counter, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Algorithm 2 of the paper on a batch ``x`` ``(B, C, H, W)`` towards ``target`` ``(B,)``."""
        shape = x.shape[1:]
        x0 = x.flatten(1)
        xa = x0.clone()
        d = x0.shape[1]
        budget = max_iterations(d, self.upsilon, pairs=False)
        steps = max_iterations(d, self.upsilon, self.pairs) * math.ceil(1 / abs(self.theta))
        sign = 1.0 if self.theta > 0 else -1.0
        active = torch.arange(x.shape[0], device=x.device)
        plan: SearchPlan | None = None
        for it in range(steps):
            xin = xa[active].view(-1, *shape).requires_grad_(True)
            logits = model(xin)
            if it == 0 and int(target.max()) >= logits.shape[1]:
                raise ValueError(f"target class {int(target.max())} is out of range for a "
                                 f"{logits.shape[1]}-class model")
            t = target[active]
            going = logits.argmax(1) != t
            if not bool(going.any()):
                break
            out = logits.softmax(1) if self.output == "softmax" else logits
            onehot = F.one_hot(t, out.shape[1]).to(out.dtype) * going[:, None]
            a = model.grad(out, xin, onehot, retain_graph=True).flatten(1)[going]
            b = model.grad(out, xin, going[:, None].to(out.dtype) - onehot).flatten(1)[going]
            del out, logits, xin
            active = active[going]
            xs = xa[active]
            domain = xs < 1 if sign > 0 else xs > 0
            if plan is None or plan.batch != active.numel():
                plan = plan_search(active.numel(), d, a.dtype, self.max_memory_bytes, self.pairs)
            if self.pairs:
                p, q, found = pair_search(a, b, domain, sign, plan)
                idx = torch.stack([p, q], 1)
            else:
                i, found = single_search(a, b, domain, sign)
                idx = i[:, None]
            moved = xs.scatter(1, idx, (xs.gather(1, idx) + self.theta).clamp(0.0, 1.0))
            ok = found & (modified_features(moved, x0[active]) <= budget)
            xa[active[ok]] = moved[ok]
            active = active[ok]
            if active.numel() == 0:
                break
        log.debug("jsma: batch of %d done after %d iteration(s)", x.shape[0], it + 1 if steps else 0)
        return xa.view_as(x)
