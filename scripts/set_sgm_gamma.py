"""Record the SGM decay chosen on held-out images in zoo model cards (``sgm_gamma``), used by gamma="auto".

The choice comes from benchmarks/bench_transfer.py on the held-out half of the test split (images 0-4999), never
on the evaluation half. Usage: python scripts/set_sgm_gamma.py NAME=GAMMA ... --note "how it was chosen"
"""

from __future__ import annotations

import argparse
import json

from advkit.models import zoo_path
from advkit.report.accuracy import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="+", help="NAME=GAMMA")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--note", required=True)
    args = ap.parse_args()
    for pair in args.pairs:
        name, gamma = pair.split("=")
        card_path = zoo_path(name, args.dataset).with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["sgm_gamma"] = float(gamma)
        card["sgm_gamma_note"] = args.note
        atomic_write_text(card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
        print(f"{name}: sgm_gamma = {gamma}")


if __name__ == "__main__":
    main()
