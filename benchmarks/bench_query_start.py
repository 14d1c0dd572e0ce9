"""Transfer meets query: how many queries a surrogate's transfer example saves a query attack.

    python benchmarks/bench_query_start.py --target vgg11_bn --surrogate resnet20 --n 200 --budget 1000 --eps 0.1

For each query attack, the same images are attacked three ways: from the attack's own initialisation, and from a
transfer example crafted white-box on the surrogate with MI and with SGM+MI (same eps, 10 steps). The start costs
no target query to craft; checking it is the query attack's first query. Printed per row: the share the start
alone already fools (1 query), success within the budget (Wilson 95%), median queries over fooled images, mean
queries per image over all (the run's cost; failures count what they spent), and the paired mean difference in
queries per image against the attack's own start, with its 95% t-interval (scipy). Images are correctly
classified test images from the evaluation half (index 5000 on) of the test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from scipy import stats

import advkit.data
import advkit.models
from advkit.attacks import attack_batched, create
from advkit.evaluate.metrics import rate


def paired(diff: torch.Tensor) -> tuple[float, float, float]:
    """Mean of ``diff`` and its 95% t-interval."""
    d = diff.double()
    m = float(d.mean())
    if d.numel() < 2 or float(d.std()) == 0:
        return m, m, m
    half = float(stats.t.ppf(0.975, d.numel() - 1)) * float(d.std()) / d.numel() ** 0.5
    return m, m - half, m + half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="vgg11_bn")
    ap.add_argument("--surrogate", default="resnet20")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1, help="L-inf budget of every attack")
    ap.add_argument("--attacks", default="square,nes,hsj")
    ap.add_argument("--starts", default="mi,sgm+mi")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    target = advkit.models.load(a.target, dataset=a.dataset)
    surrogate = advkit.models.load(a.surrogate, dataset=a.dataset)
    ds = advkit.data.load(a.dataset, "test")
    x, y = ds.x[5000:5000 + 3 * a.n], ds.y[5000:5000 + 3 * a.n]
    with torch.no_grad():
        ok = torch.cat([target(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]) == y
    x, y = x[ok][: a.n].contiguous(), y[ok][: a.n].contiguous()
    starts: dict[str, torch.Tensor | None] = {"own": None}
    for s in filter(None, a.starts.split(",")):
        starts[s] = attack_batched(create(s, eps=a.eps, steps=10), surrogate, x, y, batch_size=250, seed=a.seed).x_adv
    lines = [f"# Transfer start for query attacks: {a.target} attacked, starts crafted on {a.surrogate} "
             f"({a.dataset}, {len(y)} images, L-inf eps {a.eps:g}, {a.budget} queries per image)\n",
             f"Command: `python benchmarks/bench_query_start.py --target {a.target} --surrogate {a.surrogate} "
             f"--dataset {a.dataset} --n {a.n} --budget {a.budget} --eps {a.eps:g} --attacks {a.attacks} "
             f"--starts {a.starts} --seed {a.seed}`\n",
             "| attack | start | start alone fools | success within budget [95% CI] | median queries (fooled) | "
             "mean queries / image | queries saved / image vs own start [95% CI] | s |",
             "|---|---|---|---|---|---|---|---|"]
    for name in filter(None, a.attacks.split(",")):
        base_q = None
        for label, x0 in starts.items():
            atk = create(name, eps=a.eps, norm="linf", max_queries=a.budget)
            t0 = time.perf_counter()
            r = attack_batched(atk, target, x, y, batch_size=250, seed=a.seed, start=x0)
            sec = time.perf_counter() - t0
            q = r.queries
            assert q is not None
            first = rate(r.success & (q == 1)) if x0 is not None else None
            med = float(q[r.success].double().median()) if r.success.any() else float("nan")
            if base_q is None:
                base_q, saved = q, "-"
            else:
                m, lo, hi = paired(base_q - q)
                saved = f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"
            row = (f"| {name} | {label if x0 is None else label + ' on ' + a.surrogate} | "
                   f"{'-' if first is None else f'{100 * first.value:.1f}%'} | {rate(r.success)} | {med:.0f} | "
                   f"{float(q.double().mean()):.1f} | {saved} | {sec:.0f} |")
            print(row, flush=True)
            lines.append(row)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
