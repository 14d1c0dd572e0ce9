"""The query oracle: all a black-box attacker gets from the target.

An :class:`Oracle` wraps a target (an ``nn.Module`` or any callable from pixels in ``[0, 1]`` to logits or
probabilities) and answers with what a deployed service would return: the class probabilities
(``output="scores"``, for score-based attacks such as Square, NES and SimBA) or the top-1 label only
(``output="label"``, for decision-based attacks such as HopSkipJump)::

    api = advkit.attacks.Oracle(model, output="label")           # a label-only service
    result = advkit.attacks.create("hsj", eps=2.0, max_queries=5000)(api, x, y)
    result.queries                                                 # int64 (N,): rows sent per image

Each attack call opens a :class:`QuerySession` on the oracle. The session counts every image row it is asked
about against the image of the batch it belongs to, the way a rate-limited service counts requests, and refuses
a row that would take an image past its query budget (a bug in the attack, never a silent overrun). It runs the
target under ``no_grad`` and refuses inputs that require a gradient, so an attack cannot differentiate through
it. The final success check of the attack contract is the evaluator's, not the attacker's, and is not counted.

Every answer is checked before an attack sees it: one finite row of scores per image row sent, the same number of
classes each time (the target's ``num_classes`` when it declares one), and a score for every class among the batch's
labels and targets. Anything else (NaN scores, ``(M,)`` or ``(2M, K)`` outputs, 3 scores for 10-class labels) is a
``ValueError`` naming what the target answered, never an image reported as fooled: the argmax of a NaN row is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OUTPUTS", "BlackBoxError", "Oracle", "QueryBudgetError", "QuerySession"]

OUTPUTS = ("scores", "label")


class BlackBoxError(RuntimeError):
    """An attack asked the oracle for something a black-box attacker does not get (a gradient, scores from a
    label-only service)."""


class QueryBudgetError(RuntimeError):
    """An attack sent more queries for an image than its budget allows."""


class Oracle:
    """A target as a black-box attacker sees it.

    Args:
        target: an ``nn.Module`` or a callable taking ``(M, C, H, W)`` pixels in ``[0, 1]`` and returning
            ``(M, K)`` logits (or probabilities, with ``probabilities=True``).
        output: ``"scores"`` (class probabilities) or ``"label"`` (the top-1 label only).
        probabilities: the target already returns probabilities (rows summing to 1), not logits.
        max_rows: most rows sent to the target in one forward call (larger requests are split; the split does
            not change the query count).
        on_query: called after every query as ``on_query(rows, rows_of, outputs)`` (the rows sent, the batch
            image each belongs to, the target's raw outputs): an audit log, or a stateful defence's detector.
    """

    def __init__(self, target: nn.Module | Callable[[torch.Tensor], torch.Tensor], output: str = "scores", *,
                 probabilities: bool = False, max_rows: int = 4096,
                 on_query: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"oracle output must be one of {OUTPUTS}, got {output!r}")
        if not callable(target):
            raise ValueError(f"an oracle wraps a model or a callable returning logits, got {type(target).__name__}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self._target = target
        self.output = output
        self.probabilities = bool(probabilities)
        self.max_rows = max_rows
        self.on_query = on_query

    @property
    def module(self) -> nn.Module | None:
        """The wrapped ``nn.Module`` (to put in eval mode), or ``None`` for a plain callable."""
        return self._target if isinstance(self._target, nn.Module) else None

    @property
    def num_classes(self) -> int | None:
        k = getattr(self._target, "num_classes", None)
        return k if isinstance(k, int) else None

    def __repr__(self) -> str:
        return f"Oracle({type(self._target).__name__}, output={self.output!r})"

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluator's view (logits, or log-probabilities for a probability target): for the final success
        check only, never for the attacker, and not counted as queries."""
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self._answer(x[i:i + self.max_rows]) for i in range(0, x.shape[0], self.max_rows)]
        out = torch.cat(outs) if outs else x.new_zeros(0, 0)
        if self.probabilities:
            out = out.clamp_min(1e-30).log()
        return out

    def _answer(self, rows: torch.Tensor) -> torch.Tensor:
        """The target's raw output on ``rows``, checked: ``ValueError`` naming what it answered unless it is one
        finite row of scores per row sent, for the ``num_classes`` the target declares (if it declares any)."""
        out = self._target(rows)
        m, who = rows.shape[0], f"the query target ({self._name()})"
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"{who} answered a {type(out).__name__}; it must return a torch tensor of (rows, "
                             f"classes) scores for the (rows, C, H, W) pixels it is sent")
        if out.ndim != 2 or out.shape[0] != m:
            raise ValueError(f"{who} answered scores of shape {tuple(out.shape)} for {m} image row(s); it must "
                             f"return ({m}, classes): one row of logits (or of probabilities, with "
                             f"probabilities=True) per image sent, also behind a label oracle, which takes the "
                             f"top-1 label from them")
        k = self.num_classes
        if out.shape[1] < 2 or (k is not None and out.shape[1] != k):
            want = f"its num_classes={k}" if k is not None else "at least 2"
            raise ValueError(f"{who} answered {out.shape[1]} score(s) per row (shape {tuple(out.shape)}); a "
                             f"classifier scores every class: {want}")
        bad = ~torch.isfinite(out).all(1)
        if bool(bad.any()):
            raise ValueError(f"{who} answered non-finite scores (NaN or inf) on {int(bad.sum())} of {m} row(s) "
                             f"(first: row {int(bad.nonzero()[0])}); they cannot say whether an image is fooled "
                             f"(the argmax of a NaN row is class 0), so the attack stops. Check the target: NaN "
                             f"weights, or its preprocessing (a zero std)")
        return out

    def _name(self) -> str:
        """The target's name for messages: a model's ``name``, a function's name, else its type."""
        for attr in ("name", "__qualname__"):
            name = getattr(self._target, attr, None)
            if isinstance(name, str) and name:
                return name
        return type(self._target).__name__

    def session(self, n: int, budget: int, device: torch.device | None = None) -> QuerySession:
        """A counting session over a batch of ``n`` images with ``budget`` queries each."""
        return QuerySession(self, n, budget, device)


