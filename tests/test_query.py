"""Query (black-box) attacks: the oracle counts honestly, budgets hold, the attacks succeed, bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import advkit.attacks as A
from advkit.attacks.query.base import QueryAttack
from advkit.attacks.query.oracle import BlackBoxError, Oracle, QueryBudgetError
from advkit.attacks.query.simba import dct_matrix, low_frequency_order
from advkit.attacks.query.square import p_schedule, pseudo_gaussian_square


class Logged(nn.Module):
    """Wraps a model and records every row it is sent, whether autograd was on, and the rows' pixel range."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_classes = getattr(net, "num_classes", None)
        self.rows = 0
        self.grad_seen = False
        self.lo, self.hi = 0.0, 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.grad_seen |= torch.is_grad_enabled() or x.requires_grad
        if x.numel():
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        return self.net(x)


# name, settings, untargeted success the attack must reach on 16 LeNet-correct Fashion-MNIST images
CASES = [
    ("square", {"eps": 0.1, "max_queries": 300}, 0.7),
    ("square", {"eps": 1.5, "norm": "l2", "max_queries": 300}, 0.6),
    ("nes", {"eps": 0.1, "max_queries": 600, "samples": 20}, 0.6),
    ("simba", {"eps": 2.0, "max_queries": 300}, 0.7),
    ("simba", {"eps": 2.0, "basis": "pixel", "max_queries": 300}, 0.35),
    ("hsj", {"eps": 2.5, "max_queries": 600}, 0.65),
    ("hsj", {"eps": 0.15, "norm": "linf", "max_queries": 600}, 0.6),
]
IDS = [f"{n}-{kw.get('norm', 'default')}-{kw.get('basis', '')}" for n, kw, _ in CASES]


@pytest.fixture(scope="module")
def batch(lenet_batch):
    x, y = lenet_batch
    return x[:16], y[:16]


def test_query_attacks_are_registered():
    assert set(A.query_attacks()) == {"square", "nes", "simba", "hsj"}
    assert {"square", "nes", "simba", "hsj"} <= set(A.names())
    assert all(A.standalone()[n].black_box for n in A.query_attacks())
    assert A.standalone()["hsj"].oracle_output == "label" and A.standalone()["square"].oracle_output == "scores"


@pytest.mark.parametrize("name, kw, floor", CASES, ids=IDS)
def test_query_attack_budget_queries_and_success(lenet, batch, name, kw, floor):
    x, y = batch
    net = Logged(lenet)
    attack = A.create(name, **kw)
    r = attack(net, x, y, generator=torch.Generator().manual_seed(0))
    # the budget and the pixel range hold
    d = (r.x_adv - x).flatten(1)
    size = d.norm(dim=1) if attack.norm == "l2" else d.abs().amax(1)
    assert float(size.max()) <= attack.eps + 1e-5
    assert 0.0 <= float(r.x_adv.min()) and float(r.x_adv.max()) <= 1.0
    # every query is a real row, sent under no_grad, inside [0, 1], and within the per-image budget
    assert r.queries is not None and r.queries.dtype == torch.int64 and r.queries.shape == y.shape
    assert int(r.queries.max()) <= kw["max_queries"] and int(r.queries.min()) >= 1
    assert net.rows == int(r.queries.sum()) + len(y)  # + the evaluator's final check
    assert not net.grad_seen and net.lo >= 0.0 and net.hi <= 1.0
    assert r.backward_passes == 0
    # the attack works, and stops on an image as soon as it succeeds
    assert r.success_rate >= floor, f"{name} {kw}: {r.success_rate:.2f} < {floor}"
    assert int(r.queries[r.success].max()) < kw["max_queries"] or name == "simba"
    assert r.info[name]["budget"] == kw["max_queries"]
    # seeded: the same generator gives the same examples and counts
    r2 = attack(lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.x_adv, r2.x_adv) and torch.equal(r.queries, r2.queries)


@pytest.mark.parametrize("name, kw", [("square", {"eps": 0.15, "max_queries": 400}),
                                      ("hsj", {"eps": 3.0, "max_queries": 800})])
def test_targeted_query_attacks_reach_the_target(lenet, batch, name, kw):
    x, y = batch
    target = (y + 1) % 10
    r = A.create(name, **kw)(lenet, x, y, target=target, generator=torch.Generator().manual_seed(1))
    assert r.success_rate >= 0.25
    assert torch.equal(r.success, r.pred == target)


