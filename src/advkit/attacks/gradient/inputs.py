"""Input transforms: the copies of the point whose gradients the loop averages.

* ``admix``: Wang, He, Guo, Wang, Wang, Yang, ICCV 2021, "Admix: Enhancing the Transferability of Adversarial
  Attacks": ``m2 = 3`` copies ``x + eta * x'`` mixed with images ``x'`` of other classes (``eta = 0.2``), each at
  the ``m1 = 5`` scales ``1 / 2^i`` of SI; the gradient is the mean over the ``m1 * m2`` copies, labels unchanged.
* ``si``: Lin et al., ICLR 2020 (scale invariance): the ``m = 5`` copies ``x / 2^i``, ``i = 0..m-1``.
* ``di``: Xie et al., CVPR 2019: each copy resized and padded at random with probability 0.5.

Admix and SI build the copies (order 10), DI then transforms each one (order 20), as the SI and Admix papers
combine them with DI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, CopyFn, Part, register_part
from advkit.attacks.gradient.transforms import input_diversity


def _scaled(f: CopyFn, s: float) -> CopyFn:
    return lambda t: f(t) * s


@register_part
@dataclass(frozen=True)
class ScaleInvariance(Part):
    """SI (Lin et al. 2020): average the gradients of ``x / 2^i`` for ``i = 0 .. si_copies - 1`` (default 5)."""

    token: ClassVar[str] = "si"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Lin et al. 2020"
    aliases: ClassVar[dict[str, str]] = {"m": "si_copies"}
    excludes: ClassVar[dict[str, str]] = {"admix": "Admix already averages over SI's scales (admix_scales)"}

    si_copies: int = 5

    def check(self) -> None:
        check_number("si_copies (SI's number of scaled copies)", self.si_copies, lo=1, integer=True)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        return [_scaled(f, 1.0 / 2 ** i) for f in copies for i in range(self.si_copies)]


def other_class_partner(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each sample, a random index of a sample with another label (any other sample when the batch holds one
    class; itself in a batch of one). Returns int64 ``(N,)``."""
    n = y.shape[0]
    scores = torch.rand(n, n, generator=generator).to(y.device)
    differ = y[:, None] != y[None, :]
    other = ~torch.eye(n, dtype=torch.bool, device=y.device)
    pool = torch.where(differ.any(1, keepdim=True), differ, other) if n > 1 else ~other
    return scores.masked_fill(~pool, -1.0).argmax(1)


@register_part
@dataclass(frozen=True)
class Admix(Part):
    """Admix (Wang et al. 2021): copies ``(x + eta * x') / 2^i`` for ``admix_images`` partners ``x'`` of other
    classes (clean images of the batch, held constant) and ``admix_scales`` scales."""

    token: ClassVar[str] = "admix"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Wang et al. 2021"
    aliases: ClassVar[dict[str, str]] = {"eta": "admix_eta", "m1": "admix_scales", "m2": "admix_images"}
    excludes: ClassVar[dict[str, str]] = {"si": "Admix already averages over SI's scales (admix_scales)"}

    admix_scales: int = 5
    admix_images: int = 3
    admix_eta: float = 0.2

    def check(self) -> None:
        check_number("admix_scales (m1)", self.admix_scales, lo=1, integer=True)
        check_number("admix_images (m2)", self.admix_images, lo=1, integer=True)
        check_number("admix_eta (the mixing strength)", self.admix_eta, lo=0.0)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        out: list[CopyFn] = []
        for _ in range(self.admix_images):
            partner = (self.admix_eta * ctx.x[other_class_partner(ctx.y, ctx.generator)]).detach()
            for f in copies:
                mixed = (lambda t, f=f, p=partner: f(t) + p)  # noqa: E731
                out.extend(_scaled(mixed, 1.0 / 2 ** i) for i in range(self.admix_scales))
        return out


@register_part
@dataclass(frozen=True)
class InputDiversity(Part):
    """DI (Xie et al. 2019): with probability ``di_prob`` (0.5) resize to a random size up to ``di_resize_rate``
    (1.1) times the input and pad at random; one draw per copy and step."""

    token: ClassVar[str] = "di"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 20
    paper: ClassVar[str] = "Xie et al. 2019"
    aliases: ClassVar[dict[str, str]] = {"prob": "di_prob", "p": "di_prob", "resize_rate": "di_resize_rate"}

    di_prob: float = 0.5
    di_resize_rate: float = 1.1

    def check(self) -> None:
        check_number("DI probability (di_prob)", self.di_prob, lo=0.0, hi=1.0)
        check_number("DI resize_rate (di_resize_rate)", self.di_resize_rate, lo=1.0, lo_open=True)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        p, r, g = self.di_prob, self.di_resize_rate, ctx.generator
        if not p:
            return copies
        def diverse(f: CopyFn) -> CopyFn:
            return lambda t: input_diversity(f(t), p, r, g)

        return [diverse(f) for f in copies]
