"""The model sanity checks (advkit.evaluate.check_model): each fault is caught with its reason, the model and the
random state are left as they were, and the checks reach advkit attack's results and the transfer report."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advkit.evaluate import AdvkitSanityWarning, check_model, checks_failed


class Wrap(nn.Module):
    def __init__(self, inner: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.inner, self.head = inner, head or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inner(x))


class Softmax(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.softmax(1)


class NoisyInput(nn.Module):  # a stochastic defence: random at eval time too
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x)


class Rounding(nn.Module):  # a non-differentiable input step: zero gradients everywhere
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 255) / 255)


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_sound_model_passes_every_check(lenet, lenet_batch):
    x, y = lenet_batch
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdvkitSanityWarning)
        checks = check_model(lenet, x[:16], y[:16])
    assert [c.name for c in checks] == ["eval_mode", "logits", "deterministic", "input_gradients", "saturation"]
    assert all(c.ok for c in checks) and checks_failed(checks) == []


@pytest.mark.parametrize("fault, failed, reason", [
    ("softmax", "logits", "probabilities.*remove the final softmax"),
    ("noise", "deterministic", "two forward passes on the same images differ.*EOT"),
    ("rounding", "input_gradients", "zero input gradients for 16 of 16 images.*gradient masking"),
    ("train", "eval_mode", "train mode.*call model.eval\\(\\)"),
])
def test_each_fault_is_caught_with_its_reason(lenet, lenet_batch, fault, failed, reason):
    x, y = lenet_batch
    model = {"softmax": lambda: Wrap(lenet, Softmax()), "noise": lambda: Wrap(NoisyInput(), lenet),
             "rounding": lambda: Rounding(lenet), "train": lambda: lenet}[fault]()
    if fault == "train":
        lenet.train()
    try:
        with pytest.warns(AdvkitSanityWarning, match=reason):
            checks = _by_name(check_model(model, x[:16], y[:16]))
    finally:
        lenet.eval()
    assert not checks[failed].ok
    assert [n for n, c in checks.items() if not c.ok] == [failed]


class Scale(nn.Module):  # over-confident logits: the same predictions, a softmax saturated in float32
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 1000 * z


def test_a_saturated_softmax_is_caught_and_the_margin_loss_is_named(lenet, lenet_batch):
    x, y = lenet_batch
    with pytest.warns(AdvkitSanityWarning, match="rounds the true class's probability to exactly 1.0 for 1[0-6] of "
                                                 "16 images.*loss='margin'"):
        checks = _by_name(check_model(Wrap(lenet, Scale()), x[:16], y[:16]))
    assert [n for n, c in checks.items() if not c.ok] == ["saturation"]  # no gradient is zero: only this check


def test_the_saturation_check_tells_the_zoo_mnist_lenet_from_its_pgd_twin():
    """The shipped MNIST LeNet (no weight decay) saturates on most test images, the PGD-trained one on none; this is
    why cross-entropy FGSM at eps 0.25 fools the former only about a quarter of the time (stop 20's note)."""
    import advkit.models
    from advkit.data import load

    d = load("mnist", "test", limit=32)
    plain = _by_name(check_model(advkit.models.load("lenet", dataset="mnist"), d.x, d.y, warn=False))
    robust = _by_name(check_model(advkit.models.load("lenet_pgd", dataset="mnist"), d.x, d.y, warn=False))
    assert not plain["saturation"].ok and robust["saturation"].ok


def test_log_probabilities_are_fine(lenet, lenet_batch):
    class LogSoftmax(nn.Module):
        def forward(self, z):
            return z.log_softmax(1)

    checks = _by_name(check_model(Wrap(lenet, LogSoftmax()), lenet_batch[0][:8], warn=False))
    assert checks["logits"].ok and "log-probabilities" in checks["logits"].detail


def test_the_model_and_the_random_state_are_left_as_they_were(lenet_batch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                        nn.Linear(4 * 26 * 26, 10))
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.get_rng_state()
    checks = _by_name(check_model(net, lenet_batch[0][:8], warn=False))
    assert not checks["eval_mode"].ok and "2 BatchNorm/dropout layer(s)" in checks["eval_mode"].detail
    assert all(m.training for m in net.modules())  # the flags are restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())  # BatchNorm statistics untouched
    assert torch.equal(torch.get_rng_state(), state)


def test_advkit_attack_records_the_checks(tmp_path):
    from advkit.study.attack_run import run_attack

    summary = run_attack("fgsm", "lenet", "fashion-mnist", None, attack_kwargs={"eps": 0.1}, limit=16)
    assert [c["name"] for c in summary["model_checks"]] == ["eval_mode", "logits", "deterministic",
                                                           "input_gradients", "saturation"]
    assert all(c["ok"] for c in summary["model_checks"])
    assert summary["data_selection"] == "16 class-balanced (seed 0)"