def test_hsj_runs_on_a_label_only_callable(lenet, batch):
    """A remote label-only service: a plain function behind an Oracle, no nn.Module in sight."""
    x, y = batch

    def service(rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lenet(rows)

    api = Oracle(service, output="label")
    r = A.create("hsj", eps=2.5, max_queries=600)(api, x, y, generator=torch.Generator().manual_seed(0))
    ref = A.create("hsj", eps=2.5, max_queries=600)(lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.x_adv, ref.x_adv) and torch.equal(r.queries, ref.queries)


def test_label_only_oracle_is_refused_by_score_attacks_before_any_query(lenet, batch):
    x, y = batch
    net = Logged(lenet)
    for name in ("square", "nes", "simba"):
        with pytest.raises(ValueError, match="needs class probabilities.*output='scores'"):
            A.create(name, eps=0.1, norm="linf", max_queries=100)(Oracle(net, output="label"), x, y)
    assert net.rows == 0


@pytest.mark.parametrize("budget", [0, -5, 2.5, True, None])
def test_bad_query_budget_is_refused(budget):
    with pytest.raises(ValueError, match="max_queries is the per-image query budget"):
        A.create("square", max_queries=budget)


@pytest.mark.parametrize("name, eps", [("square", 0.0), ("square", -0.1), ("square", 1.5), ("nes", 2.0),
                                       ("hsj", 0.0), ("simba", -1.0)])
def test_eps_outside_the_pixel_range_is_refused(name, eps):
    with pytest.raises(ValueError, match=r"eps must be"):
        A.create(name, eps=eps)


def test_l2_eps_beyond_the_pixel_cube_is_refused_before_any_query(lenet, batch):
    x, y = batch
    net = Logged(lenet)
    with pytest.raises(ValueError, match="L2 diameter"):
        A.create("hsj", eps=40.0, max_queries=100)(net, x, y)
    assert net.rows == 0


def test_an_attack_that_asks_for_a_gradient_gets_a_clear_error(lenet, batch):
    x, y = batch

    class Cheat(QueryAttack):
        def _search(self, oracle, x, y, target, g, start):
            with torch.enable_grad():
                probe = x.clone().requires_grad_(True)
                logp = oracle.scores(probe, torch.arange(len(x)))
                torch.autograd.grad(logp[:, 0].sum(), probe)
            return x

    with pytest.raises(BlackBoxError, match="gives no gradients"):
        Cheat(eps=0.1, max_queries=10)(lenet, x, y)


def test_outputs_of_the_oracle_carry_no_graph(lenet, batch):
    x, y = batch
    s = Oracle(lenet).session(len(x), 5)
    with torch.enable_grad():
        out = s.scores(x, torch.arange(len(x)))
    assert not out.requires_grad
    assert torch.allclose(out.exp().sum(1), torch.ones(len(x)), atol=1e-5)
    assert s.queries.tolist() == [1] * len(x)


def test_overspending_the_budget_is_an_error_naming_the_image(lenet, batch):
    x, y = batch
    s = Oracle(lenet, output="label").session(len(x), 2)
    owners = torch.tensor([3, 3])
    s.labels(x[:2], owners)
    with pytest.raises(QueryBudgetError, match="image 3 would spend 3 queries, over its budget of 2"):
        s.labels(x[:1], torch.tensor([3]))
    assert int(s.queries[3]) == 2 and int(s.queries.sum()) == 2


def test_label_oracle_refuses_scores(lenet, batch):
    x, _ = batch
    s = Oracle(lenet, output="label").session(len(x), 5)
    with pytest.raises(BlackBoxError, match="labels only"):
        s.scores(x, torch.arange(len(x)))
    assert int(s.queries.sum()) == 0


# ---------------------------------------------------------------------------------------- transfer start
@pytest.mark.parametrize("name, kw", [("square", {"eps": 0.1}), ("nes", {"eps": 0.1, "samples": 20}),
                                      ("simba", {"eps": 0.1, "norm": "linf"}),
                                      ("hsj", {"eps": 0.1, "norm": "linf"})])
def test_a_start_that_already_fools_costs_one_query(lenet, batch, name, kw):
    x, y = batch
    start = A.create("pgd", eps=0.1, steps=10)(lenet, x, y, generator=torch.Generator().manual_seed(0)).x_adv
    fooled = lenet(start).argmax(1) != y
    assert fooled.sum() >= 8
    r = A.create(name, max_queries=200, **kw)(lenet, x, y, start=start, generator=torch.Generator().manual_seed(0))
    assert r.queries[fooled].tolist() == [1] * int(fooled.sum())
    assert torch.equal(r.x_adv[fooled], start[fooled])
    assert bool(r.success[fooled].all())


def test_start_is_projected_onto_the_budget_and_checked(lenet, batch):
    x, y = batch
    far = (x + 0.5).clamp(0, 1)
    r = A.create("square", eps=0.05, max_queries=20)(lenet, x, y, start=far)
    assert float((r.x_adv - x).abs().max()) <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="start must be a float tensor shaped like x"):
        A.create("square", eps=0.05, max_queries=20)(lenet, x, y, start=x[:3])
    with pytest.raises(ValueError, match="only query attacks"):
        A.create("pgd", eps=0.05)(lenet, x, y, start=x)