class QuerySession:
    """One attack call's view of an :class:`Oracle`: per-image query counts against a per-image budget.

    Attributes:
        queries: int64 ``(n,)``: rows sent so far for each image of the batch.
        budget: the per-image budget.
        forward: forward calls made through the target (a query request split into chunks counts each chunk).
        backward: always 0 (kept so that query attacks report passes like every attack).
        classes: the number of scores per row the target answers (set by the first answer; every later answer
            must match it, and score every class of the batch's labels and targets: :meth:`expect_classes`).
    """

    def __init__(self, oracle: Oracle, n: int, budget: int, device: torch.device | None = None) -> None:
        self.oracle = oracle
        self.budget = int(budget)
        self.queries = torch.zeros(n, dtype=torch.int64, device=device)
        self.forward = 0
        self.backward = 0
        self.info: dict[str, Any] = {}
        self.classes: int | None = None
        self._need = 0

    def expect_classes(self, y: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Require every answer to score the classes of the labels ``y`` and ``target`` (``(n,)`` each)."""
        top = [int(t.max()) for t in (y, target) if t is not None and t.numel()]
        self._need = max(top, default=-1) + 1

    def _check(self, out: torch.Tensor) -> torch.Tensor:
        """``ValueError`` naming the answer unless it has as many scores per row as the first answer and at
        least one per class of the labels and targets."""
        k = int(out.shape[1])
        who = f"the query target ({self.oracle._name()})"
        if k < self._need:
            raise ValueError(f"{who} answered {k} scores per row (shape {tuple(out.shape)}), but the batch has "
                             f"label or target class {self._need - 1}; it must score every class (at least "
                             f"{self._need}), or the labels belong to another dataset")
        if self.classes is not None and k != self.classes:
            raise ValueError(f"{who} answered {k} scores per row (shape {tuple(out.shape)}) after answering "
                             f"{self.classes} before; a classifier scores the same classes every time")
        self.classes = k
        return out

    @property
    def output(self) -> str:
        return self.oracle.output

    @property
    def module(self) -> nn.Module | None:
        return self.oracle.module

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluator's final success check (one forward pass, not an attacker's query)."""
        self.forward += 1
        return self._check(self.oracle.evaluate(x))

    def remaining(self) -> torch.Tensor:
        """Queries left per image, int64 ``(n,)``."""
        return self.budget - self.queries

    def _ask(self, x: torch.Tensor, rows_of: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise BlackBoxError("a query oracle gives no gradients: a black-box attack sees only the target's "
                                "outputs. Estimate the gradient from queries (NES) or use a white-box attack "
                                "such as pgd on a model you hold")
        if x.ndim != 4 or rows_of.shape != (x.shape[0],):
            raise ValueError(f"a query is (M, C, H, W) rows with one image index each, got {tuple(x.shape)} "
                             f"rows and {tuple(rows_of.shape)} indices")
        if x.shape[0] == 0:
            return self.oracle._forward(x)
        counts = torch.bincount(rows_of, minlength=self.queries.numel())
        over = (self.queries + counts > self.budget).nonzero().flatten()
        if over.numel():
            i = int(over[0])
            raise QueryBudgetError(f"image {i} would spend {int(self.queries[i] + counts[i])} queries, over its "
                                   f"budget of {self.budget}")
        self.queries += counts
        self.forward += -(-x.shape[0] // self.oracle.max_rows)
        with torch.no_grad():
            out = self.oracle._forward(x)
        self._check(out)
        if self.oracle.on_query is not None:
            self.oracle.on_query(x, rows_of, out)
        return out

    def scores(self, x: torch.Tensor, rows_of: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities ``(M, K)`` of the rows ``x``; ``rows_of[m]`` is the batch image row ``m``
        belongs to. Log-probabilities carry exactly the probabilities' information (and their margins equal
        the logits' margins)."""
        if self.oracle.output != "scores":
            raise BlackBoxError("this oracle answers with labels only (output='label'); a score-based attack "
                                "needs class probabilities: use Oracle(model, output='scores') or a "
                                "decision-based attack such as hsj")
        return F.log_softmax(self._ask(x, rows_of).float(), dim=1)

    def labels(self, x: torch.Tensor, rows_of: torch.Tensor) -> torch.Tensor:
        """Top-1 labels ``(M,)`` of the rows ``x``."""
        return self._ask(x, rows_of).argmax(1)
