"""Issue 25: Ghost networks (Li et al., AAAI 2020) as the ``ghost`` part of the iterative engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.attacks import create
from advkit.attacks.gradient.ghost import Ghost, dropout_erosion, residual_blocks, skip_erosion
from advkit.models import Classifier, ensemble


class Block(nn.Module):
    """``relu(shortcut(x) + bn(conv(x)))`` with an ``nn.Identity`` or 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.bn(self.conv(x)))

    def eroded(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        return F.relu(lam * self.shortcut(x) + self.bn(self.conv(x)))


class InPlaceBlock(nn.Module):
    """torchvision's form: ``out += identity`` where the identity is the block input itself."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out += x
        return F.relu(out)

    def eroded(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        return F.relu(self.conv(x) + lam * x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.b1, self.b2, self.b3 = Block(4, 4), Block(4, 6), InPlaceBlock(6)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b3(self.b2(self.b1(self.stem(x)))).mean((2, 3)))

    def eroded(self, x: torch.Tensor, lams: list[float]) -> torch.Tensor:
        """The ghost built by hand: each shortcut multiplied by its drawn scalar."""
        z = self.b3.eroded(self.b2.eroded(self.b1.eroded(self.stem(x), lams[0]), lams[1]), lams[2])
        return self.head(z.mean((2, 3)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _plain(seed: int = 1) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 32), nn.ReLU(),
                        nn.Linear(32, 10))
    return Classifier(net, (0.5,), (0.25,), (1, 12, 12), 10, name=f"plain{seed}",
                      card={"dataset": "fashion-mnist", "connections": "none"}).freeze()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(5, 1, 12, 12, generator=g), torch.randint(0, 10, (5,), generator=g)


def test_blocks_found_by_structure_with_their_shortcuts():
    blocks = residual_blocks(_net())
    assert [(b.block, b.shortcut) for b in blocks] == [("b1", "b1.shortcut"), ("b2", "b2.shortcut"), ("b3", "")]


def test_skip_erosion_equals_hand_eroded_forward_and_is_fresh_each_pass(batch):
    x, _ = batch
    net, r = _net(), 0.22
    g = torch.Generator().manual_seed(7)
    with torch.no_grad(), skip_erosion(net, g, r) as state:
        first, second = net(x), net(x)
    assert state["draws"] == 2 and state["blocks"] == 3
    ref = torch.Generator().manual_seed(7)
    lams = [(1 - r) + 2 * r * torch.rand(3, generator=ref, dtype=torch.float64) for _ in range(2)]
    assert not torch.equal(lams[0], lams[1])
    with torch.no_grad():
        for out, lam in zip((first, second), lams, strict=True):
            expected = net.eroded(x, lam.tolist())
            torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        assert (first - second).abs().max() > 1e-4  # a different ghost at every forward pass
        torch.testing.assert_close(net(x), net.eroded(x, [1.0, 1.0, 1.0]), atol=1e-6, rtol=0)  # hooks gone on exit


def test_zero_range_is_exactly_the_base_attack(batch):
    x, y = batch
    model = Classifier(_net(), (0.5,), (0.25,), (1, 12, 12), 10, name="net").freeze()
    for base in ("ifgsm", "mi"):
        plain = create(base, eps=8 / 255, steps=4)(model, x, y, generator=torch.Generator().manual_seed(0))
        ghost = create(f"ghost+{base}", eps=8 / 255, steps=4, ghost_range=0.0)(
            model, x, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(plain.x_adv, ghost.x_adv)


def test_ghost_attack_is_seeded_differs_from_ifgsm_and_composes(batch):
    x, y = batch
    model = Classifier(_net(), (0.5,), (0.25,), (1, 12, 12), 10, name="net").freeze()
    attack = create("ghost+mi+di", eps=8 / 255, steps=4, ghost_range=0.5)

    def run(seed: int) -> torch.Tensor:
        return attack(model, x, y, generator=torch.Generator().manual_seed(seed)).x_adv

    a, b = run(0), run(0)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(1))
    plain = create("mi+di", eps=8 / 255, steps=4)(model, x, y, generator=torch.Generator().manual_seed(0)).x_adv
    assert not torch.equal(a, plain)
    assert (a - x).abs().max() <= 8 / 255 + 1e-6 and a.min() >= 0 and a.max() <= 1
    res = create("ghost", eps=8 / 255, steps=3)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert res.info["ghost"]["erosion"] == "auto" and res.info["ghost"]["blocks"] == 3
    assert res.info["ghost"]["draws"] == 3  # one fresh ghost per gradient


def test_dropout_erosion_on_a_plain_model(batch):
    x, _ = batch
    model = _plain()
    net = model.net
    g = torch.Generator().manual_seed(5)
    rate = 0.3
    with torch.no_grad(), dropout_erosion(model, g, rate) as state:
        out = model(x)
    assert state == {"layers": 2, "calls": 2}
    ref = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z = F.relu(net[0](model.preprocess(x)) if hasattr(model, "preprocess") else net[0](x))
        z = z * (torch.rand(z.shape, generator=ref) < 1 - rate) / (1 - rate)
        z = F.relu(net[3](net[2](z)))
        z = z * (torch.rand(z.shape, generator=ref) < 1 - rate) / (1 - rate)
        torch.testing.assert_close(out, net[5](z), atol=1e-6, rtol=0)
    res = create("ghost", eps=8 / 255, steps=2, ghost_dropout=0.0)(model, x, batch[1],
                                                                   generator=torch.Generator().manual_seed(0))
    base = create("ifgsm", eps=8 / 255, steps=2)(model, x, batch[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.x_adv, base.x_adv) and res.info["ghost"]["layers"] == 2


def test_ensemble_eroded_per_member_and_skip_mode_errors(batch):
    x, y = batch
    res_model = Classifier(_net(), (0.5,), (0.25,), (1, 12, 12), 10, name="net",
                           card={"dataset": "fashion-mnist"}).freeze()
    ens = ensemble([res_model, _plain()])
    out = create("ghost", eps=8 / 255, steps=2)(ens, x, y, generator=torch.Generator().manual_seed(0))
    rows = out.info["ghost"]["members"]
    assert rows[0]["blocks"] == 3 and rows[0]["draws"] == 2 and rows[1]["layers"] == 2
    with pytest.raises(ValueError, match="residual blocks"):
        create("ghost", ghost_erosion="skip")(_plain(), x, y)
    with pytest.raises(ValueError, match="no member"):
        create("ghost", ghost_erosion="skip")(ensemble([_plain(1), _plain(2)]), x, y)
    with pytest.raises(ValueError, match="ghost_range"):
        Ghost(ghost_range=1.5)


class Scaled(nn.Module):
    """Inception-ResNet's form ``relu(x + 0.2 * up(x))``: the erosion must reach the addition unscaled."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + 0.2 * self.up(x))


def test_skip_erosion_of_a_scaled_residual(batch):
    x, _ = batch
    torch.manual_seed(0)
    net = Scaled()
    with torch.no_grad(), skip_erosion(net, torch.Generator().manual_seed(2), 0.22):
        out = net(x)
    lam = 0.78 + 0.44 * torch.rand(1, generator=torch.Generator().manual_seed(2), dtype=torch.float64).item()
    with torch.no_grad():
        torch.testing.assert_close(out, F.relu(lam * x + 0.2 * net.up(x)), atol=1e-6, rtol=0)
