"""Cost of an ensemble attack over the sum of its members' bare passes (issue 25, target ratio <= 1.05).

For an ensemble of zoo models (default resnet20 + vgg11_bn + densenet_bc40 on Fashion-MNIST) and each fuse
(``logits``, ``loss``): time T_attack of ``ifgsm`` with ``--steps`` iterations on one batch, and time T_bare of
``--steps`` rounds of, for each member on its own, one forward pass and one ``torch.autograd.grad`` of its summed
cross-entropy with respect to the input. Attack and bare runs alternate over ``--repeats`` rounds; the medians are
compared. The attack also runs the public contract's one success check (a no-grad forward of the ensemble) after
its loop; ``ratio+check`` adds one bare no-grad forward of every member to T_bare to show that share. Images are
random pixels (timing does not depend on them); torch runs on one thread (``torch.set_num_threads(1)``) unless
``--threads`` says otherwise.

    python benchmarks/bench_ensemble_cost.py --steps 4 --repeats 3 --out benchmarks/results/ensemble_cost.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import advkit.attacks as A
from advkit.data import get_spec
from advkit.models import ensemble, load


def bare_passes(members: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """``steps`` rounds of one forward + input-gradient pass per member, each member on its own."""
    for _ in range(steps):
        for m in members:
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(m(xr), y, reduction="sum"), xr)


def bare_check(members: list[torch.nn.Module], x: torch.Tensor) -> None:
    """One no-grad forward per member: what the attack's success check costs."""
    with torch.no_grad():
        for m in members:
            m(x)


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", default="resnet20,vgg11_bn,densenet_bc40")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fuses", default="logits,loss")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_spec(args.dataset)
    members = [load(n, dataset=args.dataset) for n in args.members.split(",")]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, *spec.shape, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    bare_passes(members, x, y, 1)  # warm-up
    head = (f"members {args.members} ({args.dataset}), batch {args.batch}, ifgsm {args.steps} steps, "
            f"{args.repeats} interleaved repeats (medians), torch.set_num_threads({torch.get_num_threads()}), "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(head)
    rows = []
    for fuse in args.fuses.split(","):
        model = ensemble(members, fuse=fuse)
        attack = A.create("ifgsm", eps=16 / 255, steps=args.steps)
        attack(model, x, y, generator=torch.Generator().manual_seed(0))  # warm-up
        ta, tb, tc = [], [], []
        for _ in range(args.repeats):
            ta.append(timed(lambda: attack(model, x, y, generator=torch.Generator().manual_seed(0))))  # noqa: B023
            tb.append(timed(lambda: bare_passes(members, x, y, args.steps)))
            tc.append(timed(lambda: bare_check(members, x)))
        a, b, c = statistics.median(ta), statistics.median(tb), statistics.median(tc)
        rows.append((fuse, a, b, c, a / b, a / (b + c)))
        print(f"fuse {fuse:<7} attack {a:7.3f} s  bare {b:7.3f} s  check {c:6.3f} s  ratio {a / b:.3f}  "
              f"ratio+check {a / (b + c):.3f}  (target <= 1.05)")
    if args.out is not None:
        lines = ["# Ensemble attack cost vs its members' bare passes (issue 25)", "",
                 f"`python benchmarks/bench_ensemble_cost.py --batch {args.batch} --steps {args.steps} "
                 f"--repeats {args.repeats} --threads {args.threads}`", "", head + ".", "",
                 "ratio = T(ifgsm on the ensemble) / T(sum over members of forward + input gradient, per step); "
                 "ratio+check also counts in T_bare one no-grad forward per member (the attack's success check). "
                 "Target: ratio <= 1.05.", "",
                 "| fuse | attack s | bare s | check s | ratio | ratio+check |", "|---|---|---|---|---|---|"]
        lines += [f"| {f} | {a:.3f} | {b:.3f} | {c:.3f} | {r:.3f} | {rc:.3f} |" for f, a, b, c, r, rc in rows]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
