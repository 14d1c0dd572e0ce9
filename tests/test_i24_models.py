"""Issue 24, "your own model": ``advkit.models.wrap`` for a network in memory, and architectures that another
installed package registers through the ``advkit.architectures`` entry-point group."""

from __future__ import annotations

import re
import sys
import textwrap
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advkit import models
from advkit.cli import app
from advkit.models import registry

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ---------------------------------------------------------------------------------------------- wrap(net, ...)
def test_a_timm_model_needs_no_arguments(timm: ModuleType) -> None:
    net = timm.create_model("vit_rect")  # pretrained_cfg: 3x160x128, 5 classes, mean 0.5, std 0.25
    net.train()
    model = models.wrap(net)
    assert model.input_shape == (3, 160, 128) and model.num_classes == 5 and model.name == "vit_rect"
    assert not model.training and not net.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 160, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), net((x - 0.5) / 0.25))  # pixels in [0, 1]; the normalisation is inside
    assert model.card["read_from_model"] == ["input_shape", "mean", "num_classes", "std"]


def test_older_timm_default_cfg_and_a_replaced_head(timm: ModuleType) -> None:
    net = timm.create_model("resnet50", num_classes=10)  # the cfg still says the pretrained 1000 classes
    assert net.pretrained_cfg["num_classes"] == 1000
    assert models.wrap(net).num_classes == 10
    old = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    old.default_cfg = {"input_size": (3, 8, 8), "mean": (0.5,), "std": (0.5,), "num_classes": 4}
    model = models.wrap(old)
    assert model.input_shape == (3, 8, 8) and model.preprocess.mean.flatten().tolist() == [0.5] * 3


def test_arguments_given_override_the_cfg(timm: ModuleType) -> None:
    net = timm.create_model("inception_v3")  # cfg: 3x299x299, mean/std 0.5
    model = models.wrap(net, mean=(0.0, 0.0, 0.0), std=(1.0,), input_shape=(3, 64, 64), name="mine")
    assert model.input_shape == (3, 64, 64) and model.name == "mine"
    assert model.preprocess.mean.flatten().tolist() == [0.0] * 3
    assert model.preprocess.std.flatten().tolist() == [1.0] * 3
    assert model.card["read_from_model"] == ["num_classes"]


def test_a_wrapped_network_gives_the_zoo_models_logits(lenet: models.Classifier) -> None:
    card = lenet.card
    mine = models.wrap(lenet.net, mean=card["mean"], std=card["std"], input_shape=tuple(card["input_shape"]),
                       num_classes=card["num_classes"])
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(mine(x), lenet(x))


def test_missing_values_are_named_with_how_to_pass_them() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match=r"mean, std, input_shape, num_classes not given .* no timm pretrained_cfg"
                                         r".*wrap\(net, mean=.*raw pixels"):
        models.wrap(net)
    with pytest.raises(ValueError, match=r"num_classes not given .*pass it as keyword arguments, e.g. "
                                         r"wrap\(net, num_classes=1000\)$"):
        models.wrap(net, mean=(0.5,), std=(0.5,), input_shape=(1, 28, 28))


