"""The losses an iterative attack ascends, and their registry.

Every loss takes logits ``(N, K)``, the true labels ``y`` ``(N,)`` and the targets ``(N,)`` (``None`` for an
untargeted attack) and returns one scalar the attack *ascends*, summed over the batch, so that each sample's gradient
is independent of the others (the SGM authors' ``reduction="sum"``, Zhao et al.'s ``logit_dists.sum()``).

The registry :data:`LOSSES` (name -> :class:`Loss`: the function, a one-line summary, the paper, and whether it is
defined only for targeted attacks) is what the engine's validation, ``advkit attack --loss`` help, the generated
docs and the study read; there is no other list of loss names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "POTRIP_GAMMA", "POTRIP_LAMBDA", "POTRIP_XI", "Loss", "attack_loss", "check_loss", "loss_names"]

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

POTRIP_XI = 1e-5
"""Po+Trip: the one-hot target is ``max(onehot - xi, 0)``, inside the Poincare ball (Li et al. 2020)."""
POTRIP_GAMMA = 0.007
"""Po+Trip: the triplet margin gamma (Li et al. 2020)."""
POTRIP_LAMBDA = 0.01
"""Po+Trip: the weight lambda of the triplet term (Li et al. 2020)."""


@dataclass(frozen=True)
class Loss:
    """One registered loss.

    Attributes:
        name: the name attacks take (``loss="logit"``).
        fn: ``fn(logits, y, target) -> scalar`` to ascend, summed over the batch.
        summary: one line for help texts and the docs' table.
        paper: where it comes from.
        targeted_only: defined only for a targeted attack; an untargeted call is refused.
    """

    name: str
    fn: LossFn
    summary: str
    paper: str
    targeted_only: bool = False


def _ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the true class (untargeted), minus the target's cross-entropy (targeted)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="sum")
    return -F.cross_entropy(logits, target, reduction="sum")


def _margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Carlini & Wagner's logit margin: untargeted ``max_{j != y} z_j - z_y``; targeted ``z_t - max_{j != t} z_j``."""
    cls = y if target is None else target
    own = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - own).sum() if target is None else (own - other).sum()


