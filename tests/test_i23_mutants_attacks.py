"""Tests that kill the surviving mutants of the mutation run on attacks/ (benchmarks/results/mutation_issue23.md):
part settings, engine configuration, the losses, input checks, DI and TI against independent references, the random
start, Admix, and attacks/base.py's input checks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from i23_reference import _batch, _Flat, _radius_cdf_distance
from torch import nn

import advkit.attacks as A
from advkit.attacks.gradient.transforms import gaussian_kernel, input_diversity, random_start, smooth_gradient

# ================================================================ mutation run: survivors in attacks/ (group 1)
# ------------------------------------------------------------------------------------------- part settings
# (attack, setting, the name its error gives, kind and range in the message, rejected values, accepted values)
SETTINGS = [
    ("si", "si_copies", "si_copies (SI's number of scaled copies)", "an integer in [1, inf)", [0, 1.5], [1]),
    ("admix", "admix_scales", "admix_scales (m1)", "an integer in [1, inf)", [0, 2.5], [1]),
    ("admix", "admix_images", "admix_images (m2)", "an integer in [1, inf)", [0, 2.5], [1]),
    ("admix", "admix_eta", "admix_eta (the mixing strength)", "a finite number in [0, inf)", [-0.1], [0.0]),
    ("di", "di_prob", "DI probability (di_prob)", "a finite number in [0, 1]", [-0.1, 1.1], [0.0, 1.0]),
    ("di", "di_resize_rate", "DI resize_rate (di_resize_rate)", "a finite number in (1, inf)", [1.0], [1.01]),
    ("mi", "decay", "momentum decay (decay)", "a finite number in [0, inf)", [-0.1], [0.0]),
    ("vt", "vt_neighbours", "vt_neighbours (VT's number of neighbours N)", "an integer in [1, inf)", [0, 2.5],
     [1]),
    ("vt", "vt_beta", "vt_beta (VT's neighbourhood radius in units of eps)", "a finite number in (0, inf)", [0.0],
     [0.01]),
    ("ti", "ti_kernel", "ti_kernel (TI's kernel size)", "an integer in [1, inf)", [0, 1.5], [1]),
    ("ti", "ti_nsig", "ti_nsig (TI's kernel span in standard deviations)", "a finite number in (0, inf)", [0.0],
     [0.5]),
]


@pytest.mark.parametrize("name, setting, label, rule, bad, good", SETTINGS, ids=[s[1] for s in SETTINGS])
def test_part_settings_are_checked_at_their_bounds_with_a_message_naming_them(name, setting, label, rule, bad, good):
    import re

    for v in bad:
        with pytest.raises(ValueError, match=re.escape(f"{label} must be {rule}, got {v!r}")):
            A.create(name, **{setting: v})
    for v in good:
        assert getattr(A.create(name, **{setting: v}), setting) == v


def test_ti_kernel_sizes_must_be_odd():
    with pytest.raises(ValueError, match="positive odd integer"):
        A.create("ti", ti_kernel=4)
    with pytest.raises(ValueError, match="positive odd integer"):
        gaussian_kernel(0, 3.0)


# ------------------------------------------------------------------------------------ engine configuration
def test_engine_settings_are_checked():
    for steps in (2.5, True, 0):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            A.create("ifgsm", steps=steps)
    with pytest.raises(ValueError, match=r"alpha \(the step size\) must be a finite number >= 0"):
        A.create("ifgsm", alpha=-0.01)
    for eps in (True, -0.1, float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            A.create("ifgsm", eps=eps)
    assert A.create("ifgsm", loss="margin").loss == "margin"


def test_engine_adds_the_default_base_and_orders_parts_by_hook():
    from advkit.attacks.gradient.engine import Iterative
    from advkit.attacks.gradient.inputs import InputDiversity
    from advkit.attacks.gradient.momentum import Momentum
    from advkit.attacks.gradient.steps import FGSM, PGD

    atk = Iterative(parts=(InputDiversity(), Momentum()))
    assert [p.token for p in atk.parts] == ["ifgsm", "mi", "di"] and atk.base.token == "ifgsm"
    with pytest.raises(ValueError, match="more than one base"):
        Iterative(parts=(PGD(), FGSM()))


def test_settings_of_absent_parts_read_as_none_and_unknown_names_raise():
    atk = A.create("mi", eps=0.1, steps=4)
    assert atk.gamma is None and atk.di_prob is None and atk.decay == 1.0
    with pytest.raises(AttributeError, match="no attribute 'not_a_setting'"):
        _ = atk.not_a_setting
    assert not hasattr(atk, "not_a_setting")


def test_config_records_every_setting_by_name():
    assert A.create("mi", eps=0.1, steps=4).config() == {
        "eps": 0.1, "steps": 4, "alpha": pytest.approx(0.025), "norm": "linf", "loss": "ce", "label": "mi",
        "parts": ["ifgsm", "mi"], "decay": 1.0}


def test_pgd_step_size_and_its_start_without_random_init(tiny_resnet):
    """Madry et al.: alpha = 2.5 eps / T with the random start; without it PGD is I-FGSM (alpha = eps / T)."""
    assert A.create("pgd", eps=0.1, steps=10).step_size == pytest.approx(0.025)
    assert A.create("pgd", eps=0.1, steps=10, random_init=False).step_size == pytest.approx(0.01)
    x, y = _batch()
    plain = A.create("pgd", eps=0.05, steps=3, random_init=False)(
        tiny_resnet, x, y, generator=torch.Generator().manual_seed(4)).x_adv
    assert torch.equal(plain, A.create("ifgsm", eps=0.05, steps=3)(tiny_resnet, x, y).x_adv)


def test_no_generator_means_seed_zero(tiny_resnet):
    """Without a generator an attack draws from ``torch.Generator().manual_seed(0)``: reproducible run to run."""
    x, y = _batch()
    atk = A.create("pgd+di", eps=0.05, steps=2)
    a = atk(tiny_resnet, x, y).x_adv
    torch.rand(3)  # the global stream moves; the attack must not follow it
    assert torch.equal(a, atk(tiny_resnet, x, y).x_adv)
    assert torch.equal(a, atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(0)).x_adv)


# -------------------------------------------------------------------------------------------- the losses
def test_attack_loss_values():
    """Cross-entropy summed over the batch (not averaged), and Carlini & Wagner's logit margin."""
    from advkit.attacks.core.base import attack_loss

    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]])
    y, t = torch.tensor([0, 2]), torch.tensor([1, 0])
    assert float(attack_loss(logits, y, None, "ce")) == pytest.approx(float(F.cross_entropy(logits, y,
                                                                                            reduction="sum")))
    assert float(attack_loss(logits, y, t, "ce")) == pytest.approx(-float(F.cross_entropy(logits, t,
                                                                                          reduction="sum")))
    # untargeted: max_{j != y} z_j - z_y = (1 - 2) + (3 - 0.5); targeted: z_t - max_{j != t} z_j = (1 - 2) + (0 - 3)
    assert float(attack_loss(logits, y, None, "margin")) == pytest.approx(-1.0 + 2.5)
    assert float(attack_loss(logits, y, t, "margin")) == pytest.approx(-1.0 - 3.0)
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'logit', 'margin', 'potrip'"):
        attack_loss(logits, y, None, "hinge")


