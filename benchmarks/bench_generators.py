"""Shipped perturbation generators and universal perturbations, in their own domain and across domains, against
I-FGSM and the noise control.

    python benchmarks/bench_generators.py --n 1000 --out benchmarks/results/generators_zoo.md

For each shipped generator (trained on one dataset against one source) and each dataset (Fashion-MNIST, MNIST):
the first ``n`` test images of the evaluation half (index 5000 on) are perturbed once by the generator (eps from
its card) and sent to every zoo model of that dataset. Beside it, on the same images and eps: I-FGSM (10 steps)
crafted on the generator's source when the dataset is the source's own (a white-box row for the source, a
transfer row for the others), each shipped universal perturbation, and the random-sign noise control at each
generator budget. Success is
untargeted over all images (the prediction differs from the label), with Wilson 95% intervals. One training
seed per generator: the spread over training seeds is not measured here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import advkit.data
import advkit.models
from advkit.attacks import attack_batched, create
from advkit.evaluate.metrics import rate
from advkit.models.generator import read_generator_card, shipped_generators
from advkit.models.universal import load_universal, shipped_universal, universal_path


def fmt(r) -> str:
    return f"{100 * r.value:.1f} [{100 * r.low:.1f}, {100 * r.high:.1f}]"


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--datasets", default="fashion-mnist,mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = ["# Shipped generators and universal perturbations: untargeted success in and across domains (all)\n",
             f"Command: `python benchmarks/bench_generators.py --n {a.n} --datasets {a.datasets}`. Images: test "
             f"index 5000 to {5000 + a.n} of each dataset. One training seed per generator.\n"]
    for ds_name in filter(None, a.datasets.split(",")):
        ds = advkit.data.load(ds_name, "test")
        x, y = ds.x[5000:5000 + a.n], ds.y[5000:5000 + a.n]
        models = {info.name: advkit.models.load(info.name, dataset=ds_name)
                  for info in advkit.models.list(ds_name) if info.path}
        clean = {m: rate(predict(net, x) != y) for m, net in models.items()}
        rows: list[tuple[str, dict[str, str]]] = [("clean (error rate)", {m: f"{100 * r.value:.1f}" for m, r in
                                                                           clean.items()})]
        for gen in shipped_generators():
            card = read_generator_card(advkit.models.generator.generator_path(gen))
            eps = float(card["eps"])
            x_gen = attack_batched(create(f"generator:{gen}"), next(iter(models.values())), x, y).x_adv
            rows.append((f"generator {gen} ({card['dataset']} -> {ds_name})",
                         {m: fmt(rate(predict(net, x_gen) != y)) for m, net in models.items()}))
            src = card["sources"][0]["spec"]
            if card["dataset"] == ds_name and src in models:
                x_i = attack_batched(create("ifgsm", eps=eps, steps=10), models[src], x, y, seed=0).x_adv
                rows.append((f"ifgsm on {src} (eps {eps:g})",
                             {m: fmt(rate(predict(net, x_i) != y)) for m, net in models.items()}))
        for uap in shipped_universal():
            ucard = load_universal(universal_path(uap))[1]
            x_u = attack_batched(create(f"uap:{uap}"), next(iter(models.values())), x, y).x_adv
            rows.append((f"uap {uap} ({ucard['dataset']} -> {ds_name}, eps {ucard['eps']:g})",
                         {m: fmt(rate(predict(net, x_u) != y)) for m, net in models.items()}))
        budgets = sorted({float(read_generator_card(advkit.models.generator.generator_path(g))["eps"])
                          for g in shipped_generators()})
        for eps_noise in budgets:
            x_n = attack_batched(create("noise", eps=eps_noise), next(iter(models.values())), x, y, seed=0).x_adv
            rows.append((f"noise (eps {eps_noise:g})",
                         {m: fmt(rate(predict(net, x_n) != y)) for m, net in models.items()}))
        names = list(models)
        lines.append(f"## {ds_name}: {len(y)} images\n")
        lines.append("| row | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for label, vals in rows:
            lines.append(f"| {label} | " + " | ".join(vals[m] for m in names) + " |")
        lines.append("")
        print("\n".join(lines[-(len(rows) + 4):]), flush=True)
    text = "\n".join(lines) + "\n"
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