def _logit(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Zhao et al. (NeurIPS 2021), "On Success and Simplicity: A Second Look at Transferable Targeted Attacks".

    Targeted (the paper's loss, defined only for targeted attacks): ascend the target's logit, ``sum_i z_{t_i}``,
    as the authors' code descends ``(-1 * real).sum()`` with ``real = logits.gather(1, labels)``; TransferAttack's
    ``LOGIT.get_loss`` ascends the same sum. Untargeted (advkit's extension, not in the paper): descend the true
    class's logit, ``-sum_i z_{y_i}`` (TransferAttack would ascend ``z_y`` there, which helps the true class).
    """
    if target is None:
        return -logits.gather(1, y[:, None]).sum()
    return logits.gather(1, target[:, None]).sum()


def _potrip(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Li et al. (CVPR 2020), "Towards Transferable Targeted Attack": Po+Trip, to *minimise*, so its negative here.

    Per sample, with ``z`` the logits, ``u = z / ||z||_1`` and ``v = max(onehot(t) - xi, 0)`` (both inside the unit
    ball):

    * the Poincare distance ``L_Po = arccosh(1 + 2 ||u - v||^2 / ((1 - ||u||^2) (1 - ||v||^2)))``;
    * the triplet term ``L_trip = [D(z, onehot(t)) - D(z, onehot(y)) + gamma]_+`` with the angular distance
      ``D(a, b) = 1 - |a . b| / (||a||_2 ||b||_2)``, i.e. ``[|z_y| / ||z|| - |z_t| / ||z|| + gamma]_+``, which pulls
      the logits toward the target and away from the true class;
    * ``L = L_Po + lambda * L_trip`` with ``xi = 1e-5``, ``gamma = 0.007``, ``lambda = 0.01``.

    Returns ``-sum_i L_i``. Two departures from the reference code (Zhao et al.'s ``eval_single.py``, copied by
    TransferAttack's ``potrip.py``), both stated in the docs: (1) its ``Cos_dis`` returns the cosine *similarity*
    where the paper's triplet term has the distance ``D``, so its term ``[cos_t - cos_y + gamma]`` pushes the logits
    *away* from the target; advkit follows the paper's triplet (anchor to positive = target closer than to
    negative = true class). With ``lambda = 0.01`` the term is small either way. (2) It averages over the batch and
    clamps the batch-mean triplet difference (coupling the samples); advkit sums per-sample terms, so one sample's
    gradient does not depend on the others (sign steps are unaffected by the ``1/N`` scale). Its upper clamp at 2.1
    never binds (the difference lies in ``[-1, 1 + gamma]``) and is omitted. Defined only for targeted attacks.
    """
    if target is None:
        raise ValueError("loss 'potrip' (Po+Trip, Li et al. CVPR 2020) is defined only for targeted attacks: pass "
                         "target= (advkit attack --targeted), or use loss 'ce', 'margin' or 'logit' untargeted")
    k = logits.shape[1]
    u = logits / logits.abs().sum(1, keepdim=True)
    v = (F.one_hot(target, k).to(logits.dtype) - POTRIP_XI).clamp(0.0, 1.0)
    uu, vv = u.square().sum(1), v.square().sum(1)
    po = torch.acosh(1.0 + 2.0 * (u - v).square().sum(1) / ((1.0 - uu) * (1.0 - vv)))
    norm = logits.norm(dim=1)
    cos_t = logits.gather(1, target[:, None]).squeeze(1).abs() / norm
    cos_y = logits.gather(1, y[:, None]).squeeze(1).abs() / norm
    trip = ((1.0 - cos_t) - (1.0 - cos_y) + POTRIP_GAMMA).clamp(min=0.0)
    return -(po + POTRIP_LAMBDA * trip).sum()


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("ce", _ce, "cross-entropy of the true class (targeted: minus the target's)", "Goodfellow et al., ICLR 2015"),
    Loss("logit", _logit, "the target's logit `z_t` (untargeted: `-z_y`)",
         "Zhao et al., NeurIPS 2021 (On Success and Simplicity)"),
    Loss("margin", _margin, "logit margin `z_t - max_{j != t} z_j` (untargeted: `max_{j != y} z_j - z_y`)",
         "Carlini & Wagner, S&P 2017"),
    Loss("potrip", _potrip, "Poincare distance to the target plus a triplet term (targeted only)",
         "Li et al., CVPR 2020 (Towards Transferable Targeted Attack)", targeted_only=True),
)}
"""The losses of every iterative attack, by name."""


def loss_names() -> tuple[str, ...]:
    """The registered loss names, in registry order."""
    return tuple(LOSSES)


def check_loss(name: object) -> Loss:
    """The registered loss ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the names.
    """
    entry = LOSSES.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {name!r}")
    return entry


def attack_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The loss an attack *ascends*, summed over the batch (so per-sample gradients are independent).

    Args:
        logits: ``(N, K)``.
        y: true labels ``(N,)``.
        target: target labels ``(N,)`` or ``None`` (untargeted).
        kind: a name in :data:`LOSSES`: ``"ce"`` (cross-entropy; targeted: minus the target's cross-entropy),
            ``"logit"`` (Zhao et al. 2021: the target's logit; untargeted: minus the true class's logit),
            ``"margin"`` (logit margin of Carlini & Wagner: untargeted ``max_{j != y} z_j - z_y``; targeted
            ``z_t - max_{j != t} z_j``) or ``"potrip"`` (Li et al. 2020, targeted only: minus Po+Trip).

    Raises:
        ValueError: an unknown ``kind``, or a targeted-only loss without ``target``.
    """
    return check_loss(kind).fn(logits, y, target)
