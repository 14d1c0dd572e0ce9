"""Adversarial training on a trained generator's samples (``--adversarial generator:PATH``; Papernot et al. 2016,
section VI): it raises accuracy on that generator's examples, records itself, and refuses generators that do not
fit the data."""

from __future__ import annotations

import pytest
import torch

import advkit.data
from advkit.models.generator import PerturbationGenerator, load_generator, project_linf, save_generator
from advkit.train import Recipe, train
from advkit.train.generator import train_generator
from advkit.train.loop import accuracy
from advkit.train.recipe import adversarial_settings


def _recipe(adv=None) -> Recipe:
    return Recipe(epochs=3, lr=0.05, batch_size=64, schedule="constant", augment=False, bf16=False, adversarial=adv)


def _train(adv=None, rows: str = "train[:1000]"):
    return train("linear", "fashion-mnist", recipe=_recipe(adv), train_split=rows, robust_images=50,
                 test_data=advkit.data.load("fashion-mnist", "test", limit=200))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The paper's setting, small: a linear model trained on 1,000 images, a generator trained against it (GAP's
    cross-entropy loss at eps 0.2: its training is the same at every thread count; an AdvGAN generator against a
    linear model fools too few images for the effect to show at this size), and the same model, seed and images
    trained again on the generator's samples only (alpha 0)."""
    folder = tmp_path_factory.mktemp("gentrain")
    clean, _ = train("linear", "fashion-mnist", recipe=_recipe(), train_split="train[:1000]",
                     test_data=advkit.data.load("fashion-mnist", "test", limit=200), out=folder / "lin.safetensors")
    gen, gcard = train_generator([str(folder / "lin.safetensors")], "fashion-mnist", eps=0.2, epochs=3, limit=512,
                                 loss="ce", ngf=8, blocks=2, batch_size=32, eval_images=100)
    path = save_generator(gen, folder / "gap.safetensors", gcard)
    adv, card = _train({"attack": f"generator:{path}", "alpha": 0.0})
    return clean, adv, card, path


def test_training_on_generated_samples_raises_accuracy_on_them(pair):
    clean, adv, card, path = pair
    test = advkit.data.load("fashion-mnist", "test", limit=500)  # held out from both trainings
    gen = load_generator(path)[0]
    with torch.no_grad():
        x_gen = project_linf(gen(test.x), test.x, 0.2)
    on_clean, on_adv = accuracy(clean, x_gen, test.y), accuracy(adv, x_gen, test.y)
    assert on_adv >= on_clean + 0.05, (on_clean, on_adv)  # measured: 0.646 -> 0.726 with 1 and 2 threads
    assert float((x_gen - test.x).abs().max()) <= 0.2 + 1e-6


def test_the_card_records_the_generator(pair):
    _, _, card, path = pair
    a = card["adversarial_training"]
    assert a["attack"] == "generator" and a["eps"] == 0.2 and a["alpha"] == 0.0  # eps from the generator's card
    assert a["generator"] == str(path) and len(a["generator_sha256"]) == 64
    assert "Papernot et al. 2016" in a["paper"] and 0.0 <= card["generator_test_accuracy"] <= 1.0
    assert f"--adversarial generator:{path} --adversarial-eps 0.2 --adversarial-alpha 0" in card["command"]


def test_bad_generators_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="cannot use generator"):
        adversarial_settings({"attack": f"generator:{tmp_path / 'none.safetensors'}"})
    with pytest.raises(ValueError, match="needs a trained generator"):
        adversarial_settings({"attack": "generator"})
    colour = PerturbationGenerator(3, 4, 1, 32)
    path = save_generator(colour, tmp_path / "c.safetensors", {"eps": 0.05, "dataset": "cifar10"})
    with pytest.raises(ValueError, match="3x32x32 images but fashion-mnist images are 1x28x28"):
        _train({"attack": f"generator:{path}"}, "train[:64]")
    with pytest.raises(ValueError, match="trained on mnist images, not fashion-mnist"):
        _train({"attack": "generator:mnist-lenet", "alpha": 0.0}, "train[:64]")