def test_golden_margin_loss_step(tiny_resnet):
    """One signed step on the margin loss's gradient, untargeted and targeted."""
    from advkit.attacks.core.base import attack_loss

    x, y = _batch()
    eps = 0.05
    t = (y + 3) % 10
    for target in (None, t):
        xr = x.clone().requires_grad_(True)
        logits = tiny_resnet(xr)
        cls = y if target is None else target
        own = logits.gather(1, cls[:, None])[:, 0]
        other = logits.masked_fill(F.one_hot(cls, 10).bool(), float("-inf")).max(1).values
        loss = (other - own).sum() if target is None else (own - other).sum()
        g = torch.autograd.grad(loss, xr)[0]
        got = A.create("fgsm", eps=eps, loss="margin")(tiny_resnet, x, y, target=target).x_adv
        assert torch.allclose(got, (x + eps * g.sign()).clamp(0, 1), atol=1e-7)
        with torch.no_grad():
            assert float(attack_loss(tiny_resnet(got), y, target, "margin")) > float(loss)


# ------------------------------------------------------------------------------------------- input checks
def test_inputs_of_the_wrong_kind_are_refused(tiny_resnet):
    x, y = _batch()
    atk = A.create("ifgsm", eps=0.05, steps=1)
    with pytest.raises(ValueError, match="uint8|floating-point"):
        atk(tiny_resnet, torch.ones(5, 1, 12, 12, dtype=torch.uint8), y)  # pixels 0/1, but not floating point
    with pytest.raises(ValueError, match="target must be a tensor like y"):
        atk(tiny_resnet, x, y, target=((y + 1) % 10).int())
    with pytest.raises(ValueError, match="target must be a tensor like y"):
        atk(tiny_resnet, x, y, target=((y + 1) % 10).tolist())
    with pytest.raises(ValueError, match="labels must be < the model's 10 classes, got label 10"):
        atk(tiny_resnet, x, torch.full_like(y, 10))
    with pytest.raises(ValueError, match="target class 10 is out of range for a 10-class model"):
        atk(tiny_resnet, x, torch.zeros_like(y), target=torch.full_like(y, 10))


