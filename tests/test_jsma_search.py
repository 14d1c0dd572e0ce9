"""JSMA's saliency search: exactness against a brute-force reference, tiling, pruning, and its memory bound."""

from __future__ import annotations

import itertools
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from advkit.attacks.saliency.search import (
    DEFAULT_MAX_MEMORY,
    estimate_memory,
    fixed_bytes,
    max_iterations,
    pair_search,
    plan_search,
    single_search,
)


def reference_pairs(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor, sign: float) -> list:
    """Algorithm 3 of the paper, literally: every pair p < q in order, strict improvement (first maximum wins).

    Vectorised with numpy in float32 (same IEEE operations as a Python loop over pairs), so D in the hundreds
    stays fast; :func:`loop_pairs` below is the plain loop, checked against this on small inputs.
    """
    out = []
    for s in range(a.shape[0]):
        an, bn = a[s].numpy(), b[s].numpy()
        alpha = an[:, None] + an[None, :]
        beta = bn[:, None] + bn[None, :]
        ok = (alpha > 0) & (beta < 0) if sign > 0 else (alpha < 0) & (beta > 0)
        dom = domain[s].numpy()
        ok &= dom[:, None] & dom[None, :] & np.triu(np.ones_like(ok), 1)
        score = np.where(ok, np.abs(alpha * beta), 0).astype(np.float32)
        flat = int(np.argmax(score))  # first maximum in row-major (p, q) order
        out.append(divmod(flat, a.shape[1]) if score.flat[flat] > 0 else None)
    return out


def loop_pairs(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor, sign: float) -> list:
    out = []
    for s in range(a.shape[0]):
        best, choice = 0.0, None
        feats = [i for i in range(a.shape[1]) if domain[s, i]]
        for p, q in itertools.combinations(feats, 2):
            alpha, beta = a[s, p] + a[s, q], b[s, p] + b[s, q]
            if (alpha > 0 and beta < 0) if sign > 0 else (alpha < 0 and beta > 0):
                score = float((alpha * beta).abs())
                if score > best:
                    best, choice = score, (p, q)
        out.append(choice)
    return out


def _case(kind: str, g: torch.Generator, n: int = 3, d: int = 200) -> tuple[torch.Tensor, ...]:
    a = torch.randn(n, d, generator=g)
    noise = torch.randn(n, d, generator=g)
    b = {"random": noise, "softmax": -a * (1 + 1e-6 * noise),  # softmax outputs sum to 1: b ~ -a
         "line": 0.7 * a,  # all gradients along one direction: no admissible pair at all
         "anti": a + 0.05 * noise,  # (u, v) anti-correlated: a long Pareto front
         "ties": noise.round()}[kind]
    if kind == "ties":
        a = (2 * a).round()
    domain = torch.rand(n, d, generator=g) > 0.2
    return a, b, domain


def _got(p, q, found) -> list:
    return [(int(p[i]), int(q[i])) if found[i] else None for i in range(p.numel())]


def test_reference_is_the_literal_loop():
    g = torch.Generator().manual_seed(1)
    for kind in ("random", "ties"):
        a, b, dom = _case(kind, g, d=24)
        for sign in (1.0, -1.0):
            assert reference_pairs(a, b, dom, sign) == loop_pairs(a, b, dom, sign)


