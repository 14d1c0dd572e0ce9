"""Re-measure the robust figures of the zoo's adversarially trained models with AutoAttack (issue 27).

Each shipped model whose card states a ``robust_test_accuracy`` (PGD-20 at its training eps, 1,000 class-balanced
test images) gets an ``autoattack_test_accuracy`` entry next to it: :func:`advkit.evaluate.robust_accuracy` on
the same images and eps, with the version (``--version``, default ``fast``: APGD-CE and APGD-T; ``standard`` adds
FAB-T and Square) and the per-attack counts. The card's weights hash covers the weights file only, so the card
can gain the entry without touching the weights. A table goes to ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/card_robust.py --threads 1 --version fast \\
        --out benchmarks/results/card_robust.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import advkit.data
import advkit.models
from advkit.evaluate.robust import robust_accuracy

CARDS = ("fashion-mnist/lenet_pgd", "mnist/lenet_pgd", "fashion-mnist/resnet20_ensadv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(CARDS))
    ap.add_argument("--version", default="fast", choices=("fast", "standard"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-cards", action="store_true", help="add the entry to each shipped card")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = ["# AutoAttack robust accuracy of the zoo's robust models", "", f"`{' '.join(sys.argv)}`", "",
             f"torch {torch.__version__}, {a.threads} thread(s), 2 shared CPU cores; the images and eps of each "
             f"card's PGD-20 figure (1,000 class-balanced test images, seed 0).", "",
             "| model | eps | PGD-20 (card) | AutoAttack robust accuracy [95% CI] | version | broken per attack | "
             "seconds |", "|---|---|---|---|---|---|---|"]
    for spec in a.models.split(","):
        dataset, _, name = spec.partition("/")
        card_path = advkit.models.zoo_path(name, dataset).with_suffix(".json")
        card = json.loads(card_path.read_text())
        pgd = card["robust_test_accuracy"]
        model = advkit.models.load(name, dataset=dataset).eval()
        ds = advkit.data.load(dataset, "test", limit=int(pgd["n"]))
        t0 = time.perf_counter()
        rep = robust_accuracy(model, ds.x, ds.y, eps=float(pgd["eps"]), version=a.version)
        seconds = time.perf_counter() - t0
        print(f"== {spec}\n{rep.table()}")
        lo, hi = rep.interval
        broken = ", ".join(f"{r.attack} {r.broken}" for r in rep.rows)
        lines.append(f"| {spec} | {pgd['eps']:g} | {100 * pgd['accuracy']:.1f}% | {100 * rep.accuracy:.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {a.version} | {broken} | {seconds:.0f} |")
        if a.write_cards:
            card["autoattack_test_accuracy"] = {
                "accuracy": rep.accuracy, "correct": rep.robust, "n": rep.n, "eps": float(pgd["eps"]),
                "norm": "linf", "version": a.version, "images": pgd["images"], "ci95": [lo, hi],
                "broken_by": {r.attack: r.broken for r in rep.rows}, "clean_correct": rep.clean}
            card_path.write_text(json.dumps(card, indent=2) + "\n")
        if a.out:
            Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
