"""Perturbation generators: training against a source, the card, the attack, and refusals of bad input."""

from __future__ import annotations

import json

import pytest
import torch

import advkit.attacks as A
from advkit.models.checkpoint import CheckpointError
from advkit.models.generator import PerturbationGenerator, load_generator, save_generator
from advkit.train.generator import generator_loss, train_generator


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_test):
    """A generator trained for one epoch on 1,536 Fashion-MNIST training images against the LeNet."""
    gen, card = train_generator(["lenet"], "fashion-mnist", eps=0.1, epochs=1, limit=1536, seed=0,
                                eval_images=256)
    path = save_generator(gen, tmp_path_factory.mktemp("gen") / "g.safetensors", card)
    return gen, card, path


def test_generator_attack_beats_the_noise_control_within_budget(trained, lenet, lenet_batch):
    _, card, path = trained
    x, y = lenet_batch
    r = A.create(f"generator:{path}")(lenet, x, y)
    assert r.forward_passes == 1 and r.backward_passes == 0  # the model is only asked for the success check
    assert float((r.x_adv - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(r.x_adv.min())
    noise = A.create("noise", eps=0.1)(lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert r.success_rate >= noise.success_rate + 0.2, (r.success_rate, noise.success_rate)
    smaller = A.create(f"generator:{path}", eps=0.05)(lenet, x, y)
    assert float((smaller.x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert r.info["generator"]["trained_eps"] == 0.1


def test_card_records_what_reproduces_the_generator(trained, lenet):
    _, card, path = trained
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk["kind"] == "generator" and on_disk["input_shape"] == [1, 28, 28]
    assert on_disk["sources"][0]["name"] == "lenet" and on_disk["sources"][0]["sha256"]
    assert on_disk["command"].startswith("advkit train-generator --source lenet --dataset fashion-mnist --eps 0.1")
    assert "--limit 1536" in on_disk["command"] and on_disk["loss"] == "relativistic"
    # the card's fooling rate is the share of the evaluation images (the default balanced test subset) whose
    # prediction the saved generator changes
    import advkit.data
    from advkit.evaluate import predict

    assert on_disk["fooling_rate_images"] == 256
    x = advkit.data.load("fashion-mnist", "test", limit=256).x
    clean = predict(lenet, x)
    r = A.create(f"generator:{path}")(lenet, x, clean)
    assert on_disk["fooling_rate_test"]["lenet"] == pytest.approx(r.success_rate, abs=1e-4)
    assert r.success_rate > 0.3


def test_saved_generator_loads_to_the_same_function(trained, lenet_batch):
    gen, _, path = trained
    x, _ = lenet_batch
    loaded, card = load_generator(path)
    with torch.no_grad():
        assert torch.equal(gen(x), loaded(x))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_training_is_seeded():
    a, _ = train_generator(["lenet"], eps=0.1, limit=128, seed=3, eval_images=16, blocks=1)
    b, _ = train_generator(["lenet"], eps=0.1, limit=128, seed=3, eval_images=16, blocks=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_relativistic_loss_is_relative_to_the_clean_logits():
    clean = torch.tensor([[5.0, 1.0, 0.0]])
    # shifting the adversarial logits by the clean ones leaves the plain CE but not the relativistic one
    adv = torch.tensor([[5.0, 4.0, 0.0]])
    assert generator_loss(adv, clean, "ce") == pytest.approx(-torch.nn.functional.cross_entropy(adv, torch.tensor([0])))
    rel = -torch.nn.functional.cross_entropy(adv - clean, torch.tensor([0]))
    assert generator_loss(adv, clean, "relativistic") == pytest.approx(rel)
    with pytest.raises(ValueError, match="loss must be one of"):
        generator_loss(adv, clean, "hinge")


def test_wrong_image_shape_is_refused_naming_the_fix(trained, lenet):
    _, _, path = trained
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"trained on 1x28x28 images, got 3x32x32.*resize them to 28x28"):
        A.create(f"generator:{path}")(lenet, x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="trained on 1x28x28"):
        PerturbationGenerator(1, 8, 1, 28)(x)


def test_missing_card_wrong_hash_and_pickles_are_refused(trained, tmp_path):
    gen, card, path = trained
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="no generator card"):
        A.create(f"generator:{lone}")
    tampered = save_generator(gen, tmp_path / "t.safetensors", card)
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the card"):
        load_generator(tampered)
    pt = tmp_path / "g.pt"
    pt.write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_generator(pt)
    with pytest.raises(ValueError, match="needs the generator's weights"):
        A.create("generator")


@pytest.mark.parametrize("kw, match", [({"eps": 0.0}, "eps must be in"), ({"eps": 1.5}, "eps must be in"),
                                       ({"loss": "hinge"}, "loss must be one of"), ({"epochs": 0}, "epochs"),
                                       ({"sources": []}, "at least one source")])
def test_bad_training_settings_are_refused_before_any_work(kw, match):
    args = {"sources": ["lenet"], "eps": 0.1, "limit": 64, "eval_images": 8, **kw}
    sources = args.pop("sources")
    with pytest.raises(ValueError, match=match):
        train_generator(sources, **args)


def test_generator_in_a_transfer_study(trained, tmp_path):
    from tests.test_transfer import make_tiny_zoo, tiny_config

    _, _, path = trained
    zoo = make_tiny_zoo(tmp_path)
    from advkit.study.runner import run_study

    cfg = tiny_config(zoo, attacks=["ifgsm", f"generator:{path}"], seeds=[0], eps=["0.1"])
    res = run_study(cfg, tmp_path / "run")
    labels = {c["attack"] for c in res.records["cells"]}
    assert labels == {"ifgsm", "generator-g"}
    gen_cell = next(c for c in res.records["cells"] if c["attack"] == "generator-g")
    assert gen_cell["config"]["path"] == str(path) and gen_cell["backward_passes"] == 0


def test_shipped_generators_load_and_resolve_by_name(lenet, lenet_batch):
    from advkit.models.generator import generator_path, shipped_generators

    names = shipped_generators()
    assert {"fashion-mnist-lenet", "fashion-mnist-resnet20", "mnist-lenet"} <= set(names)
    x, y = lenet_batch
    for name in names:
        gen, card = load_generator(generator_path(name))  # the hash is checked
        assert card["command"].startswith("advkit train-generator") and card["eps"] in (0.1, 0.3)
        assert card["dataset"] in ("fashion-mnist", "mnist") and card["sources"][0]["sha256"]
    r = A.create("generator:fashion-mnist-lenet")(lenet, x, y)
    assert r.success_rate >= 0.5 and float((r.x_adv - x).abs().max()) <= 0.1 + 1e-6
    with pytest.raises(CheckpointError, match="no generator 'nope'.*fashion-mnist-lenet"):
        A.create("generator:nope")


def test_zoo_ships_a_generator_and_a_universal_perturbation_per_domain_for_residual_and_plain_hosts():
    import advkit.models
    from advkit.models.generator import generator_path, read_generator_card, shipped_generators
    from advkit.models.universal import load_universal, shipped_universal, universal_path

    for dataset in ("fashion-mnist", "mnist"):
        kinds = set()
        for host in ("lenet", "resnet20"):
            name = f"{dataset}-{host}"
            assert name in shipped_generators() and name in shipped_universal(), name
            gen_card = read_generator_card(generator_path(name))
            _, uap_card = load_universal(universal_path(name))   # checks the hash
            assert gen_card["dataset"] == uap_card["dataset"] == dataset
            source = advkit.models.load(host, dataset=dataset)
            assert gen_card["sources"][0]["sha256"] == uap_card["source"]["sha256"] == source.card["sha256"]
            kinds.add(source.card["connections"])
        assert kinds == {"none", "residual"}, (dataset, kinds)