@pytest.mark.parametrize("kind", ["random", "softmax", "line", "anti", "ties"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pair_search_is_exact(kind, sign):
    """Same pair as the brute force (ties to the first (p, q)), whatever the tiling, with and without pruning."""
    g = torch.Generator().manual_seed(["random", "softmax", "line", "anti", "ties"].index(kind) * 2 + (sign > 0))
    a, b, dom = _case(kind, g)
    ref = reference_pairs(a, b, dom, sign)
    if kind == "line":
        assert ref == [None, None, None]
    n, d = a.shape
    for cap in (None, fixed_bytes(n, d) + 64 * 64 * 8, fixed_bytes(n, d) + 2 * 64 * 100 * 8 + 4, DEFAULT_MAX_MEMORY):
        plan = plan_search(n, d, torch.float32, cap)
        for prune in (True, False):
            assert _got(*pair_search(a, b, dom, sign, plan, prune=prune)) == ref, (cap, prune)


def test_tiny_softmax_gradients_do_not_underflow():
    """Products of 1e-25 derivatives underflow float32; the exact power-of-two rescaling keeps the choice."""
    g = torch.Generator().manual_seed(3)
    a, b, dom = _case("random", g, d=150)
    ref = reference_pairs(a.double(), b.double(), dom, 1.0)
    plan = plan_search(3, 150)
    assert _got(*pair_search(a * 1e-25, b * 1e-25, dom, 1.0, plan)) == ref


def test_single_search_is_eq_8():
    g = torch.Generator().manual_seed(4)
    a, b, dom = _case("random", g, d=50)
    i, found = single_search(a, b, dom, 1.0)
    s = torch.where((a > 0) & (b < 0) & dom, a * b.abs(), torch.zeros(()))
    assert torch.equal(i, s.argmax(1)) and bool(found.all())
    i, found = single_search(-a.abs(), b, dom, 1.0)  # no feature raises the target
    assert not found.any()


def test_empty_domain_finds_nothing():
    a, b = torch.randn(2, 300), torch.randn(2, 300)
    p, q, found = pair_search(a, b, torch.zeros(2, 300, dtype=torch.bool), 1.0, plan_search(2, 300))
    assert not found.any()


def test_iteration_cap_is_the_papers():
    assert max_iterations(784, 0.145, pairs=True) == 56  # floor(784 * 0.145 / 2)
    assert max_iterations(784, 0.145, pairs=False) == 113
    assert max_iterations(100, 0.29, pairs=False) == 29  # not 28 from 0.29 * 100 = 28.999...


class PeakMemory(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created while active (every op output, views counted once)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = st.data_ptr()
                if key not in self.live and st.nbytes():
                    self.live[key] = st.nbytes()
                    self.current += st.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(t, self._free, key)
        return out


@pytest.mark.parametrize("n,d,cap", [(4, 3072, 1 << 20), (4, 3072, 4 << 20), (16, 784, 4 << 20),
                                     (4, 3072, 64 << 20)])
def test_measured_memory_within_estimate(n, d, cap):
    """Unpruned (the worst case), the tensors the search allocates peak at or below the estimate, which is at
    most the cap, and the estimate is not vacuous (the measurement reaches most of the tile)."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    dom = torch.rand(n, d, generator=g) > 0.1
    plan = plan_search(n, d, torch.float32, cap)
    with PeakMemory() as m:
        pair_search(a, b, dom, 1.0, plan, prune=False)
    assert m.peak <= plan.peak_bytes == estimate_memory(n, d, torch.float32, cap) <= cap
    assert m.peak >= 0.9 * plan.tile_bytes
    with PeakMemory() as m:
        pair_search(a, b, dom, 1.0, plan, prune=True)
    assert m.peak <= plan.peak_bytes


def test_imagenet_size_search_stays_under_the_cap():
    """3x224x224 = 150,528 features: 2.3e10 pairs (~169 GiB as one float32 score tensor pair) in 64 MiB."""
    d = 3 * 224 * 224
    assert estimate_memory(1, d, max_memory_bytes=None) == 2 * 4 * d * d + fixed_bytes(1, d)
    cap = 64 << 20
    g = torch.Generator().manual_seed(6)
    img = torch.randn(1, 1, 224, 224, generator=g)
    smooth = torch.nn.functional.avg_pool2d(img, 9, 1, 4).repeat(1, 3, 1, 1).flatten(1)  # structured gradients
    a, b = smooth + 0.1 * torch.randn(1, d, generator=g), -smooth + 0.3 * torch.randn(1, d, generator=g)
    dom = torch.ones(1, d, dtype=torch.bool)
    plan = plan_search(1, d, torch.float32, cap)
    with PeakMemory() as m:
        p, q, found = pair_search(a, b, dom, 1.0, plan)
    assert m.peak <= plan.peak_bytes <= cap and bool(found[0])
    # The pair is the best one: no feature can beat it as a partner of the chosen ones, checked in O(D).
    for keep in (int(p), int(q)):
        alpha, beta = a[0, keep] + a[0], b[0, keep] + b[0]
        score = torch.where((alpha > 0) & (beta < 0), alpha * beta.abs(), torch.zeros(()))
        score[keep] = 0
        best = float((a[0, p] + a[0, q]) * (b[0, p] + b[0, q]).abs())
        assert float(score.max()) <= best


def test_refuses_before_allocating():
    with pytest.raises(ValueError, match=r"needs at least .* bytes .*max_memory_bytes=1,000.*raise max_memory_"):
        plan_search(8, 784, torch.float32, 1000)
    with pytest.raises(ValueError, match="lower batch_size"):
        estimate_memory(64, 3 * 224 * 224, torch.float32, 64 << 20)
    assert estimate_memory(64, 784) <= DEFAULT_MAX_MEMORY
