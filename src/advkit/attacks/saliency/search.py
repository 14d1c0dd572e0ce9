"""The saliency-map search of JSMA (Papernot et al., "The Limitations of Deep Learning in Adversarial Settings",
EuroS&P 2016, Algorithms 1-3), exact and with bounded memory.

For target class ``t`` let ``a = dF_t/dx`` and ``b = sum_{j != t} dF_j/dx`` (each ``(B, D)``). The pair variant
(Algorithm 3) picks, per sample, the pair ``p < q`` of the search domain that maximises
``(a_p + a_q) * |b_p + b_q|`` subject to ``a_p + a_q > 0`` and ``b_p + b_q < 0`` (theta > 0; for theta < 0 the
mirrored ``a_p + a_q < 0``, ``b_p + b_q > 0``, maximising ``|a_p + a_q| * (b_p + b_q)``). The single-feature
variant (Algorithm 1, eq. 8) does the same over single features.

Both cases reduce to maximising ``relu(u_p + u_q) * relu(v_p + v_q)`` with ``u = s * a`` and ``v = -s * b``
(``s`` the sign of theta): the score is positive exactly when both conditions hold, so "no admissible pair" is a
best score of 0. The search is exact; three things keep it fast and bounded:

1. **Power-of-two rescaling.** ``u`` and ``v`` are multiplied per sample by a power of two so their largest
   magnitude is in ``[0.5, 1)``. This is exact in floating point, so the ordering of scores is bit-for-bit the
   ordering of the raw formula, but products of tiny softmax derivatives (1e-20 x 1e-20) no longer underflow to 0.
2. **Pruning that cannot lose the optimum.** The score is non-decreasing in ``(u_q, v_q)``, so for every feature
   ``p``, ``upper_p = max_g f(p, cover_g)`` over at most 64 points dominating all features (the Pareto front of
   the points ``(u_q, v_q)``, or corners of runs of it) bounds every pair through ``p``; ``upper_p`` is set to 0
   when no feature at all can satisfy both conditions with ``p`` (one binary search along the front). The best
   real pair among the 64 features with the largest bounds is a lower bound ``LB`` of the optimum, and features
   with ``upper_p < LB`` can belong to no best pair (nor to a tie) and are dropped. Rounding is monotone, so the
   bounds hold in floating point. The exact scan then runs over the survivors (a handful on MNIST gradients),
   in index order. Worst case (nothing pruned): the full scan, plus ``O(D log D + 64 D)`` of bounding.
3. **Tiles.** The ``D x D`` score matrix is never materialised: it is scanned in tiles of
   ``(samples, rows, cols)`` holding two float tensors, sized so that the fixed per-sample vectors plus one tile
   fit in ``max_memory_bytes``, with a running maximum. Ties go to the lexicographically smallest ``(p, q)``,
   whatever the tiling, so results do not depend on the memory cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_MAX_MEMORY = 1 << 30
"""Default cap on the pair search's working memory: 1 GiB."""

MIN_BLOCK = 64
"""The smallest tile the planner accepts is one sample x ``MIN_BLOCK`` x ``MIN_BLOCK`` pairs."""

COVER = 64
"""Points in the cover that bounds the pairs through each feature, and candidates for the lower bound."""

FIXED_FLOATS = 6
"""Float ``(B, D)`` temporaries the search holds besides a tile (see :func:`fixed_bytes`)."""


@dataclass(frozen=True)
class SearchPlan:
    """How the pair search tiles the score matrix.

    Attributes:
        batch: samples searched together.
        n_features: ``D``.
        samples: samples per tile.
        rows: rows (first feature ``p``) per tile.
        cols: columns (second feature ``q``) per tile.
        tile_bytes: bytes of the two float tensors of one tile.
        fixed_bytes: bytes of the per-sample vectors held during the search.
    """

    batch: int
    n_features: int
    samples: int
    rows: int
    cols: int
    tile_bytes: int
    fixed_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Upper bound of the search's extra memory: the fixed vectors plus one tile."""
        return self.fixed_bytes + self.tile_bytes


