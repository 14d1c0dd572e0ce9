"""The LeNet training study behind the JSMA reproduction (benchmarks/results/jsma_lenet_recipes.md).

JSMA's distortion is a property of the trained network, so this script trains LeNet variants on full MNIST and
screens each on held-out test images: 300 images from index 5000 on, skipping the 1,000 that
``advkit reproduce jsma --samples 1000`` reports on, each attacked towards its 9 other classes.

    python scripts/jsma_lenet_recipes.py train VARIANT --seed S --epochs E --out DIR
    python scripts/jsma_lenet_recipes.py screen CKPT.safetensors [--start 5000 --n 300]

Variants: ``one-cycle`` (the shipped recipe: SGD lr 0.1, Nesterov momentum 0.5, no weight decay, no augmentation,
one-cycle schedule, bf16 autocast), ``constant`` (the paper's: constant lr 0.1, plain momentum 0.5, float32; writes
snapshots after epochs 5, 10, 15, 20, 25, 30, 40, 50, each equal to an ``advkit train --schedule constant`` run of
that length), ``no-dropout``, ``dropout-both`` (0.5 after both hidden fully connected layers) and ``no-standardise``
(inputs fed in [0, 1] without MNIST's mean/std). The last three are one-cycle runs of patched architectures,
for this study only; the zoo's LeNet is unchanged. Needs the full MNIST IDX files (see README, Data).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

import advkit.models.zoo.simple as simple
import advkit.train.loop as T
from advkit.data import load
from advkit.models import zoo_path
from advkit.models.checkpoint import load_checkpoint, save_checkpoint
from advkit.reproduce.jsma import _select, reproduce_jsma

SNAPSHOTS = {5, 10, 15, 20, 25, 30, 40, 50}
VARIANTS = ("one-cycle", "constant", "no-dropout", "dropout-both", "no-standardise")


def _patch(variant: str) -> None:
    init = simple.LeNet.__init__

    def patched(self: simple.LeNet, *a: object, **k: object) -> None:
        init(self, *a, **k)
        if variant == "no-dropout":
            self.classifier[3] = nn.Identity()
        elif variant == "dropout-both":  # parameter-free, so the state-dict keys stay those of the zoo's LeNet
            self.classifier[5] = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(0.5))

    simple.LeNet.__init__ = patched  # type: ignore[method-assign]
    if variant == "no-standardise":
        spec = T.get_spec
        T.get_spec = lambda name: dataclasses.replace(spec(name), mean=(0.0,), std=(1.0,))  # type: ignore


def train(variant: str, seed: int, epochs: int, out: Path) -> None:
    constant = variant == "constant"
    recipe = T.Recipe(epochs=epochs, lr=0.1, momentum=0.5, weight_decay=0.0, augment=False, batch_size=128,
                      schedule="constant" if constant else "one-cycle", nesterov=not constant, bf16=not constant)
    _patch(variant)
    tr, te = load("mnist", "train"), load("mnist", "test")
    tag = f"{variant}_s{seed}"
    t0 = time.time()

    def snapshot(done: int, model: T.Classifier) -> None:
        if not constant or done not in SNAPSHOTS or done == epochs:
            return
        m = copy.deepcopy(model).freeze()
        short = dataclasses.replace(recipe, epochs=done)
        card = {"name": "lenet", "arch": "lenet", "dataset": "mnist", "epochs": done, "seed": seed,
                "test_accuracy": round(T.accuracy(m, te.x, te.y), 4), "train_seconds": round(time.time() - t0, 1),
                "recipe": {**dataclasses.asdict(short), **T.card_recipe_notes(short)},
                "command": T.train_command("lenet", "mnist", short, seed)}
        save_checkpoint(m, out / f"{tag}_e{done}.safetensors", {**_template(), **card})
        print(f"{tag} epoch {done}: test accuracy {card['test_accuracy']:.4f}", flush=True)

    _, card = T.train("lenet", "mnist", recipe=recipe, seed=seed, out=out / f"{tag}_e{epochs}.safetensors",
                      name="lenet", train_data=tr, test_data=te, on_epoch=snapshot,
                      command=T.train_command("lenet", "mnist", recipe, seed) + f"  # study variant {variant}")
    print(f"{tag} epoch {epochs}: test accuracy {card['test_accuracy']:.4f}", flush=True)


def _template() -> dict:
    card = json.loads(zoo_path("lenet", "mnist").with_suffix(".json").read_text())
    return {k: v for k, v in card.items() if k not in ("sha256", "weights")}


def screen(ckpt: Path, start: int, n: int) -> None:
    te = load("mnist", "test")
    reported = set(_select(len(te), 1000).tolist())
    idx = torch.tensor([i for i in range(start, len(te)) if i not in reported][:n])
    model = load_checkpoint(ckpt)
    s = reproduce_jsma(model, (te.x[idx], te.y[idx])).summary
    print(f"{ckpt.name}: test accuracy {model.card['test_accuracy']}, success {100 * s['success_rate']:.2f}%, "
          f"features modified {100 * s['distortion_successful']:.2f}% (successful) "
          f"{100 * s['distortion_all']:.2f}% (all), {s['n_attacks']} attacks", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("variant", choices=VARIANTS)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("screen")
    s.add_argument("ckpt", type=Path)
    s.add_argument("--start", type=int, default=5000)
    s.add_argument("--n", type=int, default=300)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "train":
        a.out.mkdir(parents=True, exist_ok=True)
        train(a.variant, a.seed, a.epochs, a.out)
    else:
        screen(a.ckpt, a.start, a.n)


if __name__ == "__main__":
    main()
