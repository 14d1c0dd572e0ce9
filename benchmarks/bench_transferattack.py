"""advkit's ensemble methods and transfer losses next to TransferAttack's own classes (issue 25, "Checked against
outside code").

TransferAttack (github Trustworthy-AI-Group/TransferAttack) is imported from the checkout named by
``--transferattack DIR``; nothing of its code enters advkit. Only its model supply is adapted:

* its ``utils.py`` imports torchvision, timm (and pandas, PIL) at import time; stand-in ``torchvision`` (``models``,
  ``transforms``) and ``timm`` (``create_model`` / ``list_models`` that refuse) modules are put in ``sys.modules``
  first (they are never called: the model loader is replaced);
* ``Attack.load_model`` returns advkit zoo models (Fashion-MNIST) instead of torchvision ones; a list of names becomes
  TransferAttack's own ``EnsembleModel`` (mean of the logits);
* TI kernels there are built for 3 channels (``groups=3``), so both implementations attack 3-channel copies of the
  grey images through the same wrapped models, which average the channels back (``x.mean(1, keepdim=True)``);
* ``POTRIP.num_classes = 1000`` is set to 10, and its input-diversity transform, which hard-codes 224-px ImageNet
  inputs (``region = int(224 * resize_rate)``), is replaced by the same code with the input's side in place of 224.

Each method runs on the same images, eps and steps in both codes; the adversarial examples are then evaluated on the
surrogate ensemble (white-box) and on held-out zoo targets (transfer) under ``torch.no_grad()``. For deterministic
settings the largest pixel difference between the two codes' adversarial examples is printed.

    python benchmarks/bench_transferattack.py --transferattack /tmp/transferattack \
        --out benchmarks/results/transferattack_comparison.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import advkit.attacks as A
import advkit.data
from advkit.models import Classifier, ensemble, load
from advkit.models.zoo.resnet import BasicBlock

SURROGATES = ("resnet20", "resnet56", "densenet_bc40")
TARGETS = ("inception_resnet", "lenet", "linear", "maxout", "mlp", "preact_resnet20", "se_resnet20", "vgg11_bn",
           "wrn16_2")
EPS = 16 / 255


class _MeanChannels(nn.Module):
    """``(N, 3, H, W) -> (N, 1, H, W)``: the grey model sees the mean of the three copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)


def grey3(model: Classifier) -> Classifier:
    """``model`` (1x28x28) as a classifier of 3x28x28 inputs whose channels it averages (identity normalisation)."""
    wrapped = Classifier(nn.Sequential(_MeanChannels(), model), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                         (3, *model.input_shape[1:]), model.num_classes, name=model.name, card=dict(model.card))
    return wrapped.freeze()


