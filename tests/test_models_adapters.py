"""The torchvision / timm adapters, run against the stand-in packages in tests/fakes (neither is installed here).

The fakes are put on ``sys.path`` so the adapter's real code path (lazy import, weights enum, transforms metadata,
``timm.data.resolve_data_config``) runs; every test removes them from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from conftest import drop_package
from safetensors.torch import save_file

import advkit.models
from advkit.models.adapters import Preprocess, load_adapter

FAKES = Path(__file__).resolve().parent / "fakes"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- torchvision ----------------------------------------------------------------------------------------------------


def test_inception_resizes_to_299_and_normalises_once(tv: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tv.models, "ONLINE", True)
    model = load_adapter("torchvision:inception_v3")
    card = model.card
    assert model.input_shape == (3, 299, 299) and model.num_classes == 1000
    assert card["source"] == "torchvision" and card["weights"] == "IMAGENET1K_V1" and card["pretrained"] is True
    assert card["crop_size"] == [299, 299] and card["resize_size"] == [342, 342]
    assert card["interpolation"] == "bilinear" and len(card["classes"]) == 1000
    assert card["weights_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert card["weights_std"] == pytest.approx([0.229, 0.224, 0.225])
    # transform_input is folded into our normalisation: ImageNet mean/std then transform_input == (x - 0.5) / 0.5.
    assert card["transform_input_folded"] is True and model.net.transform_input is False
    assert card["mean"] == pytest.approx([0.5] * 3) and card["std"] == pytest.approx([0.5] * 3)

    x = _pixels(2, 3, 224, 224)
    resized = _resize(x, (299, 299))
    torch.testing.assert_close(model.preprocess(x), (resized - 0.5) / 0.5, atol=1e-6, rtol=0)

    # The reference pipeline: torchvision's own pretrained net (transform_input=True) on ImageNet-normalised input.
    reference = tv.models.get_model("inception_v3", weights="IMAGENET1K_V1").eval()
    assert reference.transform_input is True
    with torch.no_grad():
        expected = reference((resized - IMAGENET_MEAN) / IMAGENET_STD)
        got = model(x)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # Normalising twice (our normalisation, then transform_input again) gives something else.
        model.net.transform_input = True
        assert not torch.allclose(model(x), expected, atol=1e-3)
        model.net.transform_input = False


def test_inception_without_weights_is_not_folded(tv: ModuleType) -> None:
    model = load_adapter("torchvision:inception_v3", pretrained=False)
    assert tv.models.DOWNLOADS == []
    assert model.card["transform_input_folded"] is False and model.net.transform_input is False
    assert model.card["weights"] is None and model.card["pretrained"] is False
    assert model.card["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = _pixels(1, 3, 64, 80)
    with torch.no_grad():
        expected = model.net((_resize(x, (299, 299)) - IMAGENET_MEAN) / IMAGENET_STD)
        torch.testing.assert_close(model(x), expected)


def test_resnet_default_and_named_weights(tv: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tv.models, "ONLINE", True)
    v2 = load_adapter("torchvision:resnet50")
    assert v2.card["weights"] == "IMAGENET1K_V2" and v2.card["resize_size"] == [232, 232]
    assert v2.input_shape == (3, 224, 224) and v2.card["transform_input_folded"] is False
    x = _pixels(2, 3, 224, 224)
    # An input at the crop size is not resized: exactly one normalisation.
    torch.testing.assert_close(v2.preprocess(x), (x - IMAGENET_MEAN) / IMAGENET_STD, atol=0, rtol=0)
    v1 = load_adapter("torchvision:resnet50", weights="IMAGENET1K_V1")
    assert v1.card["weights"] == "IMAGENET1K_V1" and v1.card["resize_size"] == [256, 256]
    assert not torch.equal(v1.net.fc.weight, v2.net.fc.weight)
    qualified = load_adapter("torchvision:resnet50", weights="ResNet50_Weights.IMAGENET1K_V1")
    assert torch.equal(qualified.net.fc.weight, v1.net.fc.weight)


def test_download_failure_says_how_to_use_local_weights(tv: ModuleType) -> None:
    with pytest.raises(ValueError, match="could not be fetched") as info:
        load_adapter("torchvision:resnet50")
    msg = str(info.value)
    assert "TORCH_HOME" in msg and "resnet50-11ad3fa6.pth" in msg and "pretrained=False" in msg
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert tv.models.DOWNLOADS  # the adapter really went through the weights' download
    with pytest.raises(ValueError, match="could not be fetched"):
        advkit.models.load("torchvision:resnet50")


def test_num_classes_from_output_when_no_metadata(tv: ModuleType) -> None:
    model = load_adapter("torchvision:convhead_net", pretrained=False)
    assert model.num_classes == 7 and "classes" not in model.card
    assert model(_pixels(2, 3, 100, 100)).shape == (2, 7)
    with pytest.raises(ValueError, match="no pretrained weights"):
        load_adapter("torchvision:convhead_net")


def test_torchvision_bad_names(tv: ModuleType) -> None:
    with pytest.raises(ValueError, match="did you mean resnet50"):
        load_adapter("torchvision:resnet5", pretrained=False)
    with pytest.raises(ValueError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_adapter("torchvision:resnet50", weights="IMAGENET1K_V9")
    with pytest.raises(ValueError, match="pretrained=False"):
        load_adapter("torchvision:resnet50", pretrained=False, weights="IMAGENET1K_V1")


# --- timm -----------------------------------------------------------------------------------------------------------


def test_timm_config_from_pretrained_cfg(timm: ModuleType) -> None:
    model = load_adapter("timm:resnet50", pretrained=False)
    card = model.card
    assert card["source"] == "timm" and card["model"] == "resnet50" and card["weights"] is None
    assert model.input_shape == (3, 224, 224) and model.num_classes == 1000
    assert card["interpolation"] == "bicubic" and card["crop_pct"] == pytest.approx(0.95)
    assert card["resize_size"] == [235, 235]  # int(224 / 0.95)
    assert card["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_timm_inception_299(timm: ModuleType) -> None:
    model = load_adapter("timm:inception_v3.tf_in1k", pretrained=False)
    assert model.input_shape == (3, 299, 299)
    x = _pixels(2, 3, 224, 224)
    torch.testing.assert_close(model.preprocess(x), (_resize(x, (299, 299)) - 0.5) / 0.5, atol=1e-6, rtol=0)


def test_timm_rectangular_input_and_class_count(timm: ModuleType) -> None:
    model = load_adapter("timm:vit_rect", pretrained=False)
    assert model.input_shape == (3, 160, 128) and model.num_classes == 5
    x = _pixels(2, 3, 32, 32)
    assert model.preprocess(x).shape == (2, 3, 160, 128)
    assert model(x).shape == (2, 5)


def test_timm_without_resolve_data_config(timm: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    with_resolver = load_adapter("timm:inception_v3", pretrained=False).card
    monkeypatch.delattr(timm.data, "resolve_data_config")
    without = load_adapter("timm:inception_v3", pretrained=False).card
    keys = ("input_shape", "mean", "std", "interpolation", "crop_pct", "resize_size")
    assert {k: without[k] for k in keys} == {k: with_resolver[k] for k in keys}


def test_timm_download_failure(timm: ModuleType) -> None:
    with pytest.raises(ValueError, match="could not be fetched") as info:
        load_adapter("timm:resnet50")
    assert "HF_HOME" in str(info.value) and ".safetensors" in str(info.value)
    assert isinstance(info.value.__cause__, timm.LocalEntryNotFoundError)
    with pytest.raises(ValueError, match="could not be fetched"):
        advkit.models.load("timm:resnet50")


def test_timm_tag_and_local_weights(timm: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = timm.create_model("resnet50")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = load_adapter("timm:resnet50", weights=str(path))
    assert model.card["weights_file"] == str(path)
    for (k, a), b in zip(model.net.state_dict().items(), source.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="safetensors"):
        load_adapter("timm:resnet50", weights=str(tmp_path / "resnet50.pth"))

    monkeypatch.setattr(timm, "ONLINE", True)
    tagged = load_adapter("timm:resnet50", weights="tv_in1k")
    assert tagged.card["model"] == "resnet50.tv_in1k" and tagged.card["weights"] == "tv_in1k"
    assert tagged.card["interpolation"] == "bilinear" and tagged.card["crop_pct"] == pytest.approx(0.875)


def test_timm_unknown_model(timm: ModuleType) -> None:
    with pytest.raises(ValueError, match="timm has no model 'resnet5'"):
        load_adapter("timm:resnet5", pretrained=False)


# --- both -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["torchvision:inception_v3", "torchvision:resnet50", "timm:inception_v3"])
def test_frozen_and_gradient_through_resize(spec: str, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("timm" if spec.startswith("timm:") else "tv")
    model = load_adapter(spec, pretrained=False)
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert isinstance(model.preprocess, Preprocess)
    x = _pixels(2, 3, 200, 180).requires_grad_(True)  # not the crop size: the resize is on the path
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, model.num_classes)
    (grad,) = torch.autograd.grad(logits.log_softmax(1)[:, 0].sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 200, 180))


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_missing_package(package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    with pytest.raises(ValueError, match=f"pip install {package}") as info:
        load_adapter(f"{package}:resnet50", pretrained=False)
    assert "not installed" in str(info.value) and repr(package) in str(info.value)


def test_broken_torchvision_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "torchvision"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ValueError, match="failed to import") as info:
            load_adapter("torchvision:resnet50")
    finally:
        drop_package("torchvision")
    msg = str(info.value)
    assert "RuntimeError" in msg and "torchvision::nms" in msg and "pip install torchvision" in msg


@pytest.mark.parametrize("spec", ["keras:resnet50", "resnet50", "torchvision:", "hub:timm:resnet50"])
def test_unknown_prefix(spec: str) -> None:
    with pytest.raises(ValueError, match="torchvision:NAME") as info:
        load_adapter(spec)
    assert "timm:NAME" in str(info.value)


def test_advkit_never_imports_the_optional_packages() -> None:
    """Importing advkit's models (adapters included) pulls in neither torchvision nor timm."""
    import subprocess

    code = ("import sys, advkit, advkit.models, advkit.models.adapters; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm')); "
            "sys.exit(f'imported: {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_public_loader_gives_random_weights_offline(tv: ModuleType) -> None:
    import advkit.models

    for model in (advkit.models.load("torchvision:inception_v3", weights=None),
                  advkit.models.load("torchvision:inception_v3@random")):
        assert tv.models.DOWNLOADS == []  # nothing fetched: works offline
        assert model.card["pretrained"] is False and model.card["weights"] is None
        assert model.input_shape == (3, 299, 299)
    with pytest.raises(ValueError, match="weights="):
        advkit.models.load("torchvision:inception_v3@random", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="torchvision:/timm: models only"):
        advkit.models.load("lenet", weights=None)
