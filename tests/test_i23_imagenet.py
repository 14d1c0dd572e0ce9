"""Issue 23, ImageNet-format data: WordNet-id folders and labels files get ImageNet's class index, random
torchvision / timm weights are seeded from the name, the missing-weights message names every way to ask for random
weights, and ``advkit reproduce sgm-imagenet --smoke`` runs the whole protocol on a few images.

torchvision and timm are not importable here: the model tests use the stand-ins in tests/fakes (as
tests/test_models_adapters.py does), with torchvision-structured ResNet / DenseNet stand-ins from tests/standins.py
for the smoke run's sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import standins as S
import torch
from torch import nn
from typer.testing import CliRunner

import advkit.data as data
import advkit.models
from advkit.data import IMAGENET_NAMES, IMAGENET_WNIDS, DataError, imagenet_index, load_imagefolder
from advkit.models.adapters import load_adapter, random_weights_seed
from advkit.reproduce.sgm_imagenet import reproduce_sgm_imagenet

Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to write the test images")

REPO = Path(__file__).resolve().parents[1]
FAKES = Path(__file__).resolve().parent / "fakes"
# a handful of ImageNet classes and their index in the 1,000-class order
PICKED = {"n01440764": 0, "n01443537": 1, "n02123045": 281, "n04592741": 908, "n15075141": 999}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def png(path: Path, value: int, size: tuple[int, int] = (6, 5)) -> None:
    arr = np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def wnid_folders(root: Path, per_class: int = 2) -> list[int]:
    """``root/WNID/k.png`` for the :data:`PICKED` classes; the labels ImageNet gives them, in load order."""
    want = []
    for wnid, index in PICKED.items():
        for k in range(per_class):
            png(root / wnid / f"{k}.png", 10 * index + k)
            want.append(index)
    return want


# ---- the shipped class list ----------------------------------------------------------------------------------


def test_the_shipped_wnid_list_is_imagenets_class_index() -> None:
    assert len(IMAGENET_WNIDS) == 1000 == len(set(IMAGENET_WNIDS))
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    assert IMAGENET_WNIDS[0] == "n01440764" and IMAGENET_NAMES[0] == "tench"
    assert IMAGENET_WNIDS[-1] == "n15075141" and IMAGENET_NAMES[-1] == "toilet tissue"
    assert IMAGENET_NAMES[281] == "tabby" and imagenet_index("n02123045") == 281
    with pytest.raises(ValueError, match="not one of the 1,000 ImageNet-1k WordNet ids"):
        imagenet_index("n99999999")
    # the list is package data: the wheel's globs include it
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["advkit"]
    shipped = [p.relative_to(REPO / "src" / "advkit").as_posix()
               for p in (REPO / "src" / "advkit" / "data").iterdir() if p.suffix == ".txt"]
    assert "data/imagenet_classes.txt" in shipped
    assert all(any(fnmatch(f, g) for g in globs) for f in shipped)


# ---- class folders named by WordNet id -----------------------------------------------------------------------


def test_wnid_class_folders_get_imagenets_index(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    want = wnid_folders(tmp_path / "imagenet" / "val")
    ds = data.load("imagenet", split="val", data_dir=tmp_path / "imagenet")
    assert ds.name == "imagenet" and ds.split == "val"
    assert ds.y.tolist() == want  # 0, 1, 281, 908, 999, not 0..4
    assert ds.classes == IMAGENET_WNIDS
    assert ds.images.shape == (10, 3, 224, 224)  # ImageNet's usual resize 256 + centre crop 224 by default
    # imagefolder with the 1,000 ids as classes: folders for only some of them are accepted
    same = load_imagefolder(tmp_path / "imagenet" / "val", classes=IMAGENET_WNIDS)
    assert same.y.tolist() == want and len(same.classes) == 1000
    # imagefolder alone labels by position, and says that this is not ImageNet's index
    with caplog.at_level(logging.WARNING):
        own = load_imagefolder(tmp_path / "imagenet" / "val")
    assert own.y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert "not by ImageNet's class index" in caplog.text and "'imagenet'" in caplog.text


def test_partial_class_lists_still_catch_misnamed_folders(tmp_path: Path) -> None:
    root = tmp_path / "val"
    wnid_folders(root, per_class=1)
    png(root / "n0144076" / "typo.png", 1)  # a misnamed folder beside folders for some of the classes
    with pytest.raises(DataError, match=r"folder\(s\) n0144076 are not among the classes given") as e:
        data.load("imagenet", split="val", data_dir=tmp_path)
    assert "Rename or remove" in str(e.value)
    pets = tmp_path / "pets"
    png(pets / "cat" / "a.png", 1)
    png(pets / "dog" / "a.png", 2)
    with pytest.raises(DataError, match="no folder for any of the 1000 classes given"):
        data.load("imagenet", split="val", data_dir=pets)
    with pytest.raises(ValueError, match="cannot be changed; load the dataset 'imagefolder'"):
        data.load("imagenet", split="val", data_dir=tmp_path, classes=["n01440764"])
    # picking some of the folders still works, and skipping classes without a folder keeps the list's indices
    assert load_imagefolder(pets, classes=["dog"]).y.tolist() == [0]
    assert load_imagefolder(pets, classes=["owl", "dog", "cat"]).y.tolist() == [1, 2]  # dog's folder, then cat's


# ---- flat folder + labels file -------------------------------------------------------------------------------


def flat_val(root: Path) -> list[int]:
    """ILSVRC-style flat images; the labels ImageNet gives them, in sorted-filename order."""
    picked = list(PICKED.items())
    for k, (_, index) in enumerate(picked, start=1):
        png(root / f"ILSVRC2012_val_{k:08d}.png", index)
    return [index for _, index in picked]


def test_flat_folder_with_a_filename_wnid_file(tmp_path: Path) -> None:
    want = flat_val(tmp_path / "val")
    lines = [f"ILSVRC2012_val_{k:08d}.png {w}" for k, w in enumerate(PICKED, start=1)]
    (tmp_path / "val_labels.txt").write_text("\n".join(reversed(lines)) + "\n")  # any order
    ds = data.load("imagenet", split="val", data_dir=tmp_path, size=4)
    assert ds.y.tolist() == want and ds.images.shape[-2:] == (4, 4)
    # integer labels are ImageNet's 0-based indices, checked against 1,000 classes
    (tmp_path / "val_labels.txt").write_text("".join(f"ILSVRC2012_val_{k:08d} {i}\n"
                                                     for k, i in enumerate(want, start=1)))
    assert data.load("imagenet", split="val", data_dir=tmp_path, size=4).y.tolist() == want
    (tmp_path / "val_labels.txt").write_text("".join(f"ILSVRC2012_val_{k:08d} {i + 1}\n"
                                                     for k, i in enumerate(want, start=1)))
    with pytest.raises(DataError, match="line 5: label 1000 out of range for 1000 classes"):
        data.load("imagenet", split="val", data_dir=tmp_path, size=4)
    # LOC_val_solution.csv beside val/ is found as it is
    (tmp_path / "val_labels.txt").unlink()
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        + "".join(f"ILSVRC2012_val_{k:08d},{w} 1 2 3 4\n" for k, w in enumerate(PICKED, start=1)))
    assert data.load("imagenet", split="val", data_dir=tmp_path, size=4).y.tolist() == want
    # the devkit's 1-based ILSVRC2012 ids are another order: refused, not misread
    gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("65\n970\n230\n809\n516\n")
    with pytest.raises(DataError, match="1-based ILSVRC2012 ids"):
        data.load("imagenet", split="val", data_dir=tmp_path, size=4, labels_file=gt)


def test_catalog_knows_imagenets_classes() -> None:
    info = data.info("imagenet")
    assert info.num_classes == 1000 and info.note is not None and "$ADVKIT_DATA/imagenet" in info.note
    assert data.info("imagefolder").num_classes is None


def test_dry_run_checks_the_labels(tmp_path: Path) -> None:
    wnid_folders(tmp_path / "ok" / "val")
    r = reproduce_sgm_imagenet(dry_run=True, data_dir=tmp_path / "ok", n=10)
    checks = {c["item"]: c for c in r["checks"]}
    assert r["config"]["dataset"] == "imagenet"
    assert checks["ImageNet validation folder"]["ok"] and "10+ images" in checks["ImageNet validation folder"]["detail"]
    assert checks["labels"]["ok"] and "5 of the 1,000 ImageNet classes" in checks["labels"]["detail"]
    for name in ("cat", "dog"):
        png(tmp_path / "pets" / "val" / name / "a.png", 1)
    r = reproduce_sgm_imagenet(dry_run=True, data_dir=tmp_path / "pets", n=2)
    checks = {c["item"]: c for c in r["checks"]}
    assert not checks["labels"]["ok"] and "no folder for any of the 1000 classes" in checks["labels"]["detail"]
    assert any(m.startswith("labels:") for m in r["missing"])


# ---- torchvision / timm stand-ins ----------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("spec", ["torchvision:resnet50", "timm:resnet50"])
def test_random_weights_are_seeded_from_the_name(spec: str, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("timm" if spec.startswith("timm:") else "tv")
    # the seed is the documented SHA-256 of the name (Python's hash() would differ between processes)
    seed = int.from_bytes(hashlib.sha256(spec.encode()).digest()[:8], "big") >> 1
    assert random_weights_seed(spec) == seed
    torch.manual_seed(1)
    first = load_adapter(spec, pretrained=False)
    torch.manual_seed(2)
    before = torch.get_rng_state()
    second = advkit.models.load(spec + "@random")  # another process state: the same weights
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is left alone
    assert _same(_state(first), _state(second))
    assert first.card["seed"] == second.card["seed"] == seed
    assert first.card["pretrained"] is False and first.card["weights"] is None
    other = load_adapter(spec.replace("resnet50", "inception_v3"), pretrained=False)
    assert other.card["seed"] != seed


def test_the_missing_weights_message_names_every_way_to_random_weights(tv: ModuleType, timm: ModuleType) -> None:
    for spec in ("torchvision:resnet50", "timm:resnet50"):
        with pytest.raises(ValueError, match="could not be fetched") as e:
            load_adapter(spec)
        msg = str(e.value)
        assert f"{spec}@random" in msg and "weights=None" in msg and "pretrained=False" in msg, msg
    with pytest.raises(ValueError, match="has no pretrained weights") as e:
        load_adapter("torchvision:convhead_net")
    assert "torchvision:convhead_net@random" in str(e.value) and "weights=None" in str(e.value)


# ---- the smoke run of the ImageNet reproduction ---------------------------------------------------------------


def _vgg(*, weights: Any = None, **kwargs: Any) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 1000))


def _strided(net: nn.Module, stem: nn.Conv2d) -> nn.Module:
    stem.stride = (4, 4)  # 224 px inputs: a cheaper first layer keeps the test fast
    return net


def _resnet(*, weights: Any = None, **kwargs: Any) -> nn.Module:
    net = S.tv_resnet("bottleneck", (1, 2, 1, 1), num_classes=1000)
    return _strided(net, net.conv1)


def _densenet(*, weights: Any = None, **kwargs: Any) -> nn.Module:
    net = S.tv_densenet(num_classes=1000)
    return _strided(net, net.features.conv0)


@pytest.fixture
def imagenet_models(tv: ModuleType, timm: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reproduction's four models as tiny torchvision- / timm-structured stand-ins (random weights only)."""
    builders = {"resnet152": _resnet, "densenet201": _densenet, "vgg19_bn": _vgg}
    for name, build in builders.items():
        monkeypatch.setitem(tv.models._BUILDERS, name, build)
    monkeypatch.setitem(timm._CFGS, "legacy_senet154", {"in1k": {
        "input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875, "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "num_classes": 1000, "hf_hub_id": "timm/legacy_senet154.in1k"}})


