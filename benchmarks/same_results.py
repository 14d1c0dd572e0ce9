"""Do two checkouts of advkit compute the same adversarial examples? A redesign's check that no result changed.

    python benchmarks/same_results.py --old /tmp/old-checkout          # every registered attack, old vs this one
    python benchmarks/same_results.py --old DIR --n 32 --out benchmarks/results/same_results_issue24.md

Each checkout runs, in its own process (``PYTHONPATH=CHECKOUT/src``), every attack name the registry lists
(every part, macro, listed combination and standalone attack, and each attack with a choice of norm in its other
norm too; query attacks with a 200-query budget) on the same
``n`` Fashion-MNIST test images against the zoo's resnet20 (the generator and UAP attacks: the shipped ones),
seeded by ``attack_batched(seed=0)``. Printed per attack: the SHA-256 of the adversarial batch's bytes and of the
success flags, and whether old and new agree bit for bit. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_WORKER = r'''
import hashlib, json, sys
import torch
torch.set_num_threads(1)
import advkit.attacks as A, advkit.data, advkit.models
n = int(sys.argv[1])
data = advkit.data.load("fashion-mnist", split="test", limit=n)
model = advkit.models.load("resnet20", dataset="fashion-mnist")
names = [n for n in A.names() if not (n in A.standalone() and A.standalone()[n].takes_path)]
names += ["generator:fashion-mnist-resnet20", "uap:fashion-mnist-lenet"]  # the shipped artefacts
OTHER_NORM = {"l2": {"norm": "l2", "eps": 1.0}, "linf": {"norm": "linf", "eps": 0.1}}
for name in ["pgd", "noise", *A.query_attacks()]:  # each attack with a norm of choice, in its other norm too
    default = A.budget_norm(name)
    names.append(name + " norm=" + ("linf" if default == "l2" else "l2"))
out = {}
for entry in names:
    name, _, other = entry.partition(" norm=")
    key = name.split(":")[0]
    kw = dict(OTHER_NORM[other]) if other else {}
    if key in A.standalone() and A.standalone()[key].black_box:
        kw["max_queries"] = 200
    if key == "jsma":
        kw["upsilon"] = 0.05
    try:
        atk = A.create(name, **kw)
        y_t = (data.y + 1) % 10 if getattr(atk, "targeted_only", False) else None
        r = A.attack_batched(atk, model, data.x, data.y, target=y_t, batch_size=n, seed=0)
        out[entry] = [hashlib.sha256(r.x_adv.numpy().tobytes()).hexdigest()[:16],
                     hashlib.sha256(r.success.numpy().tobytes()).hexdigest()[:16], float(r.success_rate)]
    except Exception as e:  # a name one checkout lacks is reported, not fatal
        out[entry] = ["error", f"{type(e).__name__}: {str(e)[:80]}", None]
print(json.dumps(out))
'''


def run(checkout: Path, n: int) -> dict[str, list[object]]:
    """The attack hashes computed by the advkit in ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(n)], env=env, capture_output=True, text=True,
                          check=True, cwd=checkout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the other checkout (e.g. a git worktree of main)")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    old, new = run(a.old, a.n), run(a.new, a.n)
    rows = ["| attack | x_adv sha256 (old) | new | success (old / new) | same |", "|---|---|---|---|---|"]
    same = 0
    for name in sorted(set(old) | set(new)):
        o, w = old.get(name, ["missing", "", None]), new.get(name, ["missing", "", None])
        eq = o[:2] == w[:2] and o[0] not in ("error", "missing")
        same += eq
        rows.append(f"| {name} | {o[0]} | {w[0]} | {o[2]} / {w[2]} | {'yes' if eq else 'NO'} |")
    rows.append(f"\n{same} of {len(set(old) | set(new))} attacks bit-identical ({a.n} images, resnet20, seed 0, "
                f"one torch thread; old: {a.old}, new: {a.new}).")
    text = "\n".join(rows)
    print(text)
    if a.out:
        cmd = f"python benchmarks/same_results.py --old OLD --n {a.n}"
        a.out.write_text(f"# Same results across the redesign\n\n`{cmd}`\n\n{text}\n")


if __name__ == "__main__":
    main()
