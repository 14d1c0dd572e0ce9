"""The depth table from a finished ``bench_transfer.py`` run with ResNet sources of several depths.

Each source's figures are averaged over the targets *every* source has in common (a source is not its own target,
so resnet20's and resnet56's columns are dropped for all), per seed, then summarised over seeds with a 95%
Student-t interval; the paired difference to I-FGSM is taken per seed on the same images before averaging.

    python benchmarks/depth_summary.py runs/depth-eval
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy import stats


def t_interval(values: list[float]) -> tuple[float, float, float]:
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return m, m - half, m + half


def main(run: Path) -> None:
    rec = json.loads((run / "results.json").read_text())
    rows = [r for r in rec["success"] if r["images"] == "float" and r["over"] == "all"]
    sources = rec["meta"]["sources"]
    targets = set.intersection(*({r["target"] for r in rows if r["source"] == s and not r["white_box"]}
                                 for s in sources))
    rate: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    white: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["white_box"]:
            white[(r["source"], r["attack"])].append(r["rate"])
        elif r["target"] in targets:
            rate[(r["source"], r["attack"], r["seed"])].append(r["rate"])
    attacks = rec["meta"]["attacks"]
    seeds = sorted({k[2] for k in rate})
    print(f"Targets common to every source ({len(targets)}): {', '.join(sorted(targets))}; "
          f"{rec['meta']['n']} images x {len(seeds)} seeds, eps {rec['meta']['eps'][0]}.\n")
    print("| source | " + " | ".join(f"{a}: white-box / transfer" if a == "ifgsm" else f"{a} - ifgsm"
                                      for a in attacks) + " |")
    print("|---" * (len(attacks) + 1) + "|")
    for s in sources:
        cells = []
        base = [statistics.fmean(rate[(s, "ifgsm", sd)]) for sd in seeds]
        for a in attacks:
            per_seed = [statistics.fmean(rate[(s, a, sd)]) for sd in seeds]
            if a == "ifgsm":
                m, lo, hi = t_interval(per_seed)
                cells.append(f"{100 * statistics.fmean(white[(s, a)]):.1f} / {100 * m:.1f} [{100 * lo:.1f}, "
                             f"{100 * hi:.1f}]")
            else:
                m, lo, hi = t_interval([x - b for x, b in zip(per_seed, base, strict=True)])
                cells.append(f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] (white-box "
                             f"{100 * statistics.fmean(white[(s, a)]):.1f})")
        print(f"| {Path(s).stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
