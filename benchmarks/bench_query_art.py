"""advkit's Square Attack and HopSkipJump against ART's, on the same model, images, eps and query budget.

    python benchmarks/bench_query_art.py --model lenet --n 100 --budget 1000
    python benchmarks/bench_query_art.py --model resnet20 --n 50 --budget 1000 --out benchmarks/results/x.md

Every query either implementation sends goes through one logging wrapper around the model, so both are counted
the same way: each image row the model is asked about is one query, charged to the image it perturbs (nearest
clean image in L-inf for ART's Square; for ART's HopSkipJump, which attacks one image at a time, the image
being attacked; advkit's oracle names the image of each row itself). Success is "a query within eps of the clean
image came back misclassified, within the budget"; the query that found it is the image's query count. (The
script checks that advkit's ``AttackResult.queries`` equals the rows the model saw, and that its success flags
agree with the log.) ART has no per-image query budget: its Square runs ``max_iter = budget`` iterations (and queries
all images, fooled or not, every iteration), its HopSkipJump runs ``--art-hsj-iters`` iterations per image; only
their queries up to the budget count. Printed: success within the budget (Wilson 95%), median and mean queries of
the fooled images, queries sent per image in all, and seconds per image.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import advkit.data
import advkit.models
from advkit.attacks import Oracle, create
from advkit.evaluate.metrics import rate


class QueryLog(nn.Module):
    """Counts and judges every row sent to ``net``: whose image it perturbs, and whether it is adversarial within
    ``eps`` (in ``norm``). ``first[i]`` is the query number of image ``i``'s first such row (0: none yet)."""

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> None:
        super().__init__()
        self.net, self.x, self.y, self.eps, self.norm = net, x, y, eps, norm
        self.num_classes = getattr(net, "num_classes", 10)
        self.count = torch.zeros(len(x), dtype=torch.long)
        self.first = torch.zeros(len(x), dtype=torch.long)
        self.owner: int | None = None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """ART's view: rows reach the model with no owner attached; find it (see the module docstring)."""
        with torch.no_grad():
            out = self.net(rows.float())  # ART sends float64 rows from its HopSkipJump
            if self.owner is not None:
                own = torch.full((len(rows),), self.owner, dtype=torch.long)
            else:
                own = torch.cdist(rows.detach().flatten(1).cpu(), self.x.flatten(1), p=float("inf")).argmin(1)
            self.record(rows, own, out)
        return out

    def record(self, rows: torch.Tensor, own: torch.Tensor, out: torch.Tensor) -> None:
        """Charge ``rows`` to the images ``own`` and note the first adversarial one within eps of each."""
        flat, own = rows.detach().flatten(1).cpu(), own.cpu()
        d = flat - self.x.flatten(1)[own]
        size = d.norm(dim=1) if self.norm == "l2" else d.abs().amax(1)
        won = (out.argmax(1).cpu() != self.y[own]) & (size <= self.eps * (1 + 1e-5) + 1e-6)
        # the query number of each row for its image: rows before it in this call, plus the earlier calls
        nth = torch.nn.functional.one_hot(own, len(self.x)).cumsum(0).gather(1, own[:, None]).squeeze(1)
        nth = nth + self.count[own]
        self.count += torch.bincount(own, minlength=len(self.x))
        for r in won.nonzero().flatten().tolist():
            i = int(own[r])
            if self.first[i] == 0 or nth[r] < self.first[i]:
                self.first[i] = nth[r]


def summarise(log: QueryLog, budget: int, seconds: float) -> dict[str, object]:
    ok = (log.first > 0) & (log.first <= budget)
    q = log.first[ok].double()
    return {"success": rate(ok), "median": float(q.median()) if ok.any() else float("nan"),
            "mean": float(q.mean()) if ok.any() else float("nan"), "sent": float(log.count.double().mean()),
            "s_per_image": seconds / len(log.x)}


def run_advkit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, budget: int, seed: int,
               **kw: object) -> tuple[QueryLog, float]:
    atk = create(name, max_queries=budget, **kw)
    log = QueryLog(net, x, y, atk.eps, atk.norm)
    oracle = Oracle(net, output=atk.oracle_output, on_query=log.record)   # advkit says whose each row is
    t0 = time.perf_counter()
    r = atk(oracle, x, y, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    assert torch.equal(log.count, r.queries), "advkit's query count disagrees with the rows the model saw"
    assert bool(((log.first > 0) == r.success).all()), "advkit's success disagrees with its queries"
    return log, seconds


def art_classifier(log: QueryLog, shape: tuple[int, ...]):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=log, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=log.num_classes,
                             clip_values=(0.0, 1.0), device_type="cpu")


