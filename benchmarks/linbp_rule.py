"""LinBP's transfer before and after issue 26's fix, on the issue's own setting.

The issue measured, on 64 Fashion-MNIST test images from resnet20 (eps 0.1, 10 steps, ``linbp+mi``), the fooling
rate on vgg11_bn, densenet_bc40, lenet and resnet56 with the post-addition ReLU linearised (advkit before the fix)
and with the authors' rule (TransferAttack's ``linbp.py`` ported to the zoo's block). This script reruns both rules
with advkit's code: advkit now (the authors' rule) and advkit's ``backprop/linbp.py`` at the commit ``--old`` (every
call of the chosen blocks' ``nn.ReLU`` modules linearised), on the same images.

    python benchmarks/linbp_rule.py --n 64 --threads 1 --old f01e4ca
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import types
from collections.abc import Iterator

import torch

import advkit.attacks as A
import advkit.models as M
from advkit.data import load


def _old_rule(commit: str) -> types.ModuleType:
    """advkit's ``backprop/linbp.py`` at ``commit`` (before the fix), loaded as a module from git."""
    import importlib.util
    import subprocess
    import tempfile
    from pathlib import Path

    text = subprocess.run(["git", "show", f"{commit}:src/advkit/backprop/linbp.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "linbp_old.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("linbp_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["linbp_old"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--subset", default="balanced")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--old", default="f01e4ca", help="a commit before the fix")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = load("fashion-mnist", split="test", limit=args.n, subset=args.subset)
    x, y = ds.x, ds.y
    source = M.load("resnet20")
    targets = ["vgg11_bn", "densenet_bc40", "lenet", "resnet56"]
    models = {t: M.load(t) for t in targets}
    import advkit.backprop.linbp as linbp

    attack = A.create("linbp+mi", eps=args.eps, steps=args.steps)
    now = attack(source, x, y)
    current = linbp.linear_backprop
    old = _old_rule(args.old).linear_backprop

    @contextlib.contextmanager
    def old_rule(*a: object, **k: object) -> Iterator[object]:
        with old(*a, **k) as found:
            found.kept, found.unsplit = 0, ()  # fields the old record lacks
            yield found

    linbp.linear_backprop = old_rule  # type: ignore[assignment]
    try:
        before = attack(source, x, y)
    finally:
        linbp.linear_backprop = current
    print(f"{len(y)} Fashion-MNIST test images ({ds.selection}), resnet20 -> targets, linbp+mi eps {args.eps}, "
          f"{args.steps} steps, {args.threads} thread(s); ReLU calls linearised now {now.info['linbp']['hooks_fired']}"
          f" (kept {now.info['linbp']['kept']}), before {before.info['linbp']['hooks_fired']}\n")
    print("| target | before (every ReLU call) | 95% Wilson | now (authors' rule) | 95% Wilson |")
    print("| --- | --- | --- | --- | --- |")
    for t, m in models.items():
        cells = []
        for r in (before, now):
            with torch.no_grad():
                k = int((m(r.x_adv).argmax(1) != y).sum())
            lo, hi = _wilson(k, len(y))
            cells += [f"{100 * k / len(y):.1f}%", f"{100 * lo:.1f}-{100 * hi:.1f}"]
        print(f"| {t} | " + " | ".join(cells) + " |")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    ph = k / n
    c = (ph + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h

if __name__ == "__main__":
    main()
