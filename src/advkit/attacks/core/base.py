"""The attack contract shared by every attack, and its two access contracts.

An attack is a frozen configuration plus a pure call::

    attack = advkit.attacks.create("pgd", eps=8/255, steps=10)
    result = attack(model, x, y, target=None, generator=g)

The public ``__call__`` is final and the same for every attack: it validates the inputs (``ValueError`` naming the
problem), opens the attack's access to the model, puts the model in eval mode with frozen parameters and restores
both afterwards (even when the attack raises), runs the attack, then finishes in one shared step: projects the
result onto the budget and ``[0, 1]`` and measures success with one more forward pass.

How an attack reaches the model is its contract, one of two:

* :class:`ModelAttack` (white-box: gradient and saliency attacks, and the attacks that apply an artefact or noise):
  ``_run`` calls the model through a pass-counting :class:`Counter`, with gradients enabled. Gradients come from
  ``torch.autograd.grad``, never ``loss.backward()``.
* :class:`~advkit.attacks.query.base.QueryAttack` (black-box): ``_search`` sees only a counting query session under
  ``no_grad``, takes ``start=``, and the result carries the queries spent per image.

An attack's ``kind`` (``"gradient"``, ``"saliency"``, ``"query"``, ``"artefact"``, ``"control"``) is a class
attribute read by the registry; listings and checks ask the registry, never a list of names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Union, final

import torch
from torch import nn

from advkit.attacks.core.budget import check_eps, project
from advkit.attacks.core.checks import check_labels, check_model_inputs, check_start, validate_inputs
from advkit.attacks.core.losses import attack_loss
from advkit.models.frozen import frozen_eval

if TYPE_CHECKING:
    from advkit.attacks.query.oracle import Oracle

Target = Union[nn.Module, Callable[[torch.Tensor], torch.Tensor], "Oracle"]
"""What an attack is called on: a classifier (pixels in ``[0, 1]`` in, logits out), or for a query attack an
:class:`~advkit.attacks.query.oracle.Oracle` the caller built."""

__all__ = ["Access", "Attack", "Target", "AttackResult", "Counter", "ModelAttack", "attack_loss"]


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial batch ``(N, C, H, W)`` in ``[0, 1]``, within the budget of ``x``.
        success: bool ``(N,)``: the model predicts ``target`` (targeted) or not ``y`` (untargeted) on ``x_adv``.
        pred: int64 ``(N,)`` predictions on ``x_adv``.
        forward_passes: batched forward passes through the model, including the final success check.
        backward_passes: batched backward passes (vector-Jacobian products) through the model.
        target: the target classes for a targeted attack, else ``None``.
        info: what the attack reports about itself (e.g. the skip connections SGM found and how often its
            hooks fired).
        queries: int64 ``(N,)``: the model queries spent on each image (query attacks), else ``None``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    pred: torch.Tensor
    forward_passes: int
    backward_passes: int
    target: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    queries: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Share of samples on which the attack succeeded."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0


class Counter:
    """Counts the forward and backward passes an attack spends; attacks call the model through it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = 0
        self.backward = 0
        self.info: dict[str, Any] = {}
        self.queries: torch.Tensor | None = None  # a model attack spends passes, not per-image queries

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.forward += 1
        return self.model(x)

    def loss(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` of the model's output at ``x`` (one counted forward pass); a model that fuses losses (an ensemble
        with ``fuse="loss"``, :meth:`advkit.models.ensemble.Ensemble.fused_loss`) gives its members' mean."""
        self.forward += 1
        fused = getattr(self.model, "fused_loss", None)
        return fused(x, fn) if fused is not None else fn(self.model(x))

    @property
    def module(self) -> nn.Module:
        """The model, to freeze and put in eval mode for the attack."""
        return self.model

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the final success check (one counted forward pass)."""
        return self(x)

    def grad(self, out: torch.Tensor, inputs: torch.Tensor, grad_outputs: torch.Tensor | None = None,
             retain_graph: bool = False) -> torch.Tensor:
        """``d out / d inputs`` by ``torch.autograd.grad`` (one backward pass)."""
        self.backward += 1
        (g,) = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, retain_graph=retain_graph)
        return g


class Access(Protocol):
    """What an attack reaches the model through (a :class:`Counter`, or a query attack's session): it counts what
    the attack spends and evaluates the result for the shared finishing step."""

    @property
    def forward(self) -> int:
        """Batched forward passes spent so far."""

    @property
    def backward(self) -> int:
        """Batched backward passes spent so far."""

    @property
    def info(self) -> dict[str, Any]:
        """What the attack reports about itself."""

    @property
    def queries(self) -> torch.Tensor | None:
        """Queries spent per image (a query session), or ``None``."""

    @property
    def module(self) -> nn.Module | None:
        """The network to freeze and put in eval mode, or ``None`` (a callable without parameters)."""

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits or log-probabilities for the final success check."""


@dataclass(frozen=True)
class Attack(ABC):
    """The contract of every attack: a frozen configuration; subclasses are frozen dataclasses.

    Subclass one of the two access contracts, :class:`ModelAttack` or
    :class:`~advkit.attacks.query.base.QueryAttack`, never this class directly.

    Attributes:
        eps: the budget in pixel units of ``[0, 1]``, in ``norm``.
        norm: ``"linf"``, ``"l2"`` or ``"l0"``: which budget ``eps`` bounds (``l0`` attacks bound themselves). A
            setting where the attack lets the user choose; fixed (``init=False``) where it does not.

    Class attributes:
        name: registry name.
        kind: the attack's family, for the registry: ``"gradient"``, ``"saliency"``, ``"query"``, ``"artefact"``
            or ``"control"``.
        black_box: the attack reaches the model only through a query oracle (:mod:`advkit.attacks.query.oracle`),
            under ``no_grad``; it takes ``start=`` and reports ``AttackResult.queries``. Set by the contract.
        targeted_only: the attack needs a target.
        takes_path: the attack applies a file (``generator:PATH``, ``uap:PATH``): ``create`` passes ``path=``.
        unused: inherited settings the attack does not use; ``create`` refuses them rather than record a value
            that changed nothing.
    """

    name: ClassVar[str] = "attack"
    kind: ClassVar[str] = "gradient"
    black_box: ClassVar[bool] = False
    targeted_only: ClassVar[bool] = False
    takes_path: ClassVar[bool] = False  # named ``NAME:PATH`` (a trained generator, a universal perturbation)
    unused: ClassVar[frozenset[str]] = frozenset()  # inherited settings the attack ignores (JSMA: eps)
    unused_reason: ClassVar[str] = ""  # why, for the error that refuses them

    eps: float = field(default=8 / 255)
    norm: str = "linf"

    def __post_init__(self) -> None:
        check_eps(self.eps)

    @property
    def title(self) -> str:
        """What messages call the attack: its registry name (a composition: the name it was created from)."""
        return self.name

    def config(self) -> dict[str, Any]:
        """The resolved settings, for run records: the name, then every setting the attack was created with, and
        its norm (a setting, or fixed by the attack)."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)
                                      if f.repr and f.name not in self.unused and (f.init or f.name == "norm")}}

    @final
    def __call__(self, model: Target, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, keep_mode: bool = False,
                 start: torch.Tensor | None = None) -> AttackResult:
        """Run the attack on ``model`` (pixels in ``[0, 1]`` in, logits out).

        Args:
            model: a classifier taking ``(N, C, H, W)`` pixels in ``[0, 1]`` (query attacks: also an
                :class:`~advkit.attacks.query.oracle.Oracle`).
            x: clean inputs ``(N, C, H, W)``, ``N >= 1``, in ``[0, 1]``, in the model's float dtype (float32; float64
                images need a float64 model). 8-bit images are refused: pass ``x.float() / 255``.
            y: true labels ``(N,)``, int64.
            target: target labels ``(N,)`` for a targeted attack (each different from ``y``), else ``None``.
            generator: source of randomness (random start, input diversity); the same seed gives the same result.
            keep_mode: leave every module's train / eval mode as it is (parameters are still frozen). For
                adversarial training that crafts through the training-mode network; attackers use eval mode.
            start: query attacks only: the example to start from (for instance a transfer example crafted on
                a surrogate), projected onto the budget around ``x`` first.

        Returns:
            An :class:`AttackResult`.

        Raises:
            ValueError: naming the problem with the inputs (wrong dtype, an empty batch, meta tensors, a model whose
                dtype differs from ``x``'s) and the fix.
        """
        validate_inputs(x, y, target)
        k = getattr(model, "num_classes", None)
        if isinstance(k, int):
            check_labels(y, target, k)
        if self.targeted_only and target is None:
            raise ValueError(f"{self.title} is a targeted attack: pass target= (a label per sample, != y)")
        if start is not None:
            if not self.black_box:
                raise ValueError(f"{self.title} is a {self.kind} attack and does not take start=: only query attacks "
                                 f"(kind 'query' in `advkit attacks list`) start from a given example")
            start = self.project(check_start(start, x).detach(), x)
        access = self._open(model, x)
        module = access.module
        check_model_inputs(module, x)
        with frozen_eval(module, eval_mode=not keep_mode) if module is not None else nullcontext():
            x_adv = self._execute(access, x.detach(), y, target, generator, start)
            return self._finish(access, x_adv, x, y, target)

    def _finish(self, access: Access, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None) -> AttackResult:
        """The one finishing step of every attack: project onto the budget and ``[0, 1]``, one forward pass to
        measure success, and the record of what was spent."""
        x_adv = self.project(x_adv.detach(), x)
        with torch.no_grad():
            logits = access.evaluate(x_adv)
        check_labels(y, target, logits.shape[1])
        pred = logits.argmax(1)
        success = pred == target if target is not None else pred != y
        queries = access.queries.clone() if access.queries is not None else None
        return AttackResult(x_adv=x_adv, success=success, pred=pred, forward_passes=access.forward,
                            backward_passes=access.backward, target=target, info=access.info, queries=queries)

    @abstractmethod
    def _open(self, model: Any, x: torch.Tensor) -> Access:
        """The attack's access to ``model``: a pass :class:`Counter` (model attacks) or a query session."""

    @abstractmethod
    def _execute(self, access: Any, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 generator: torch.Generator | None, start: torch.Tensor | None) -> torch.Tensor:
        """Run the attack through ``access``; the result is projected by the finishing step."""

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the budget around ``x`` and onto ``[0, 1]``."""
        return project(x_adv, x, self.eps, self.norm)


@dataclass(frozen=True)
class ModelAttack(Attack):
    """The white-box contract: the attack calls the model through a pass-counting :class:`Counter`, with gradients
    enabled. Subclasses implement :meth:`_run` only."""

    @abstractmethod
    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        """Return the adversarial batch (it is projected onto the budget and ``[0, 1]`` afterwards)."""

    def _open(self, model: nn.Module, x: torch.Tensor) -> Counter:
        return Counter(model)

    def _execute(self, access: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 generator: torch.Generator | None, start: torch.Tensor | None) -> torch.Tensor:
        with torch.enable_grad():
            return self._run(access, x, y, target, generator)
