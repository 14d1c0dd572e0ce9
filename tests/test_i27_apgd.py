"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein, ICML 2020), issue 27: a golden recomputation of the algorithm from
the paper's formulas, the budget in both norms, the real adversarially trained fashion-mnist LeNet against advkit's
PGD-20, and bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advkit.attacks as A


class Tiny(nn.Module):
    """A seeded 5-class MLP on 1x3x4 images (float64, so the recomputation matches to 1e-6)."""

    num_classes = 5

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x) * 3


def _data(model: Tiny, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.6 + 0.2
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correctly classified
    return x, y


def _hand_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss_of, marks: list[int],
               n_iter: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The paper's Algorithm 1, L-inf, written out: returns (first fooling point else x_max, step sizes, the
    halving decisions at the first checkpoint, how many halvings condition 2 decided alone)."""

    def proj(v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.minimum(torch.maximum(v, x - eps), x + eps), 0.0, 1.0)

    def f_and_grad(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = v.detach().requires_grad_(True)
        z = model(v)
        f = loss_of(z)
        (gr,) = torch.autograd.grad(f.sum(), v)
        return f.detach(), gr, z.argmax(1) != y

    u = 2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1
    x0 = (x + eps * u / (u.flatten(1).abs().max(1).values.view(-1, 1, 1, 1) + 1e-12)).clamp(0, 1)
    f, gr, fooled = f_and_grad(x0)
    first = torch.where(fooled.view(-1, 1, 1, 1), x0, torch.full_like(x0, float("nan")))
    xs, fs = [x0], [f]
    x_max, g_max, f_max = x0.clone(), gr.clone(), f.clone()
    eta = torch.full((len(x),), 2 * eps, dtype=x.dtype)
    f_max_at_mark, halved_at_mark = f.clone(), torch.zeros(len(x), dtype=torch.bool)
    first_decision, cond2_alone = None, 0
    cur, prev = x0, x0
    bounds = [0, *marks]
    for k in range(n_iter):
        a = 1.0 if k == 0 else 0.75
        z = proj(cur + eta.view(-1, 1, 1, 1) * gr.sign())
        nxt = proj(cur + a * (z - cur) + (1 - a) * (cur - prev))
        prev, cur = cur, nxt
        f, gr, fooled = f_and_grad(cur)
        unset = torch.isnan(first).flatten(1).all(1) & fooled
        first[unset] = cur[unset]
        better = f > f_max
        x_max[better], g_max[better], f_max[better] = cur[better], gr[better], f[better]
        xs.append(cur)
        fs.append(f)
        if k + 1 in marks:
            j = bounds.index(k + 1)
            w0, w1 = bounds[j - 1], bounds[j]
            increases = torch.stack([fs[i + 1] > fs[i] for i in range(w0, w1)]).sum(0)
            cond1 = increases <= 0.75 * (w1 - w0)
            cond2 = (~halved_at_mark) & (f_max_at_mark == f_max)
            halve = cond1 | cond2
            cond2_alone += int((cond2 & ~cond1).sum())
            if first_decision is None:
                first_decision = halve.clone()
            eta = torch.where(halve, eta / 2, eta)
            cur = torch.where(halve.view(-1, 1, 1, 1), x_max, cur)
            gr = torch.where(halve.view(-1, 1, 1, 1), g_max, gr)
            halved_at_mark, f_max_at_mark = halve, f_max.clone()
    found = ~torch.isnan(first).flatten(1).all(1)
    out = torch.where(found.view(-1, 1, 1, 1), first, x_max)
    assert first_decision is not None
    return out, eta, first_decision, cond2_alone


# The paper's checkpoints w_j = ceil(p_j * n_iter) for p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
MARKS_10 = [3, 5, 6, 7, 8, 9, 10]
MARKS_100 = [22, 41, 57, 70, 80, 87, 93, 99]
MARKS = {10: MARKS_10, 30: [7, 13, 18, 21, 24, 27, 28, 30], 100: MARKS_100}


def test_checkpoints_are_the_papers() -> None:
    from advkit.attacks.gradient.apgd import checkpoints

    assert checkpoints(100) == MARKS_100
    assert checkpoints(10) == MARKS_10


@pytest.mark.parametrize("name,n_iter,seed", [("apgd-ce", 10, 0), ("apgd-t", 10, 0), ("apgd-ce", 100, 0),
                                               ("apgd-t", 30, 1)])
def test_golden_first_iterations_and_first_checkpoint(name: str, n_iter: int, seed: int) -> None:
    model = Tiny(seed)
    x, y = _data(model)
    eps = 0.15
    marks = MARKS[n_iter]
    if name == "apgd-ce":
        def loss_of(z: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(z, y, reduction="none")
        settings = {}
    else:
        with torch.no_grad():
            t = model(x).scatter(1, y[:, None], float("-inf")).argmax(1)  # the largest other logit

        def loss_of(z: torch.Tensor) -> torch.Tensor:
            s = z.sort(1, descending=True).values
            return -(z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]) / (
                s[:, 0] - (s[:, 2] + s[:, 3]) / 2 + 1e-12)
        settings = {"n_target_classes": 1}
    g = torch.Generator().manual_seed(3)
    want, eta, first_decision, cond2_alone = _hand_apgd(model, x, y, eps, loss_of, marks, n_iter, g)
    res = A.create(name, eps=eps, n_iter=n_iter, **settings)(model, x, y, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(res.x_adv, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.info["apgd_step_size"], eta, atol=1e-9, rtol=0)
    # the cases exercise both outcomes of the first checkpoint, both fooled and robust points, and a halving that
    # condition 2 decides alone
    assert first_decision.any() and (n_iter == 100 or not first_decision.all())
    if n_iter == 10:
        assert res.success.any() and not res.success.all()
    if n_iter == 30:
        assert cond2_alone > 0
    assert torch.equal(res.success, res.info["apgd_iteration"] >= 0)


def test_dlr_losses_match_the_papers_formulas() -> None:
    from advkit.attacks.gradient.apgd import dlr_loss, dlr_targeted_loss

    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    torch.testing.assert_close(dlr_loss(z, torch.tensor([0, 2])), torch.tensor([-(3 - 2) / 2, -(2 - 3) / 2]))
    got = dlr_targeted_loss(z, torch.tensor([0, 1]), torch.tensor([3, 0]))
    torch.testing.assert_close(got, torch.tensor([-(3 - 0) / (3 - 0.5), -(1 - 3) / (3 - 0.5)]))


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 0.6)])
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr", "apgd-t"])
def test_budget_holds_and_the_attack_fools(name: str, norm: str, eps: float) -> None:
    model = Tiny()
    x, y = _data(model, 24)
    attack = A.create(name, eps=eps, norm=norm, n_iter=20, **({"n_target_classes": 3} if name == "apgd-t" else {}))
    res = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    d = (res.x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + (1e-6 if norm == "linf" else 1e-5)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert res.success.float().mean() >= 0.5  # every image started correctly classified
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    again = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x_adv, res.x_adv)


def test_a_given_target_is_reached_and_clean_mistakes_are_kept() -> None:
    model = Tiny()
    x, y = _data(model, 24)
    with torch.no_grad():
        target = model(x).scatter(1, y[:, None], float("-inf")).argmax(1)  # (some classes are out of reach)
    for name in ("apgd-ce", "apgd-dlr", "apgd-t"):  # apgd-t: the given target replaces the 9 top classes
        res = A.create(name, eps=0.3, n_iter=20)(model, x, y, target=target, generator=torch.Generator().manual_seed(0))
        assert res.success.float().mean() >= 0.75 and torch.equal(res.success, res.pred == target)
    y_wrong = y.clone()
    y_wrong[0] = (y[0] + 2) % 5  # misclassified before the attack: kept as it is, counted as fooled
    res = A.create("apgd-dlr", eps=0.05, n_iter=5)(model, x, y_wrong, generator=torch.Generator().manual_seed(0))
    assert bool(res.success[0]) and torch.equal(res.x_adv[0], x[0]) and int(res.info["apgd_iteration"][0]) == -1


@pytest.mark.parametrize("kwargs,words", [
    ({"n_iter": 0}, "n_iter"), ({"n_iter": 2.5}, "n_iter"), ({"rho": 0}, "rho"), ({"rho": 1.5}, "rho"),
    ({"eps": 2.0}, "eps"), ({"eps": 0.0}, "eps"), ({"eps": -0.1}, "eps"), ({"norm": "l1"}, "norm"),
    ({"n_restarts": 0}, "n_restarts"), ({"n_target_classes": 0}, "n_target_classes"),
])
def test_bad_settings_are_refused(kwargs: dict, words: str) -> None:
    name = "apgd-t" if "n_target_classes" in kwargs else "apgd-ce"
    with pytest.raises(ValueError, match=words):
        A.create(name, **kwargs)


def test_bad_settings_for_the_model_are_refused_before_any_pass() -> None:
    model = Tiny()
    x, y = _data(model, 4)
    model.calls = 0
    with pytest.raises(ValueError, match="n_target_classes must be below the model's 5 classes"):
        A.create("apgd-t", eps=0.1, n_target_classes=5)(model, x, y)
    with pytest.raises(ValueError, match="L2 radius larger than the whole image box"):
        A.create("apgd-ce", eps=4.0, norm="l2")(model, x, y)  # sqrt(12) = 3.46
    assert model.calls == 0


@pytest.fixture(scope="module")
def fashion() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from advkit.data import load as load_data
    from advkit.models import load

    data = load_data("fashion-mnist", split="test", limit=200)
    return load("lenet_pgd", dataset="fashion-mnist"), data.x, data.y


def _robust(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    res = A.create(name, eps=0.1)(model, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    # success marks exactly the points a run fooled (clean mistakes count as fooled, with no iteration)
    assert torch.equal(res.success[clean], res.info["apgd_iteration"][clean] >= 0)
    assert float((res.x_adv - x).abs().max()) <= 0.1 + 1e-6
    return 1 - float(res.success.float().mean())


def test_apgd_ce_is_no_weaker_than_pgd20_on_the_adversarially_trained_lenet(fashion) -> None:
    from advkit.train.adversarial import robust_accuracy

    model, x, y = fashion
    x, y = x[:64], y[:64]  # the fast variant (measured: PGD-20 0.656, apgd-ce 0.641); 200 images: the slow test
    assert _robust("apgd-ce", model, x, y) <= robust_accuracy(model, x, y, 0.1)["accuracy"]


@pytest.mark.slow
def test_on_200_images_apgd_ce_beats_pgd20_and_apgd_t_is_within_a_point_of_it(fashion) -> None:
    """Measured (seed 0, eps 0.1, 200 images, clean 0.755): PGD-20 0.660, apgd-ce 0.645, apgd-dlr 0.655,
    apgd-t 0.635 (apgd-t is below apgd-ce here; the margin allows one percentage point, 2 images of 200)."""
    from advkit.train.adversarial import robust_accuracy

    model, x, y = fashion
    ce = _robust("apgd-ce", model, x, y)
    assert ce <= robust_accuracy(model, x, y, 0.1)["accuracy"]
    assert _robust("apgd-t", model, x, y) <= ce + 0.01
