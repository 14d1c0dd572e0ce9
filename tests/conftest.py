"""Shared fixtures: small seeded models and real Fashion-MNIST images."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

torch.set_num_threads(int(os.environ.get("ADVKIT_TEST_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))))


@pytest.fixture(scope="session")
def fmnist_test():
    """The first 512 Fashion-MNIST test images (real files; skip if the dataset is not installed)."""
    import advkit.data

    try:
        return advkit.data.load("fashion-mnist", "test", limit=512, subset="first", download_ok=False)
    except advkit.data.DataNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


@pytest.fixture(scope="session")
def lenet():
    """The shipped Fashion-MNIST LeNet (no skip connections)."""
    import advkit.models

    return advkit.models.load("lenet", dataset="fashion-mnist")


@pytest.fixture(scope="session")
def lenet_batch(lenet, fmnist_test):
    """64 test images the LeNet classifies correctly: ``(x, y)``."""
    from advkit.evaluate import predict

    ok = predict(lenet, fmnist_test.x) == fmnist_test.y
    return fmnist_test.x[ok][:64], fmnist_test.y[ok][:64]


class TinyResNet(torch.nn.Module):
    """A two-block residual net for fast, seeded tests: stem conv, two basic blocks (one with a projection)."""

    def __init__(self, c_in: int = 1, k: int = 10) -> None:
        super().__init__()
        from advkit.models.zoo.resnet import BasicBlock

        self.conv = torch.nn.Conv2d(c_in, 8, 3, padding=1)
        self.b1 = BasicBlock(8, 8)
        self.b2 = BasicBlock(8, 16, stride=2)
        self.fc = torch.nn.Linear(16, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b2(self.b1(torch.relu(self.conv(x))))
        return self.fc(h.mean((2, 3)))


@pytest.fixture()
def tiny_resnet():
    """A seeded, untrained tiny ResNet wrapped as a Classifier (1x12x12 inputs, 10 classes)."""
    from advkit.models import Classifier

    torch.manual_seed(0)
    return Classifier(TinyResNet(), (0.5,), (0.25,), (1, 12, 12), 10, name="tiny").freeze()


# ---- stand-ins for torchvision and timm (tests/fakes), offline ----------------------------------------------------
FAKES = Path(__file__).resolve().parent / "fakes"


def drop_package(package: str) -> None:
    """Forget ``package`` and its submodules (the next import reads them again)."""
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]


def _fake(package: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, key)  # restored after the test
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module(package)
    assert Path(module.__file__ or "").resolve().is_relative_to(FAKES)
    try:
        yield module
    finally:
        drop_package(package)


@pytest.fixture
def tv(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake torchvision, offline (downloads raise URLError) and with an empty download log."""
    for module in _fake("torchvision", monkeypatch):
        monkeypatch.setattr(module.models, "ONLINE", False)
        monkeypatch.setattr(module.models, "DOWNLOADS", [])
        yield module


@pytest.fixture
def timm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake timm, offline (the simulated Hub raises LocalEntryNotFoundError)."""
    for module in _fake("timm", monkeypatch):
        monkeypatch.setattr(module, "ONLINE", False)
        yield module
