"""advkit's JSMA against ART's SaliencyMapMethod on the same LeNet and the same (sample, target) rows.

    python benchmarks/bench_jsma.py --n 100                  # 100 MNIST test samples x 9 targets
    python benchmarks/bench_jsma.py --n 50 --dataset fashion-mnist

Both attacks run with the paper's settings (theta = +1, at most 14.5% of the features), on the same batches
(interleaved batch by batch, so changes in machine load hit both alike), with the same number of torch threads.
ART (``pip install adversarial-robustness-toolbox``, a dev dependency used only here) ranks single features
by the target logit's gradient alone and moves the top two; advkit runs Papernot et al.'s pair search on the
softmax's forward derivative. Printed: time per targeted attack, success (the model predicts the target), share
of features modified (mean over successful attacks, as the paper reports, and over all), and the ratio advkit
time / ART time. The issue's bar: advkit succeeds at least as often with fewer features modified, in at most
2x ART's time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

import advkit.data
import advkit.models
from advkit.attacks.saliency.jsma import JSMA, all_targets, modified_features


def advkit_method(batch_size: int, output: str) -> Callable[..., torch.Tensor]:
    attack = JSMA(theta=1.0, upsilon=0.145, output=output, batch_size=batch_size)
    return lambda model, x, y, t: attack(model, x, y, target=t).x_adv


def art_method(model, shape: tuple[int, ...], batch_size: int, theta: float,
               gamma: float) -> Callable[..., torch.Tensor]:
    from art.attacks.evasion import SaliencyMapMethod
    from art.estimators.classification import PyTorchClassifier

    k = int(model.num_classes)
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=k,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = SaliencyMapMethod(clf, theta=theta, gamma=gamma, batch_size=batch_size, verbose=False)

    def run(model, x, y, t):
        onehot = np.eye(k, dtype=np.float32)[t.numpy()]
        return torch.from_numpy(attack.generate(x.numpy(), y=onehot)).float()

    return run


def measure(model, x_adv: torch.Tensor, x: torch.Tensor, t: torch.Tensor, seconds: float) -> dict[str, float]:
    with torch.no_grad():
        pred = torch.cat([model(x_adv[i:i + 512]).argmax(1) for i in range(0, x_adv.shape[0], 512)])
    ok = pred == t
    share = modified_features(x_adv, x).double() / x[0].numel()
    return {"ms_per_attack": 1000 * seconds / x.shape[0], "success": float(ok.float().mean()),
            "share_successful": float(share[ok].mean()) if ok.any() else float("nan"),
            "share_all": float(share.mean()), "share_max": float(share.max()), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="test samples (evenly spaced), each attacked towards all 9 "
                                                       "other classes")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both attacks")
    ap.add_argument("--logits", action="store_true", help="also run advkit on the logits' forward derivative")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = advkit.models.load(args.model, dataset=args.dataset)
    data = advkit.data.load(args.dataset, "test")
    idx = torch.linspace(0, len(data) - 1, args.n).round().long().unique()
    x0, y0 = data.x[idx], data.y[idx]
    rows, t = all_targets(y0, int(model.num_classes))
    x, y = x0[rows], y0[rows]
    print(f"{args.model} on {args.dataset}: {idx.numel()} samples x {int(model.num_classes) - 1} targets = "
          f"{rows.numel()} targeted attacks, batch {args.batch_size}, {args.threads} thread(s)")
    if data.note:
        print(f"data: {data.note}")

    methods = {"advkit JSMA (pairs, softmax)": advkit_method(args.batch_size, "softmax")}
    if args.logits:
        methods["advkit JSMA (pairs, logits)"] = advkit_method(args.batch_size, "logits")
    methods["ART SaliencyMapMethod (theta 1, gamma 0.145)"] = art_method(model, tuple(x.shape[1:]), args.batch_size,
                                                                        theta=1.0, gamma=0.145)
    # Interleaved by batch, so a change in machine load affects every method alike.
    outs: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for i in range(0, x.shape[0], args.batch_size):
        sl = slice(i, i + args.batch_size)
        for name, run in methods.items():
            start = time.perf_counter()
            outs[name].append(run(model, x[sl], y[sl], t[sl]))
            seconds[name] += time.perf_counter() - start
    results = {name: measure(model, torch.cat(outs[name]), x, t, seconds[name]) for name in methods}

    width = max(map(len, results))
    print(f"\n{'method':<{width}}  {'ms/attack':>9}  {'success':>8}  {'feat. mod. (succ.)':>18}  "
          f"{'feat. mod. (all)':>16}  {'max':>6}")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['ms_per_attack']:9.1f}  {100 * r['success']:7.2f}%  "
              f"{100 * r['share_successful']:17.2f}%  {100 * r['share_all']:15.2f}%  {100 * r['share_max']:5.2f}%")
    ours = results["advkit JSMA (pairs, softmax)"]
    art = results["ART SaliencyMapMethod (theta 1, gamma 0.145)"]
    ratio = ours["seconds"] / art["seconds"]
    print(f"\nadvkit time / ART time: {ratio:.2f}x (bar: <= 2x)")
    print(f"success: advkit {100 * ours['success']:.2f}% vs ART {100 * art['success']:.2f}% (bar: advkit >= ART)")
    print(f"features modified over successful attacks: advkit {100 * ours['share_successful']:.2f}% vs ART "
          f"{100 * art['share_successful']:.2f}% (bar: advkit fewer)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "time_ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
