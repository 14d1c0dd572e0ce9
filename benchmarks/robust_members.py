"""Clean and PGD-20 robust accuracy of zoo models on the same 1,000 class-balanced test images.

    python benchmarks/robust_members.py fashion-mnist 0.1 lenet lenet_pgd maxout_advtrain
    python benchmarks/robust_members.py mnist 0.3 lenet lenet_pgd --strong

``--strong`` adds the checks for gradient masking of the last model: PGD-100 from 5 random restarts (an image
counts as robust only if no restart fools it), and PGD-20 examples crafted on the first model (the plain twin)
and transferred; a masked model would resist its own gradients better than a transfer attack.
"""
import json
import sys

import advkit.data
import advkit.models
from advkit.attacks import attack_batched, create
from advkit.data import subset_indices
from advkit.evaluate import wilson_interval
from advkit.train.adversarial import robust_accuracy

args = [a for a in sys.argv[1:] if not a.startswith("--")]
strong = "--strong" in sys.argv
ds, eps = args[0], float(args[1])
te = advkit.data.load(ds, "test", download_ok=False)
sub = subset_indices(len(te), 1000, labels=te.y.numpy())
x, y = te.x[sub], te.y[sub]
models = {name: advkit.models.load(name, dataset=ds) for name in args[2:]}
for name, m in models.items():
    clean = (m(x).argmax(1) == y).float().mean().item()
    r = robust_accuracy(m, x, y, eps, steps=20)
    print(json.dumps({"dataset": ds, "model": name, "eps": eps, "clean_1000": clean, **r,
                      "ci95": wilson_interval(r["correct"], r["n"])}))
if strong:
    names = list(models)
    twin, robust = models[names[0]], models[names[-1]]
    r = robust_accuracy(robust, x, y, eps, steps=100, restarts=5)
    print(json.dumps({"model": names[-1], "check": "PGD-100, 5 random restarts", **r,
                      "ci95": wilson_interval(r["correct"], r["n"])}))
    adv = attack_batched(create("pgd", eps=eps, steps=20, alpha=2.5 * eps / 20, random_init=True), twin, x, y,
                         batch_size=500, seed=0).x_adv
    k = int((robust(adv).argmax(1) == y).sum())
    print(json.dumps({"model": names[-1], "check": f"PGD-20 transferred from {names[0]}", "eps": eps,
                      "accuracy": k / len(y), "correct": k, "n": len(y), "ci95": wilson_interval(k, len(y))}))