def _returns_tuple() -> nn.Module:
    class Two(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1)[:, :10], x

    return Two()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mean": (0.5, 0.5)}, r"mean needs one number per channel \(1, from input_shape\)"),
    ({"std": (0.0,)}, r"std must be positive"),
    ({"std": (float("nan"),)}, r"std needs one number per channel"),
    ({"input_shape": (28, 28)}, r"input_shape must be \(C, H, W\), three positive integers"),
    ({"input_shape": (1, 28, 28.0)}, r"input_shape must be \(C, H, W\)"),
    ({"num_classes": 1}, r"num_classes must be an integer >= 2"),
    ({"num_classes": True}, r"num_classes must be an integer >= 2"),
    ({"num_classes": 5}, r"returned shape \(1, 10\) for one image, expected \(1, 5\) logits; pass num_classes=10"),
    ({"input_shape": (1, 32, 32)}, r"forward pass on a zero image of input_shape \(1, 32, 32\) failed "
                                   r"\(RuntimeError: .*\); check input_shape"),
])
def test_bad_arguments_are_refused_with_the_fix(kwargs: dict, match: str) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    args = {"mean": (0.5,), "std": (0.5,), "input_shape": (1, 28, 28), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        models.wrap(net, **args)


def test_what_is_not_a_plain_logits_network_is_refused(lenet: models.Classifier) -> None:
    args = {"mean": (0.5,), "std": (0.5,), "input_shape": (1, 28, 28), "num_classes": 10}
    with pytest.raises(ValueError, match=r"returned a tuple, not a tensor of logits"):
        models.wrap(_returns_tuple(), **args)
    with pytest.raises(ValueError, match=r"already an advkit Classifier .* wrap\(model.net, \.\.\.\)"):
        models.wrap(lenet, **args)  # wrapping it again would normalise twice


def test_an_attack_runs_on_a_wrapped_model(lenet_batch: tuple[torch.Tensor, torch.Tensor],
                                           lenet: models.Classifier) -> None:
    from advkit.attacks import create

    c = lenet.card
    mine = models.wrap(lenet.net, mean=c["mean"], std=c["std"], input_shape=(1, 28, 28), num_classes=10)
    x, y = lenet_batch
    res = create("ifgsm", eps=0.1, steps=5)(mine, x[:16], y[:16])
    assert float((res.x_adv - x[:16]).abs().max()) <= 0.1 + 1e-6
    assert int(res.success.sum()) >= 8


# ------------------------------------------------------------------------- the advkit.architectures entry points
PLUGIN = '''
"""A user's architectures (a stand-in for an installed package)."""
from torch import nn


def tinynet(in_channels, num_classes, image_size):
    """A one-layer conv net for tests."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


tinynet.connections = "none"
tinynet.paper = "Me et al. 2026"
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution ``advkit-demo-arch 0.1`` on sys.path with three entry points: a working builder, one whose
    module does not import, and one that takes a built-in name; advkit's registry as if never looked up."""
    site = tmp_path / "site"
    (site / "demo_arch").mkdir(parents=True)
    (site / "demo_arch" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "advkit_demo_arch-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: advkit-demo-arch\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[advkit.architectures]\ntinynet = demo_arch:tinynet\n"
                                           "broken = demo_arch_missing:net\nresnet20 = demo_arch:tinynet\n")
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
    monkeypatch.setattr(registry, "_ARCHS", dict(registry._ARCHS))  # restored after the test
    monkeypatch.setattr(registry, "_entry_points_read", False)
    monkeypatch.delitem(sys.modules, "demo_arch", raising=False)
    return site


def test_entry_points_register_once_and_bad_ones_warn(plugin: Path) -> None:
    assert "demo_arch" not in sys.modules  # read lazily: nothing loaded before the first lookup
    with pytest.warns(UserWarning) as caught:
        names = models.arch_names()
    assert names[-1] == "tinynet" and "broken" not in names
    spec = models.get_arch("tinynet")
    assert (spec.paper, spec.connections) == ("Me et al. 2026", "none")
    assert spec.description == "A one-layer conv net for tests."  # the docstring's first line
    assert models.get_arch("resnet20").family == "resnet"  # the built-in is kept
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert re.search(r"architecture 'broken' \(entry point broken = demo_arch_missing:net in group "
                     r"advkit.architectures, from advkit-demo-arch 0.1\) is not available: loading it failed "
                     r"\(ModuleNotFoundError", messages[0])
    assert re.search(r"architecture 'resnet20' \(entry point resnet20 = demo_arch:tinynet .* from advkit-demo-arch "
                     r"0.1\) is not available: advkit has a built-in architecture of that name; rename the entry "
                     r"point", messages[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read once: no second warning
        assert models.arch_names() == names


def test_the_cli_and_experiment_files_see_a_registered_architecture(plugin: Path, tmp_path: Path,
                                                                    fmnist_test) -> None:
    from advkit.study.runner import run_study
    from tests.test_transfer import make_tiny_zoo, tiny_config

    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    assert re.search(r"tinynet .*\(not shipped\) .*tinynet .*none .*Me et al. 2026", flat(r.output))
    assert "warning: architecture 'broken'" in flat(r.output)
    torch.manual_seed(0)
    from demo_arch import tinynet  # type: ignore[import-not-found]

    torch.save(tinynet(1, 10, 28).state_dict(), tmp_path / "mine.pt")
    r = runner.invoke(app, ["models", "import", str(tmp_path / "mine.pt"), "--arch", "tinynet", "--dataset",
                            "fashion-mnist", "--out", str(tmp_path / "m"), "--mean", "0.286", "--std", "0.353"])
    assert r.exit_code == 0, r.output
    path = tmp_path / "m" / "mine.safetensors"
    assert models.load(str(path)).card["arch"] == "tinynet"
    zoo = make_tiny_zoo(tmp_path)
    cfg = tiny_config(zoo, targets=[zoo["tres"], str(path)], attacks=["ifgsm"], seeds=[0], steps=1,
                      sample={"n": 4, "only_correct": False})
    res = run_study(cfg, tmp_path / "run")
    targets = {r["target"] for r in res.records["success"]}
    assert "mine" in targets and len(targets) == 2, targets


def test_advkit_train_builds_a_registered_architecture(plugin: Path, tmp_path: Path, fmnist_test) -> None:
    out = tmp_path / "tiny.safetensors"
    r = runner.invoke(app, ["train", "tinynet", "--epochs", "1", "--train-split", "train[:640]", "--no-augment",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert models.read_card(out)["arch"] == "tinynet"
    assert models.load(str(out)).input_shape == (1, 28, 28)
