"""Transfer benchmark on the Fashion-MNIST zoo (the SGM tables), run by the study runner (``run_study``).

I-FGSM, MI, DI, TI, SGM (formula and original variants, several gammas), SGM with MI / DI and the engine's newer
parts, from each residual or dense source, against every shipped model. This script only turns its flags into an
experiment config and prints the tables in the benchmark's format; crafting, evaluation, resuming and the records
are ``advkit transfer``'s (``run_study``), so one runner produces every table.

Images: the test split is cut in two. Indices 0-4999 are the *held-out* half used to choose defaults
(``--split heldout``); indices 5000-9999 are the *evaluation* half (``--split eval``). From the images of a half
that every model involved classifies correctly, each seed draws ``--n`` images with
``torch.randperm(pool, generator=manual_seed(seed))`` (``sample: {pool: all, range: ..., draw: seed}``), so success
over all images equals success over clean-correct ones. Per (source, attack, target): mean success over seeds with
a 95% t-interval over seeds, and the paired difference to I-FGSM on the same images averaged over the targets
(the study's ``paired_mean`` table).

``noise`` is the control, the registered ``noise`` attack: random signs of the same budget; transfer above it is
what the gradient adds to the targets' generic fragility.

Before the port (session 2) this script had its own loop; the deterministic attacks (I-FGSM, MI, TI, SGM and their
combinations without DI) give the same examples through ``run_study``. The randomised ones (DI, noise) now draw
from one generator per batch (``batch_seed``) instead of one stream per cell, so their figures are the same
protocol with other random draws.

    python benchmarks/bench_transfer.py --sources resnet20 --eps 0.1 --n 1000 --seeds 0,1,2 --out runs/transfer
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from advkit.models import list as list_models
from advkit.study import run_study

# name -> (grammar name, settings). TI's kernel is scaled to 28 px images (the paper's 15 is for 299 px).
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "noise": ("noise", {}),
    "ifgsm": ("ifgsm", {}),
    "mi": ("mi", {}),
    "di": ("di", {}),
    "ti": ("ti", {"ti_kernel": 5}),
    **{f"sgm-{v[0]}{g}": ("sgm", {"gamma": g, "sgm_variant": v}) for v in ("formula", "original")
       for g in (0.2, 0.5, 0.8)},
    "sgm+mi": ("sgm+mi", {}),
    "sgm+di": ("sgm+di", {}),
    "sgm+mi+di": ("sgm+mi+di", {}),
    "ni": ("ni", {}),
    "si-ni": ("ni+si", {}),
    "vmi": ("vmi", {}),
    "vni": ("vni", {}),
    "admix-mi": ("admix+mi", {}),
    "linbp": ("linbp", {}),
    "linbp+mi": ("linbp+mi", {}),
    "ifgsm+ila": ("ila", {}),
}


def study_config(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment config the flags describe."""
    shipped = {m.name: m for m in list_models("fashion-mnist") if m.dataset == "fashion-mnist"}
    sources = args.sources.split(",") if args.sources else [n for n, m in shipped.items()
                                                             if m.connections in ("residual", "dense")]
    targets = args.targets.split(",") if args.targets else list(shipped)
    attacks = []
    for name in args.attacks.split(","):
        grammar, settings = CONFIGS[name]
        if grammar.startswith("sgm") and "gamma" not in settings and args.gamma is not None:
            settings = {**settings, "gamma": args.gamma}
        attacks.append({"name": grammar, "label": name, "settings": dict(settings)})
    labels = [a["label"] for a in attacks]
    return {
        "title": f"Transfer benchmark ({args.split} half)", "dataset": "fashion-mnist", "sources": sources,
        "targets": targets, "attacks": attacks, "eps": [args.eps], "steps": args.steps,
        "seeds": [int(s) for s in args.seeds.split(",")],
        "sample": {"n": args.n, "pool": "all", "range": [0, 5000] if args.split == "heldout" else [5000, 10000],
                   "order": "first", "draw": "seed", "only_correct": True},
        "baseline": [b for b in ("ifgsm", "mi") if b in labels] or labels[0], "batch_size": args.batch,
        "save_png": 0,
    }


def summary(records: dict[str, Any], baseline: str = "ifgsm") -> None:
    """Print one markdown table per source in the benchmark's format."""
    meta = records["meta"]
    rows = [r for r in records["summary"] if r["images"] == "float" and r["over"] == "all"]
    diffs = {(r["source"], r["attack"], r["eps"]): r for r in records.get("paired_mean", [])
             if r["baseline"] == baseline}
    for src in meta["sources"]:
        for eps in meta["eps"]:
            mine = [r for r in rows if r["source"] == src and r["eps"] == eps]
            targets = sorted({r["target"] for r in mine if not r["white_box"]})
            print(f"\n## source {src}, eps {eps}, {meta['n']} images per seed, {len(meta['seeds'])} seeds: transfer "
                  "success % (mean over seeds [95% t-interval])")
            print("| attack | white-box | " + " | ".join(targets) + f" | mean | paired diff vs {baseline} |")
            print("|---" * (len(targets) + 4) + "|")
            for atk in meta["attacks"]:
                by_t = {r["target"]: r for r in mine if r["attack"] == atk and not r["white_box"]}
                wb = [r for r in mine if r["attack"] == atk and r["white_box"]]
                if not by_t:
                    continue
                cells = []
                for t in targets:
                    r = by_t[t]
                    cells.append(f"{100 * r['mean']:.1f}" if r["t_low"] is None else
                                 f"{100 * r['mean']:.1f} [{100 * r['t_low']:.1f}, {100 * r['t_high']:.1f}]")
                mean = statistics.fmean(by_t[t]["mean"] for t in targets)
                d = diffs.get((src, atk, eps))
                dtxt = "+0.0" if atk == baseline else "-" if d is None else (
                    f"{100 * d['difference_mean']:+.1f}" if d["t_low"] is None else
                    f"{100 * d['difference_mean']:+.1f} [{100 * d['t_low']:+.1f}, {100 * d['t_high']:+.1f}]")
                w = f"{100 * wb[0]['mean']:.1f}" if wb else "-"
                print(f"| {atk} | {w} | " + " | ".join(cells) + f" | {100 * mean:.1f} | {dtxt} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", default="")
    ap.add_argument("--targets", default="")
    ap.add_argument("--attacks", default="noise,ifgsm,mi,di,ti,sgm-f0.2,sgm-f0.5,sgm-f0.8,sgm-o0.2,sgm-o0.5,sgm-o0.8,"
                                         "sgm+mi,sgm+di")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=None, help="gamma for sgm+mi / sgm+di (default: the card's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--split", choices=["heldout", "eval"], default="eval")
    ap.add_argument("--out", default="runs/bench_transfer", help="run directory (resumable, as advkit transfer's)")
    ap.add_argument("--summary", action="store_true", help="only print the tables of the finished run in --out")
    args = ap.parse_args()
    out = Path(args.out[:-len(".jsonl")] if args.out.endswith(".jsonl") else args.out)
    if args.summary:
        import json

        records = json.loads((out / "results.json").read_text())
    else:
        records = run_study(study_config(args), out, command="python benchmarks/bench_transfer.py").records
    summary(records)


if __name__ == "__main__":
    main()