def test_smoke_run_on_a_few_images_with_random_weights(imagenet_models: None, tmp_path: Path) -> None:
    from advkit.cli import app

    wnid_folders(tmp_path / "imagenet" / "val", per_class=1)
    out = tmp_path / "smoke"
    res = CliRunner().invoke(app, ["reproduce", "sgm-imagenet", "--smoke", "--n", "2",
                                   "--data-dir", str(tmp_path / "imagenet"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and "numbers mean nothing" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["models"]) == {"torchvision:resnet152@random", "torchvision:densenet201@random",
                                       "torchvision:vgg19_bn@random", "timm:legacy_senet154@random"}
    assert manifest["data"]["dataset"] == "imagenet" and manifest["data"]["pool"] == 2
    results = json.loads((out / "results.json").read_text())
    assert "Smoke run" in results["meta"]["notes"][0] and results["meta"]["seeds"] == [0]
    cells = {(c["source"], c["attack"]): c for c in results["cells"]}
    attacks = ["ifgsm", "ti", "mi", "di", "sgm", "sgm-orig", "sgm+mi", "sgm+di"]
    assert set(cells) == {(s, a) for s in ("torchvision:resnet152", "torchvision:densenet201") for a in attacks}
    assert all(c["sgm_connections"] for (_, a), c in cells.items() if a.startswith("sgm"))
    assert all(c["nan_count"] == 0 for c in cells.values())
    assert (out / "report.html").is_file()
    # without --smoke the same folder is only checked (the weights are missing), and nothing runs
    res = CliRunner().invoke(app, ["reproduce", "sgm-imagenet", "--data-dir", str(tmp_path / "imagenet")])
    assert res.exit_code == 0 and "nothing was run" in res.output and "torchvision resnet152 weights" in res.output