def test_attack_batched_carries_queries_and_start(lenet, batch):
    from advkit.attacks.batched import batch_seed

    x, y = batch
    start = A.create("pgd", eps=0.1, steps=10)(lenet, x, y, generator=torch.Generator().manual_seed(0)).x_adv
    start[::2] = x[::2]  # every other image starts from the clean one
    with torch.no_grad():
        fooled = lenet(start).argmax(1) != y
    assert 0 < int(fooled.sum()) < len(y)
    atk = A.create("square", eps=0.1, max_queries=50)
    r = A.attack_batched(atk, lenet, x, y, batch_size=5, seed=3, start=start)
    assert r.queries is not None and r.queries.shape == y.shape and int(r.queries.max()) <= 50
    # each batch got its slice of the start: a start that already fools is returned as is, for one query
    assert r.queries[fooled].tolist() == [1] * int(fooled.sum()) and torch.equal(r.x_adv[fooled], start[fooled])
    assert int(r.queries[~fooled].min()) > 1
    # and the batched result is the attack on each slice with that batch's own generator
    for k, i in enumerate(range(0, len(y), 5)):
        sl = slice(i, i + 5)
        one = atk(lenet, x[sl], y[sl], start=start[sl], generator=torch.Generator().manual_seed(batch_seed(3, k)))
        assert torch.equal(one.x_adv, r.x_adv[sl]) and torch.equal(one.queries, r.queries[sl])


# ---------------------------------------------------------------------------------------- building blocks
def test_square_schedule_is_the_papers():
    assert p_schedule(0.8, 0, 10000) == 0.8 and p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4 and p_schedule(0.8, 200, 10000) == 0.2
    assert p_schedule(0.8, 9999, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 100, 1000) == pytest.approx(0.8 / 16)  # rescaled: 100 of 1000 is 1000 of 10000


def test_square_l2_update_is_a_unit_pair_of_opposite_bumps():
    for s in (3, 5, 9):
        b = pseudo_gaussian_square(s)
        assert float(b.norm()) == pytest.approx(1.0)
        assert float(b[: s // 2].sum()) > 0 > float(b[s // 2:].sum())


def test_dct_basis_is_orthonormal_and_low_frequencies_come_first():
    d = dct_matrix(28)
    assert torch.allclose(d @ d.T, torch.eye(28, dtype=torch.float64), atol=1e-12)
    order = low_frequency_order(1, 28, 28, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(784))
    first = order[:16]
    rows, cols = first // 28, first % 28
    assert int(torch.maximum(rows, cols).max()) < 4  # the 4 x 4 lowest frequencies (28 / 8, rounded up)


def test_simba_dct_steps_have_the_step_length(lenet, batch):
    x, y = batch
    r = A.create("simba", eps=10.0, max_queries=2, step=0.2)(lenet, x[:4], y[:4])
    moved = (r.x_adv - x[:4]).flatten(1).norm(dim=1)
    # the start check, then one try: at most one accepted step of length 0.2 (clipping can only shorten it)
    assert float(moved.max()) <= 0.2 + 1e-5
    r = A.create("simba", eps=10.0, max_queries=40, step=0.2)(lenet, x[:4], y[:4])
    moved = (r.x_adv - x[:4]).flatten(1).norm(dim=1)
    assert float(moved.max()) <= 0.2 * math.sqrt(39) + 1e-5 and float(moved.min()) > 0


def test_query_stats_summarise_queries(lenet, batch):
    from advkit.evaluate.queries import query_stats

    q = torch.tensor([1, 50, 150, 1000, 1000])
    ok = torch.tensor([True, True, True, True, False])
    s = query_stats(q, ok, budget=1000)
    assert s["n"] == 5 and s["success"]["k"] == 4
    assert s["median_queries_success"] == pytest.approx(100.0)
    assert s["mean_queries_success"] == pytest.approx((1 + 50 + 150 + 1000) / 4)
    assert s["within"]["100"]["k"] == 2 and s["within"]["1000"]["k"] == 4 and s["within"]["budget"]["k"] == 4
    assert math.isnan(query_stats(q[4:], ok[4:], budget=1000)["median_queries_success"])
