"""The base of query (black-box optimisation) attacks: they reach the target only through a query oracle.

A query attack is called like every attack, ``attack(model, x, y, target=None, generator=g)``; ``model`` is an
``nn.Module`` (wrapped in an :class:`~advkit.attacks.query.oracle.Oracle` of the kind the attack needs) or an
``Oracle`` the caller built (a label-only service, a remote API). The attack runs under ``no_grad``, spends at
most ``max_queries`` queries on each image, stops on each image as soon as it succeeds, and reports the queries it
spent per image in ``AttackResult.queries``. ``start=`` (for example a transfer example crafted on a surrogate)
replaces the attack's own initialisation, so the queries a good surrogate saves can be measured.

Score-based attacks (``oracle_output = "scores"``) get class log-probabilities; decision-based ones (``"label"``)
get the top-1 label. A label-only oracle handed to a score-based attack is refused before any query is spent.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks.core.base import Attack
from advkit.attacks.core.budget import check_budget
from advkit.attacks.query.oracle import Oracle, QuerySession

__all__ = ["QueryAttack", "check_query_budget", "margin", "objective"]


def check_query_budget(max_queries: object) -> None:
    """``ValueError`` unless the per-image query budget is an integer >= 1."""
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries is the per-image query budget and must be an integer >= 1 (e.g. 1000), "
                         f"got {max_queries!r}")


def margin(logp: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample margin the attack drives below 0: untargeted ``z_y - max_{j != y} z_j``, targeted
    ``max_{j != t} z_j - z_t`` (on log-probabilities, whose margins equal the logits')."""
    cls = y if target is None else target
    own = logp.gather(1, cls[:, None]).squeeze(1)
    other = logp.masked_fill(F.one_hot(cls, logp.shape[1]).bool(), float("-inf")).amax(1)
    return own - other if target is None else other - own


def objective(logp: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-sample loss a score-based attack *minimises*: ``margin`` (above), or ``ce``: untargeted ``log p_y``,
    targeted ``-log p_t``."""
    if loss == "margin":
        return margin(logp, y, target)
    if loss == "ce":
        if target is None:
            return logp.gather(1, y[:, None]).squeeze(1)
        return -logp.gather(1, target[:, None]).squeeze(1)
    raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")


@dataclass(frozen=True)
class QueryAttack(Attack):
    """A black-box attack: ``max_queries`` per image through a query oracle.

    Class attributes:
        oracle_output: ``"scores"`` (needs class probabilities) or ``"label"`` (the top-1 label is enough).
    """

    kind: ClassVar[str] = "query"
    black_box: ClassVar[bool] = True
    oracle_output: ClassVar[str] = "scores"

    max_queries: int = 10_000

    def __post_init__(self) -> None:
        super().__post_init__()
        check_query_budget(self.max_queries)
        norm = self.norm
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if self.eps <= 0 or (norm == "linf" and self.eps > 1):
            raise ValueError(f"eps must be in (0, 1] for an L-inf budget in pixel units of [0, 1] (e.g. 8/255 or "
                             f"0.1), got {self.eps!r}" if norm == "linf" else
                             f"eps must be > 0 (an L2 radius in pixel units of [0, 1]), got {self.eps!r}")

    def _open(self, model: nn.Module | Oracle, x: torch.Tensor) -> QuerySession:
        oracle = model if isinstance(model, Oracle) else Oracle(model, self.oracle_output)
        if self.oracle_output == "scores" and oracle.output != "scores":
            raise ValueError(f"{self.name} is a score-based attack and needs class probabilities, but this oracle "
                             f"answers with labels only; pass Oracle(model, output='scores') or use a "
                             f"decision-based attack (hsj)")
        check_budget(self.eps, self.norm, allow_large=True, shape=tuple(x.shape[1:]))
        return oracle.session(int(x.shape[0]), self.max_queries, x.device)

    def _execute(self, access: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 generator: torch.Generator | None, start: torch.Tensor | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            access.expect_classes(y, target)
            x_adv = self._search(access, x, y, target, g, start)
        access.info[self.name] = {"budget": self.max_queries, "oracle": access.output}
        return x_adv

    @abstractmethod
    def _search(self, oracle: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                g: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        """Return the adversarial batch, querying only through ``oracle``."""


def rand(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform ``[0, 1)`` noise from ``g`` (a CPU generator) on ``like``'s device and dtype."""
    return torch.rand(shape, generator=g).to(device=like.device, dtype=like.dtype)


def randn(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from ``g`` on ``like``'s device and dtype."""
    return torch.randn(shape, generator=g).to(device=like.device, dtype=like.dtype)


def signs(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    """Random ``+1`` / ``-1`` from ``g`` on ``like``'s device and dtype."""
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(device=like.device, dtype=like.dtype)


def randint(g: torch.Generator, high: torch.Tensor | int, n: int, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high)`` (``high`` >= 1, per entry if a tensor) from ``g``."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    h = high.double().cpu() if isinstance(high, torch.Tensor) else float(high)
    return (u * h).long().clamp_max(torch.as_tensor(h).long() - 1).to(device)