class _StandIn:
    """Whatever a stand-in module is asked for: a class that can be subclassed, built, and used as a decorator
    (returns what it decorates). Never asked to compute anything here."""

    def __init__(self, *_: Any, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __call__(self, *a: Any, **__: Any) -> Any:
        return a[0] if a else self


def install_stand_ins() -> None:
    """Stand-in ``torchvision`` and ``timm`` modules for TransferAttack's import-time imports (torchvision's wheel
    does not import here). Every name resolves to :class:`_StandIn`; ``timm.list_models`` is empty and
    ``timm.create_model`` refuses; the ImageNet model builders they feed are never called (``load_model`` is
    replaced)."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("stand-in module: this benchmark supplies advkit zoo models instead")

    def identity_decorator(*_: Any, **__: Any) -> Callable[[Any], Any]:
        return lambda f: f

    special: dict[str, dict[str, Any]] = {
        "timm": {"create_model": refuse, "list_models": lambda *a, **k: []},
        "torchvision.models._utils": {"handle_legacy_interface": identity_decorator},
        "torchvision.models._meta": {"_IMAGENET_CATEGORIES": []},
        "timm.models.registry": {"register_model": lambda f: f},
    }
    names = ("torchvision", "torchvision.models", "torchvision.transforms", "torchvision.transforms._presets",
             "torchvision.utils", "torchvision.models._api", "torchvision.models._meta", "torchvision.models._utils",
             "timm", "timm.models", "timm.models.registry", "timm.models.helpers", "timm.models.layers", "timm.data")
    for name in names:
        mod = types.ModuleType(name)
        mod.__path__ = []  # type: ignore[attr-defined]  # a package, so its submodules import
        mod.__dict__.update(special.get(name, {}))
        mod.__getattr__ = lambda attr, _n=name: type(attr, (_StandIn,), {})  # type: ignore[attr-defined]
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, mod)


def import_transferattack(root: Path, zoo: dict[str, Classifier]) -> dict[str, Any]:
    """Import TransferAttack's classes from ``root`` with ``load_model`` returning (ensembles of) zoo models."""
    install_stand_ins()
    sys.path.insert(0, str(root))
    import transferattack.attack as ta_attack
    from transferattack.advanced_objective.logit import LOGIT
    from transferattack.advanced_objective.potrip import POTRIP
    from transferattack.ensemble.cwa import CWA
    from transferattack.ensemble.ens import ENS
    from transferattack.ensemble.svre import SVRE
    from transferattack.utils import EnsembleModel

    def load_model(self: Any, model_name: str | list[str]) -> nn.Module:
        if isinstance(model_name, list):
            return EnsembleModel([zoo[n] for n in model_name])
        return zoo[model_name]

    ta_attack.Attack.load_model = load_model

    def potrip_transform(self: Any, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        # POTRIP.transform with 224 (its ImageNet side) replaced by the input's side; otherwise unchanged.
        side = x.shape[-1]
        region = int(side * self.resize_rate)
        rnd = np.random.randint(side, region, size=1)[0]
        h_rem = region - rnd
        w_rem = region - rnd
        pad_top = np.random.randint(0, h_rem, size=1)[0]
        pad_bottom = h_rem - pad_top
        pad_left = np.random.randint(0, w_rem, size=1)[0]
        pad_right = w_rem - pad_left
        c = np.random.rand(1)
        if c <= self.diversity_prob:
            rescaled = F.interpolate(x, size=(rnd, rnd), mode="bilinear", align_corners=False)
            return F.pad(rescaled, (pad_left, pad_right, pad_top, pad_bottom), mode="constant", value=0)
        return x

    POTRIP.transform = potrip_transform
    out: dict[str, Any] = {}
    try:
        from transferattack.model_related.ghost import GhostNetwork_MIFGSM
        from transferattack.model_related.ghost_networks.resnet import GhostBasicBlock

        GhostNetwork_MIFGSM.load_model = load_model
        out.update(GHOST=GhostNetwork_MIFGSM, GhostBasicBlock=GhostBasicBlock)
    except ImportError as e:  # reported in the table's notes
        print(f"TransferAttack's Ghost did not import: {e}", flush=True)
    return {**out, "Attack": ta_attack.Attack, "ENS": ENS, "SVRE": SVRE, "CWA": CWA, "LOGIT": LOGIT, "POTRIP": POTRIP}


def ghost_blocks(model: Classifier, block_cls: type, ghost_range: float) -> Classifier:
    """A copy of a zoo ResNet whose basic blocks run TransferAttack's ``GhostBasicBlock.forward`` (the shortcut
    scaled by fresh ``U[1 - r, 1 + r]`` draws, one per channel, at every pass); the zoo's ``shortcut`` is its
    ``downsample`` (``nn.Identity`` for the identity blocks)."""
    ghost = copy.deepcopy(model)
    blocks = [m for m in ghost.modules() if isinstance(m, BasicBlock)]
    if not blocks:
        raise ValueError(f"{model.name} has no zoo BasicBlock to turn into a ghost block")
    for blk in blocks:
        blk.downsample = blk.shortcut
        blk.ghost_random_range = ghost_range
        blk.forward = types.MethodType(block_cls.forward, blk)  # type: ignore[method-assign]
    return ghost


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(100)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transferattack", type=Path, required=True, help="a checkout of TransferAttack (its root)")
    p.add_argument("--n", type=int, default=200, help="test images (first ones the surrogate ensemble gets right)")
    p.add_argument("--steps", type=int, default=10, help="iterations of the untargeted ensemble methods")
    p.add_argument("--targeted-steps", type=int, default=20, help="iterations of the targeted Logit / Po+Trip runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated subset of rows (ens,svre,cwa,cwa1,logit,potrip)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--float64", action="store_true",
                   help="run the models and images in float64 (to tell rounding from a difference of algorithm)")
    args = p.parse_args()
    if args.float64:
        torch.set_default_dtype(torch.float64)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    dtype = torch.float64 if args.float64 else torch.float32
    zoo1 = {n: load(n, dataset="fashion-mnist").to(dtype) for n in SURROGATES}
    zoo = {n: grey3(m) for n, m in zoo1.items()}
    targets = {n: load(n, dataset="fashion-mnist").to(dtype) for n in TARGETS}
    ta = import_transferattack(args.transferattack, zoo)
    if "GhostBasicBlock" in ta:  # TransferAttack's ghost residual block, on the zoo ResNet-20's weights
        zoo["ghost:resnet20"] = grey3(ghost_blocks(zoo1["resnet20"], ta["GhostBasicBlock"], 0.16))
    names = list(SURROGATES)
    ens_adv = ensemble([zoo[n] for n in names])  # advkit's ensemble:A+B+C, fuse logits

    data = advkit.data.load("fashion-mnist", "test", limit=2000, subset="first", download_ok=False)
    x1, y = data.x.to(dtype), data.y
    ok = predict(ens_adv, x1.expand(-1, 3, -1, -1)) == y
    x1, y = x1[ok][: args.n], y[ok][: args.n]
    x = x1.expand(-1, 3, -1, -1).contiguous()
    gen = torch.Generator().manual_seed(args.seed)
    target = (y + torch.randint(1, 10, y.shape, generator=gen)) % 10  # random, never the true class

    def evaluate(x_adv: torch.Tensor, tgt: torch.Tensor | None, white: nn.Module) -> tuple[float, float]:
        grey = x_adv.mean(1, keepdim=True)
        hit: Callable[[torch.Tensor], torch.Tensor] = (lambda pr: pr != y) if tgt is None else (lambda pr: pr == tgt)
        wb = hit(predict(white, x_adv)).float().mean().item()
        tr = float(np.mean([hit(predict(m, grey)).float().mean().item() for m in targets.values()]))
        return wb, tr

    def run_ta(cls: str, label: Any, surrogate: Any, **kw: Any) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        l1_momentum = kw.pop("l1_momentum", False)
        attack = ta[cls](model_name=surrogate, **kw)
        if cls == "POTRIP":
            attack.num_classes = 10
        if l1_momentum:  # ablation: TransferAttack's own MI accumulator (Attack.get_momentum), L1-normalised
            attack.get_momentum = types.MethodType(ta["Attack"].get_momentum, attack)
        delta = attack(x, label)
        return (x + delta).clamp(0, 1).detach(), time.perf_counter() - t0

    def run_adv(name: str, tgt: torch.Tensor | None, white: nn.Module, **kw: Any) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        res = A.create(name, **kw)(white, x, y, target=tgt, generator=torch.Generator().manual_seed(args.seed))
        return res.x_adv.detach(), time.perf_counter() - t0

    s, ts = args.steps, args.targeted_steps
    rows: list[dict[str, Any]] = []
    # (row key, label, TA class, TA kwargs, TA label, advkit name, advkit kwargs, targeted, deterministic)
    plan: list[tuple[Any, ...]] = [
        ("ens", "Ens (MI, logits mean)", "ENS", dict(epoch=s, alpha=EPS / s), y,
         "mi", dict(eps=EPS, steps=s, alpha=EPS / s), False, True),
        ("cwa", "CWA (MI-CWA)", "CWA", dict(epoch=s, alpha=2 * EPS / s, random_start=False), y,
         "cwa", dict(eps=EPS, steps=s), False, True),
        ("logit", "Logit (MI+DI+TI, targeted)", "LOGIT", dict(epoch=ts, alpha=2 / 255), (y, target),
         "mi+di+ti", dict(eps=EPS, steps=ts, alpha=2 / 255, loss="logit", di_prob=0.7, ti_kernel=5), True, False),
        ("potrip", "Po+Trip (MI+DI+TI, targeted)", "POTRIP", dict(epoch=ts, alpha=0.8 / 255), (y, target),
         "mi+di+ti", dict(eps=EPS, steps=ts, alpha=0.8 / 255, loss="potrip", di_prob=0.7, ti_kernel=5), True, False),
        ("potrip0", "Po+Trip (MI+TI, DI off, targeted)", "POTRIP", dict(epoch=ts, alpha=0.8 / 255, diversity_prob=0.0),
         (y, target), "mi+ti", dict(eps=EPS, steps=ts, alpha=0.8 / 255, loss="potrip", ti_kernel=5), True, True),
        ("svre", "SVRE (MI)", "SVRE", dict(epoch=s, alpha=EPS / s, random_start=False), y,
         "svre", dict(eps=EPS, steps=s), False, False),
    ]
    plan.append(("ghost", "Ghost (MI, resnet20 alone)", "GHOST", dict(epoch=s, alpha=EPS / s), y,
                 "ghost+mi", dict(eps=EPS, steps=s, alpha=EPS / s, ghost_range=0.16), False, False))
    extra = ("potrip0_l1",)  # ablations, run only when --only names them
    plan.append(("potrip0_l1", "Po+Trip DI off, TA with its MI L1-normalised momentum", "POTRIP",
                 dict(epoch=ts, alpha=0.8 / 255, diversity_prob=0.0, l1_momentum=True), (y, target), "mi+ti",
                 dict(eps=EPS, steps=ts, alpha=0.8 / 255, loss="potrip", ti_kernel=5), True, True))
    only = {k for k in args.only.split(",") if k}
    for key, label, cls, ta_kw, ta_label, adv_name, adv_kw, targeted, det in plan:
        if (only and key not in only) or (not only and key in extra):
            continue
        tgt = target if targeted else None
        surrogate, white = (names, ens_adv) if cls != "GHOST" else ("ghost:resnet20", zoo["resnet20"])
        if cls not in ta:
            print(f"{label}: skipped, TransferAttack's class did not import", flush=True)
            continue
        xa_ta, t_ta = run_ta(cls, ta_label, surrogate, **ta_kw)
        xa_ad, t_ad = run_adv(adv_name, tgt, white, **adv_kw)
        row = {"key": key, "label": label, "adv": adv_name, "det": det, "t_ta": t_ta, "t_ad": t_ad,
               "ta": evaluate(xa_ta, tgt, white), "ad": evaluate(xa_ad, tgt, white),
               "linf_ta": (xa_ta - x).abs().amax().item(), "linf_ad": (xa_ad - x).abs().amax().item(),
               "diff": (xa_ta - xa_ad).abs().amax().item(),
               "frac": ((xa_ta - xa_ad).abs() > 1e-6).float().mean().item()}
        rows.append(row)
        print(f"{label:36s} TA wb {row['ta'][0]:.3f} tr {row['ta'][1]:.3f} | advkit wb {row['ad'][0]:.3f} "
              f"tr {row['ad'][1]:.3f} | max|diff| {row['diff']:.2e} ({row['frac']:.1%} px) "
              f"| {t_ta:.0f}s / {t_ad:.0f}s", flush=True)
        if args.out is not None:  # after every row, so a cut-short run still leaves its table
            write(args, rows, len(y))
    if not only or "cwa1" in only:  # CWA one image at a time: TransferAttack's batch-wide L1 norm becomes per sample
        n1 = 10
        t0 = time.perf_counter()
        outs = [ta["CWA"](model_name=names, epoch=s, alpha=2 * EPS / s, random_start=False)(x[i:i + 1], y[i:i + 1])
                for i in range(n1)]
        xa_ta = (x[:n1] + torch.cat(outs)).clamp(0, 1)
        res = A.create("cwa", eps=EPS, steps=s)(ens_adv, x[:n1], y[:n1])
        d = (xa_ta - res.x_adv).abs().amax().item()
        rows.append({"key": "cwa1", "diff": d, "n": n1, "t": time.perf_counter() - t0})
        print(f"CWA batch size 1 (first {n1} images): max|diff| {d:.2e}", flush=True)
    if args.out is not None:
        write(args, rows, len(y))


def write(args: argparse.Namespace, rows: list[dict[str, Any]], n: int) -> None:
    cmd = "python benchmarks/bench_transferattack.py " + " ".join(sys.argv[1:])
    lines = [f"<!-- generated by: {cmd} -->", "| method | advkit | TransferAttack white-box | advkit white-box | "
             "TransferAttack mean transfer | advkit mean transfer | max pixel diff (share of px > 1e-6) | "
             "time TA / advkit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["key"] == "cwa1":
            continue
        diff = f"{r['diff']:.2e} ({r['frac']:.1%})" if r["det"] else f"stochastic ({r['diff']:.2e})"
        lines.append(f"| {r['label']} | `{r['adv']}` | {r['ta'][0]:.1%} | {r['ad'][0]:.1%} | {r['ta'][1]:.1%} | "
                     f"{r['ad'][1]:.1%} | {diff} | {r['t_ta']:.0f} s / {r['t_ad']:.0f} s |")
    for r in rows:
        if r["key"] == "cwa1":
            lines.append(f"\nCWA one image per call (first {r['n']} images, TransferAttack's batch-wide L1 norm "
                         f"then equals the per-sample one): max pixel difference {r['diff']:.2e}.")
    dtype = "float64" if args.float64 else "float32"
    lines.append(f"\n{n} images, {dtype}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
                 f"{args.threads} threads.")
    notes = ""  # a hand-written "## Notes" section after the table survives a rerun
    if args.out.exists() and "\n## Notes" in args.out.read_text():
        notes = "\n## Notes" + args.out.read_text().split("\n## Notes", 1)[1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + notes)


if __name__ == "__main__":
    main()
