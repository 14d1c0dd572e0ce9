"""Train the shipped model zoo into src/advkit/models/weights/DATASET/NAME.safetensors (+ .json card).

Resumable: a model whose checkpoint exists is skipped. Each card records the `advkit train` command that
reproduces it. Usage: python scripts/train_zoo.py [NAME ...]
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

from advkit.data import load
from advkit.train import Recipe, train

ROOT = Path(__file__).resolve().parents[1] / "src" / "advkit" / "models" / "weights"

# (name, arch, dataset, recipe overrides), in the order they are trained.
ZOO: list[tuple[str, str, str, dict]] = [
    ("linear", "linear", "fashion-mnist", {"epochs": 5, "lr": 0.05, "augment": False}),
    ("maxout", "maxout", "fashion-mnist", {"epochs": 10, "lr": 0.05, "augment": False}),
    ("mlp", "mlp", "fashion-mnist", {"epochs": 10, "lr": 0.05}),
    ("lenet", "lenet", "fashion-mnist", {"epochs": 8, "lr": 0.05}),
    ("lenet", "lenet", "mnist", {"epochs": 40, "lr": 0.05}),
    ("resnet20", "resnet20", "fashion-mnist", {"epochs": 6}),
    ("vgg11_bn", "vgg11_bn", "fashion-mnist", {"epochs": 3, "lr": 0.05}),
    ("resnet56", "resnet56", "fashion-mnist", {"epochs": 5}),
    ("densenet_bc40", "densenet_bc40", "fashion-mnist", {"epochs": 5}),
    ("preact_resnet20", "preact_resnet20", "fashion-mnist", {"epochs": 6}),
    ("se_resnet20", "se_resnet20", "fashion-mnist", {"epochs": 4}),
    ("wrn16_2", "wrn16_2", "fashion-mnist", {"epochs": 3}),
    ("inception_resnet", "inception_resnet", "fashion-mnist", {"epochs": 8}),
    ("resnet110", "resnet110", "fashion-mnist", {"epochs": 5}),
    ("mobilenet_v2", "mobilenet_v2", "fashion-mnist", {"epochs": 5}),
    ("resnet29_bottleneck", "resnet29_bottleneck", "fashion-mnist", {"epochs": 6}),
    ("inception", "inception", "fashion-mnist", {"epochs": 5}),
]


def command_for(arch: str, dataset: str, r: Recipe, seed: int, name: str | None = None) -> str:
    cmd = (f"advkit train {arch} --dataset {dataset} --epochs {r.epochs} --lr {r.lr} --batch-size {r.batch_size} "
           f"--seed {seed}")
    if not r.augment:
        cmd += " --no-augment"
    return cmd + f" --out src/advkit/models/weights/{dataset}/{name or arch}.safetensors"


def main(only: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(int(os.environ.get("ADVKIT_TRAIN_THREADS", "1")))
    cache = {}
    for name, arch, dataset, over in ZOO:
        if only and name not in only and f"{dataset}/{name}" not in only:
            continue
        out = ROOT / dataset / f"{name}.safetensors"
        if out.exists():
            logging.info("skip %s (exists)", out)
            continue
        if dataset not in cache:
            cache[dataset] = (load(dataset, "train"), load(dataset, "test"))
        tr, te = cache[dataset]
        r = Recipe(**over)
        t = time.time()
        _, card = train(arch, dataset, recipe=r, seed=0, out=out, name=name, train_data=tr, test_data=te,
                        command=command_for(arch, dataset, r, 0, name))
        logging.info("TRAINED %s/%s acc=%.4f in %.0fs", dataset, name, card["test_accuracy"], time.time() - t)


if __name__ == "__main__":
    main(sys.argv[1:])
