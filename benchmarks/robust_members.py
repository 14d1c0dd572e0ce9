"""Clean and PGD-20 robust accuracy of zoo models on the same 1,000 class-balanced test images.

    python benchmarks/robust_members.py fashion-mnist 0.1 lenet lenet_pgd maxout_advtrain
"""
import json
import sys

import advkit.data
import advkit.models
from advkit.data import subset_indices
from advkit.train.adversarial import robust_accuracy

ds, eps = sys.argv[1], float(sys.argv[2])
te = advkit.data.load(ds, "test", download_ok=False)
sub = subset_indices(len(te), 1000, labels=te.y.numpy())
for name in sys.argv[3:]:
    m = advkit.models.load(name, dataset=ds)
    clean = (m(te.x[sub]).argmax(1) == te.y[sub]).float().mean().item()
    r = robust_accuracy(m, te.x[sub], te.y[sub], eps, steps=20)
    print(json.dumps({"dataset": ds, "model": name, "eps": eps, "clean_1000": clean, **r}))