def run_art_square(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, budget: int, p_init: float,
                   seed: int) -> tuple[QueryLog, float]:
    from art.attacks.evasion import SquareAttack

    np.random.seed(seed)
    log = QueryLog(net, x, y, eps, "linf")
    atk = SquareAttack(art_classifier(log, tuple(x.shape[1:])), norm=np.inf, eps=eps, max_iter=budget,
                       p_init=p_init, nb_restarts=1, batch_size=256, verbose=False)
    onehot = np.eye(log.num_classes, dtype=np.float32)[y.numpy()]
    t0 = time.perf_counter()
    atk.generate(x.numpy(), y=onehot)
    return log, time.perf_counter() - t0


def run_art_hsj(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, iters: int,
                seed: int) -> tuple[QueryLog, float]:
    from art.attacks.evasion import HopSkipJump

    np.random.seed(seed)
    log = QueryLog(net, x, y, eps, norm)
    atk = HopSkipJump(art_classifier(log, tuple(x.shape[1:])), targeted=False, norm=2 if norm == "l2" else np.inf,
                      max_iter=iters, max_eval=10_000, init_eval=100, init_size=100, batch_size=256, verbose=False)
    perturb: Callable[..., np.ndarray] = atk._perturb
    calls = iter(range(len(x)))

    def one_image(*a: object, **k: object) -> np.ndarray:  # ART attacks the images one by one, in order
        log.owner = next(calls)
        try:
            return perturb(*a, **k)
        finally:
            log.owner = None

    atk._perturb = one_image  # type: ignore[method-assign]
    onehot = np.eye(log.num_classes, dtype=np.float32)[y.numpy()]
    t0 = time.perf_counter()
    atk.generate(x.numpy(), y=onehot)
    return log, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=100, help="correctly classified test images attacked")
    ap.add_argument("--budget", type=int, default=1000, help="queries per image")
    ap.add_argument("--eps-linf", type=float, default=0.1)
    ap.add_argument("--eps-l2", type=float, default=2.0)
    ap.add_argument("--art-hsj-iters", type=int, default=12, help="ART HopSkipJump iterations (no query budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated rows to skip: square, hsj")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = advkit.models.load(a.model, dataset=a.dataset)
    ds = advkit.data.load(a.dataset, "test", limit=max(4 * a.n, 500))
    with torch.no_grad():
        ok = net(ds.x).argmax(1) == ds.y
    x, y = ds.x[ok][: a.n].contiguous(), ds.y[ok][: a.n].contiguous()
    skip = set(filter(None, a.skip.split(",")))
    rows: list[tuple[str, str, dict[str, object]]] = []

    def add(label: str, impl: str, res: tuple[QueryLog, float]) -> None:
        s = summarise(res[0], a.budget, res[1])
        rows.append((label, impl, s))
        print(f"{label:<34} {impl:<7} success {s['success']}  median {s['median']:.0f}  mean {s['mean']:.1f}  "
              f"sent/image {s['sent']:.1f}  {1000 * s['s_per_image']:.1f} ms/image", flush=True)

    if "square" not in skip:
        for p in (0.05, 0.8):
            label = f"Square L-inf eps={a.eps_linf:g} p_init={p:g}"
            add(label, "advkit", run_advkit(net, x, y, "square", a.budget, a.seed, eps=a.eps_linf, p_init=p))
            add(label, "ART", run_art_square(net, x, y, a.eps_linf, a.budget, p, a.seed))
    if "hsj" not in skip:
        for norm, eps in (("l2", a.eps_l2), ("linf", a.eps_linf)):
            label = f"HopSkipJump {norm} eps={eps:g}"
            add(label, "advkit", run_advkit(net, x, y, "hsj", a.budget, a.seed, eps=eps, norm=norm))
            add(label, "ART", run_art_hsj(net, x, y, eps, norm, a.art_hsj_iters, a.seed))
    head = (f"# Query attacks vs ART: {a.model} on {a.dataset}, {len(y)} correctly classified test images, "
            f"{a.budget} queries per image\n\n"
            f"Command: `python benchmarks/bench_query_art.py --model {a.model} --dataset {a.dataset} --n {a.n} "
            f"--budget {a.budget} --eps-linf {a.eps_linf:g} --eps-l2 {a.eps_l2:g} --art-hsj-iters "
            f"{a.art_hsj_iters} --seed {a.seed}` ({a.threads} threads). Queries counted by one wrapper around the "
            f"model for both; success = a query within eps came back misclassified within the budget.\n\n"
            "| attack | impl | success within budget [95% CI] | median queries (fooled) | mean queries (fooled) "
            "| queries sent / image | ms / image |\n|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {lab} | {impl} | {s['success']} | {s['median']:.0f} | {s['mean']:.1f} | {s['sent']:.1f} | "
                   f"{1000 * s['s_per_image']:.1f} |\n" for lab, impl, s in rows)
    print(head + body)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(head + body)


if __name__ == "__main__":
    main()