def _itemsize(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def fixed_bytes(batch: int, n_features: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the ``(B, D)`` vectors the search keeps besides a tile.

    Counted generously: ``FIXED_FLOATS`` float vectors (rescaled ``u`` and ``v``, their masked copies, the bound
    and a temporary), bool masks and the int64 indices of the sort that gathers the surviving features.
    """
    per = FIXED_FLOATS * _itemsize(dtype) + 3 + 2 * 8
    return batch * n_features * per


def plan_search(batch: int, n_features: int, dtype: torch.dtype = torch.float32,
                max_memory_bytes: int | None = DEFAULT_MAX_MEMORY, pairs: bool = True) -> SearchPlan:
    """Choose the tiling of the pair search so that its working memory stays under ``max_memory_bytes``.

    Args:
        batch: samples searched together (``B``).
        n_features: features per sample (``D``).
        dtype: floating dtype of the gradients.
        max_memory_bytes: the cap; ``None`` plans one tile for the whole ``B x D x D`` score tensor (the
            unchunked requirement, for comparison).
        pairs: the pair variant; the single-feature variant needs no tile.

    Returns:
        A :class:`SearchPlan` whose ``peak_bytes`` is at most the cap.

    Raises:
        ValueError: when the cap cannot hold the fixed vectors plus one tile of one sample, with the estimate and
            what to change.
    """
    if batch < 1 or n_features < 1:
        raise ValueError(f"batch and n_features must be >= 1, got {batch} and {n_features}")
    item = _itemsize(dtype)
    fixed = fixed_bytes(batch, n_features, dtype)
    per = 2 * item  # two float tensors per tile element
    if not pairs:
        if max_memory_bytes is not None and fixed > max_memory_bytes:
            raise _refuse(fixed, batch, n_features, max_memory_bytes, pairs)
        return SearchPlan(batch, n_features, batch, 0, 0, 0, fixed)
    n = n_features
    if max_memory_bytes is None:
        return SearchPlan(batch, n, batch, n, n, batch * n * n * per, fixed)
    m = min(n, MIN_BLOCK)
    if fixed + m * m * per > max_memory_bytes:
        raise _refuse(fixed + m * m * per, batch, n, max_memory_bytes, pairs)
    elements = (max_memory_bytes - fixed) // per
    samples = min(batch, max(1, elements // (m * m)))
    e = elements // samples  # pair elements per sample in one tile
    if e >= n * n:
        rows = cols = n
    elif e >= n * m:
        rows, cols = e // n, n
    else:
        rows, cols = m, min(n, e // m)
    return SearchPlan(batch, n, samples, rows, cols, samples * rows * cols * per, fixed)


def _refuse(need: int, batch: int, n: int, cap: int, pairs: bool) -> ValueError:
    what = "pair search" if pairs else "feature search"
    return ValueError(
        f"JSMA's {what} for a batch of {batch} sample(s) with {n} features needs at least {need:,} bytes "
        f"({need / 2**20:.1f} MiB) but max_memory_bytes={cap:,}; raise max_memory_bytes or lower batch_size"
    )


def estimate_memory(batch: int, n_features: int, dtype: torch.dtype = torch.float32,
                    max_memory_bytes: int | None = DEFAULT_MAX_MEMORY, pairs: bool = True) -> int:
    """Peak extra bytes of JSMA's saliency search for ``batch`` samples of ``n_features`` features.

    With a cap this is the planned peak (fixed vectors + one tile, at most the cap); with
    ``max_memory_bytes=None`` it is what materialising the whole ``B x D x D`` score tensor would take
    (one 3x224x224 image: ~169 GiB in float32). Model activations and gradients are not included.

    Raises:
        ValueError: the cap cannot hold one tile (see :func:`plan_search`).
    """
    return plan_search(batch, n_features, dtype, max_memory_bytes, pairs).peak_bytes


def _rescale(z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """``z * 2**k`` per row, ``k`` chosen so the largest ``|z|`` over the domain is in ``[0.5, 1)`` (exact)."""
    m = torch.where(domain, z.abs(), 0.0).amax(1)
    _, e = torch.frexp(m)
    scale = torch.exp2(-e.to(z.dtype))
    scale = torch.where(m > 0, scale, torch.ones_like(scale))
    return z * scale[:, None]


def prepare(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor,
            sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``u = s * a`` and ``v = -s * b``, rescaled, with ``-inf`` outside the domain. Shapes ``(B, D)``."""
    ninf = torch.tensor(float("-inf"), dtype=a.dtype, device=a.device)
    u = torch.where(domain, _rescale(a, domain) * sign, ninf)
    v = torch.where(domain, _rescale(b, domain) * -sign, ninf)
    return u, v


def single_search(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor,
                  sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The single-feature saliency map of Papernot et al. 2016, eq. (8), maximised over the domain.

    Args:
        a: ``dF_t/dx``, ``(B, D)``.
        b: ``sum_{j != t} dF_j/dx``, ``(B, D)``.
        domain: bool ``(B, D)``, the features that may still move.
        sign: ``+1.0`` (theta > 0) or ``-1.0``.

    Returns:
        ``(i, found)``: the chosen feature ``(B,)`` (the first maximiser) and whether it is admissible ``(B,)``.
    """
    u, v = prepare(a, b, domain, sign)
    score = u.clamp_(min=0).mul_(v.clamp_(min=0))
    best, i = score.max(1)
    return i, best > 0


def _tile(plan: SearchPlan, n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(samples, rows, cols)`` of a tile over an ``n_rows x n_cols`` block within the plan's element budget."""
    per_sample = max(1, plan.rows * plan.cols)
    cols = max(1, min(n_cols, per_sample))
    return max(1, plan.samples), max(1, min(n_rows, per_sample // cols)), cols


def _scan(u: torch.Tensor, v: torch.Tensor, plan: SearchPlan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact maximum of ``relu(u_p + u_q) * relu(v_p + v_q)`` over ``p < q``, tile by tile.

    Args:
        u, v: ``(B, n)``; ``u = -inf`` marks padding.
        plan: the tile budget.

    Returns:
        ``(best (B,), p (B,), q (B,))``; ties go to the lexicographically smallest ``(p, q)``.
    """
    bsz, n = u.shape
    best = u.new_zeros(bsz)
    flat = torch.zeros(bsz, dtype=torch.long, device=u.device)
    s_step, r, c = _tile(plan, n, n)
    for s0 in range(0, bsz, s_step):
        s1 = min(bsz, s0 + s_step)
        us, vs = u[s0:s1], v[s0:s1]
        for i0 in range(0, n - 1, r):
            i1 = min(n, i0 + r)
            for j0 in range(i0 + 1, n, c):
                j1 = min(n, j0 + c)
                tile = (us[:, i0:i1, None] + us[:, None, j0:j1]).clamp_(min=0)
                other = (vs[:, i0:i1, None] + vs[:, None, j0:j1]).clamp_(min=0)
                tile.mul_(other)
                del other
                if j0 < i1:  # the block straddles the diagonal: keep q > p only
                    tile.triu_(i0 - j0 + 1)
                val, ix = tile.view(s1 - s0, -1).max(1)
                del tile
                width = j1 - j0
                f = (i0 + torch.div(ix, width, rounding_mode="floor")) * n + j0 + ix % width
                cur, cur_f = best[s0:s1], flat[s0:s1]
                better = (val > cur) | ((val == cur) & (f < cur_f))
                best[s0:s1] = torch.where(better, val, cur)
                flat[s0:s1] = torch.where(better, f, cur_f)
    return best, torch.div(flat, n, rounding_mode="floor"), flat % n


def _front(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Pareto front of the points ``(u_q, v_q)``: every feature is weakly dominated by a front point.

    Returns ``(fu, fv, counts)``: ``(B, k)`` front coordinates in decreasing ``u`` (so strictly increasing
    ``v``), padded with ``-inf``, and the front size per sample ``(B,)``.
    """
    uo, order = torch.sort(u, dim=1, descending=True, stable=True)
    vo = v.gather(1, order)
    del order
    prev = vo.cummax(1).values.roll(1, 1)
    prev[:, 0] = float("-inf")
    on = vo > prev  # not weakly dominated by a feature earlier in decreasing-u order
    del prev
    counts = on.sum(1)
    k = max(1, int(counts.max()))
    pos = torch.sort((~on).to(torch.uint8), dim=1, stable=True).indices[:, :k]  # front first, in u order
    valid = on.gather(1, pos)
    return (torch.where(valid, uo.gather(1, pos), float("-inf")), torch.where(valid, vo.gather(1, pos),
            float("-inf")), counts)


def _corners(fu: torch.Tensor, fv: torch.Tensor, counts: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``size`` points dominating the front: the front itself, or per sample the corners
    ``(max u, max v)`` of runs of ``ceil(front / size)`` consecutive front points. ``(B, <= size)`` each."""
    k = fu.shape[1]
    if k <= size:
        return fu, fv
    run = torch.div(counts + size - 1, size, rounding_mode="floor").clamp_(min=1)
    group = torch.div(torch.arange(k, device=fu.device)[None, :], run[:, None], rounding_mode="floor")
    group.clamp_(max=size - 1)  # padding (-inf) past a sample's front goes to its last corner, harmlessly
    cu = fu.new_full((fu.shape[0], size), float("-inf")).scatter_reduce_(1, group, fu, "amax")
    cv = fv.new_full((fv.shape[0], size), float("-inf")).scatter_reduce_(1, group, fv, "amax")
    return cu, cv


def _has_partner(u: torch.Tensor, v: torch.Tensor, fu: torch.Tensor, fv: torch.Tensor) -> torch.Tensor:
    """Bool ``(B, D)``: some feature ``q`` (possibly ``p`` itself) has ``u_q > -u_p`` and ``v_q > -v_p``.

    Such a ``q`` exists iff a front point does; the front points with ``u > -u_p`` are a prefix of the front,
    whose largest ``v`` is its last, so one binary search per feature decides it.
    """
    m = torch.searchsorted(-fu, u.contiguous())  # front points with -fu < u_p, i.e. fu > -u_p
    last = fv.gather(1, (m - 1).clamp_(min=0))
    return (m > 0) & (last > -v)


def _row_bounds(u: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, cv: torch.Tensor,
                plan: SearchPlan) -> torch.Tensor:
    """``max_g relu(u_p + U_g) * relu(v_p + V_g)`` for every feature ``p``, ``(B, D)``: at least the score of
    every pair through ``p`` (the score is non-decreasing in ``(u_q, v_q)`` and the cover dominates all ``q``)."""
    bsz, n = u.shape
    upper = u.new_zeros(bsz, n)
    s_step, r, c = _tile(plan, n, cu.shape[1])
    for s0 in range(0, bsz, s_step):
        s1 = min(bsz, s0 + s_step)
        for i0 in range(0, n, r):
            i1 = min(n, i0 + r)
            for j0 in range(0, cu.shape[1], c):
                j1 = min(cu.shape[1], j0 + c)
                tile = (u[s0:s1, i0:i1, None] + cu[s0:s1, None, j0:j1]).clamp_(min=0)
                other = (v[s0:s1, i0:i1, None] + cv[s0:s1, None, j0:j1]).clamp_(min=0)
                tile.mul_(other)
                del other
                up = upper[s0:s1, i0:i1]
                torch.maximum(up, tile.amax(2), out=up)
                del tile
    return upper


def pair_search(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor, sign: float,
                plan: SearchPlan, prune: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 3 of Papernot et al. 2016: the best admissible pair of features per sample, exactly.

    With ``prune`` the tiled scan runs only over the features that can belong to a best pair. The score
    ``f(p, q) = relu(u_p + u_q) * relu(v_p + v_q)`` is non-decreasing in ``(u_q, v_q)``, so against a small cover
    of points dominating every feature (:func:`_cover`) ``upper_p`` bounds every pair through ``p``; the best real
    pair among the ``COVER`` features with the largest bounds gives a lower bound of the optimum, and features
    whose bound is below it are dropped. Rounding is monotone, so both bounds hold in floating point, and the
    result, ties included, is the one of the full scan.

    Args:
        a: ``dF_t/dx``, ``(B, D)``.
        b: ``sum_{j != t} dF_j/dx``, ``(B, D)``.
        domain: bool ``(B, D)``, the search domain (features that may still move).
        sign: ``+1.0`` (theta > 0) or ``-1.0`` (theta < 0, the mirrored conditions).
        plan: the tiling (from :func:`plan_search`); no tile holds more elements than it allows.
        prune: drop features that provably belong to no best pair before the tiled scan (same result).

    Returns:
        ``(p, q, found)``: ``p < q`` ``(B,)`` int64, the lexicographically first maximiser, and ``found`` ``(B,)``
        bool, False where no pair satisfies the conditions (then ``p`` and ``q`` are meaningless).
    """
    u, v = prepare(a, b, domain, sign)
    n = u.shape[1]
    if not prune or n <= 2 * COVER:
        best, p, q = _scan(u, v, plan)
        return p, q, best > 0
    fu, fv, counts = _front(u, v)
    cu, cv = _corners(fu, fv, counts, COVER)
    upper = _row_bounds(u, v, cu, cv, plan)
    del cu, cv
    upper.masked_fill_(~_has_partner(u, v, fu, fv), 0.0)
    del fu, fv
    top = upper.topk(COVER, 1).indices.sort(1).values
    lower, _, _ = _scan(u.gather(1, top), v.gather(1, top), plan)
    keep = (upper > 0) & (upper >= lower[:, None])
    del upper, top
    k = int(keep.sum(1).max())
    if k < 2:
        zero = torch.zeros(u.shape[0], dtype=torch.long, device=u.device)
        return zero, zero, torch.zeros_like(zero, dtype=torch.bool)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :k]  # survivors first, in order
    us = torch.where(keep.gather(1, order), u.gather(1, order), float("-inf"))
    vs = v.gather(1, order)
    del u, v, keep
    best, pl, ql = _scan(us, vs, plan)
    p = order.gather(1, pl[:, None]).squeeze(1)
    q = order.gather(1, ql[:, None]).squeeze(1)
    return p, q, best > 0


def max_iterations(n_features: int, upsilon: float, pairs: bool) -> int:
    """The paper's iteration cap: ``floor(D * Upsilon / 2)`` pair iterations (Algorithm 2), ``floor(D * Upsilon)``
    single-feature iterations; the small tolerance keeps e.g. ``0.29 * 100`` at 29."""
    budget = math.floor(n_features * upsilon + 1e-9)
    return budget // 2 if pairs else budget