def test_query_start_is_checked_and_converted(lenet):
    import re

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=g)
    y = torch.zeros(3, dtype=torch.long)
    atk = A.create("square", eps=0.05, max_queries=2)
    for bad, got in [(x[:2], "(2, 1, 28, 28)"), (x.tolist(), "list"), ((x * 255).to(torch.uint8), "(3, 1, 28, 28)")]:
        with pytest.raises(ValueError, match=re.escape(f"start must be a float tensor shaped like x (3, 1, 28, 28), "
                                                       f"got {got}")):
            atk(lenet, x, y, start=bad)
    for bad in (x.masked_fill(x > 0.5, float("nan")), x - 0.01, x + 0.01):
        with pytest.raises(ValueError, match=r"start must hold finite pixels in \[0, 1\]"):
            atk(lenet, x, y, start=bad)
    edges = torch.zeros_like(x)
    edges[1] = 1.0
    r = atk(lenet, x, y, start=edges.double())  # exactly 0 and 1 are pixels; float64 is converted to x's dtype
    assert r.x_adv.dtype == torch.float32


# ------------------------------------------------------------------------------------- transforms (DI, TI)
def _nearest(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Nearest-neighbour resize by index arithmetic: source index floor(i * in / out) (float32, as PyTorch)."""
    h, w = x.shape[-2:]
    sh = torch.tensor(h, dtype=torch.float32) / out_h
    sw = torch.tensor(w, dtype=torch.float32) / out_w
    rows = (torch.arange(out_h, dtype=torch.float32) * sh).floor().long().clamp(max=h - 1)
    cols = (torch.arange(out_w, dtype=torch.float32) * sw).floor().long().clamp(max=w - 1)
    return x[..., rows, :][..., :, cols]


def _di_reference(x: torch.Tensor, prob: float, rate: float, g: torch.Generator) -> torch.Tensor:
    """Xie et al. 2019 written out: draw u; if u < prob, resize (nearest) to rnd x rnd_w, rnd uniform in
    [H, floor(H * rate)) and rnd_w keeping the aspect ratio within [W, floor(W * rate)), paste at a uniform offset
    on a zero canvas of floor(H * rate) x floor(W * rate) (at least one pixel larger), resize back (bilinear)."""
    if not float(torch.rand((), generator=g)) < prob:
        return x
    h, w = x.shape[-2:]
    big_h, big_w = max(math.floor(h * rate), h + 1), max(math.floor(w * rate), w + 1)
    rnd = int(torch.randint(h, big_h, (), generator=g))
    rnd_w = min(max(round(rnd * w / h), w), big_w - 1)
    top = int(torch.randint(0, big_h - rnd + 1, (), generator=g))
    left = int(torch.randint(0, big_w - rnd_w + 1, (), generator=g))
    canvas = torch.zeros(*x.shape[:-2], big_h, big_w, dtype=x.dtype)
    canvas[..., top:top + rnd, left:left + rnd_w] = _nearest(x, rnd, rnd_w)
    return F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("h, w, rate", [(12, 12, 1.1), (12, 12, 1.5), (12, 12, 1.01), (16, 9, 1.5), (9, 16, 1.3)])
def test_input_diversity_matches_the_papers_transform(h, w, rate):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    seen = set()
    for seed in range(12):
        got = input_diversity(x, 1.0, rate, torch.Generator().manual_seed(seed))
        want = _di_reference(x, 1.0, rate, torch.Generator().manual_seed(seed))
        assert got.shape == x.shape and torch.allclose(got, want, atol=1e-6), seed
        seen.add(got.sum().item())
    assert len(seen) > 1  # the draws change the copy


def test_input_diversity_transforms_exactly_when_the_draw_is_below_the_probability():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    u = float(torch.rand((), generator=torch.Generator().manual_seed(5)))
    assert input_diversity(x, u, 1.5, torch.Generator().manual_seed(5)) is x  # u < u is false: unchanged
    assert input_diversity(x, u + 1e-6, 1.5, torch.Generator().manual_seed(5)) is not x


def test_gaussian_kernel_is_the_authors_gkern():
    """gkern(15, 3) of Dong et al.: outer product of the normal pdf at linspace(-3, 3, 15), normalised to sum 1."""

    t = np.linspace(-3, 3, 15)
    k1 = np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    ref = np.outer(k1, k1)
    ref /= ref.sum()
    k = gaussian_kernel(15, 3.0)
    assert k.dtype == torch.float64 and k.shape == (15, 15)
    assert np.allclose(k.numpy(), ref, rtol=1e-12, atol=0)
    assert float(k[7, 7] / k[0, 0]) == pytest.approx(math.exp(9.0))
    one = gaussian_kernel(1, 3.0)
    assert one.dtype == torch.float64 and one.shape == (1, 1) and float(one) == 1.0
    assert gaussian_kernel(3, 1.0).dtype == torch.float64


def test_ti_smooths_each_channel_on_its_own():
    k = gaussian_kernel(5, 3.0)
    g = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    out = smooth_gradient(g, k)
    for c in range(3):
        assert torch.allclose(out[:, c:c + 1], F.conv2d(g[:, c:c + 1], k.float().view(1, 1, 5, 5), padding=2),
                              atol=1e-6)


# ------------------------------------------------------------------------------------------- random start
def test_random_start_is_reproducible_from_the_generator_and_stays_in_the_pixel_range():
    x = torch.cat([torch.zeros(4, 1, 6, 6), torch.ones(4, 1, 6, 6)])
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        a = random_start(x, eps, norm, torch.Generator().manual_seed(3))
        torch.rand(5)  # the global stream moves; the start must not follow it
        assert torch.equal(a, random_start(x, eps, norm, torch.Generator().manual_seed(3)))
        assert not torch.equal(a, random_start(x, eps, norm, torch.Generator().manual_seed(4)))
        assert float(a.min()) == 0.0 and float(a.max()) == 1.0
        assert float(a[:4].max()) > 0.0 and float(a[4:].min()) < 1.0
    r = A.create("pgd", eps=1.0, steps=1, norm="l2")
    x, y = _batch()
    model = _Flat()
    assert torch.equal(r(model, x, y, generator=torch.Generator().manual_seed(2)).x_adv,
                       r(model, x, y, generator=torch.Generator().manual_seed(2)).x_adv)


def test_l2_random_start_on_one_feature_is_uniform_on_the_interval():
    """d = 1: the L2 ball is [-eps, eps], and the start is uniform on it (the direction is a sign)."""
    x = torch.full((4000, 1, 1, 1), 0.5)
    eps = 0.4
    noise = (random_start(x, eps, "l2", torch.Generator().manual_seed(0)) - x).flatten()
    assert _radius_cdf_distance(noise.abs(), eps, 1) < 0.03
    assert 0.45 < float((noise > 0).float().mean()) < 0.55


# ------------------------------------------------------------------------------------------------- Admix
def test_admix_partners_are_drawn_independently_per_sample():
    from advkit.attacks.gradient.inputs import other_class_partner

    y = torch.arange(40) % 10
    p = other_class_partner(y, torch.Generator().manual_seed(0))
    assert bool((y[p] != y).all())
    assert len(set(p.tolist())) >= 15  # uniform draws over 36 others each: about 27 distinct; a shared draw gives 2
    assert other_class_partner(torch.tensor([3]), torch.Generator()).tolist() == [0]  # a batch of one: itself


# ================================================== mutation run on attacks/base.py after dac38e9's input checks
def test_integer_meta_and_dtype_mismatches_name_the_fix():
    import re

    x, y = _batch()
    atk = A.create("ifgsm", eps=0.05, steps=1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 10, bias=False))  # one floating parameter
    net.num_classes = 10  # type: ignore[assignment]
    with pytest.raises(ValueError, match=re.escape("pass x.float() (scaled into [0, 1])")):
        atk(net, x.int(), y)
    with pytest.raises(ValueError, match="target is a meta tensor"):
        atk(net, x, y, target=torch.empty(5, dtype=torch.long, device="meta"))
    assert atk(net, x, y).x_adv.shape == x.shape  # a model with a single weight tensor is checked, and runs
    for convert, fix in ((torch.float64, "x.double()"), (torch.float16, "x.half()"),
                         (torch.bfloat16, "x.to(torch.bfloat16)")):
        with pytest.raises(ValueError, match=re.escape(f"pass {fix}")):
            atk(copy.deepcopy(net).to(convert), x, y)


def test_one_pixel_images_are_images():
    x = torch.full((2, 1, 1, 1), 0.5)
    r = A.create("ifgsm", eps=0.1, steps=1)(_Flat(), x, torch.zeros(2, dtype=torch.long))
    assert r.x_adv.shape == (2, 1, 1, 1)

