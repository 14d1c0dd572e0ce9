"""advkit's transfer methods of issue 26 next to TransferAttack's own classes ("Checked against outside code").

TransferAttack (github Trustworthy-AI-Group/TransferAttack) is imported from ``--transferattack DIR``; nothing of its
code enters advkit. Both codes attack the zoo's Fashion-MNIST resnet20 on the first ``--n`` test images it gets right,
with the same eps, steps, ``alpha = eps / steps`` and settings (passed explicitly to both: BSR 20 copies of 2 x 2
blocks, TransferAttack's default is 3 x 3; SIA 20 copies of 3 x 3; DeCowA 20 warps; PGN / GRA 20 samples; Admix
5 x 3; FIA 30 masks, NAA 30 path points; MI decay 1 except PI-FGSM, decay 0). White-box success (resnet20) and mean
transfer over the zoo's other plainly trained models are measured under ``torch.no_grad()``; deterministic rows
(PI-FGSM, NAA, LinBP, ILA) give the largest pixel difference; random rows run every ``--seeds`` seed in both codes
(mean and 95% Student-t interval over seeds, and a 95% Wilson interval of one seed's pooled transfer).

Adaptations on TransferAttack's side (the model supply, the device, and two ImageNet-only functions):

* issue 25's stand-in ``torchvision`` / ``timm`` modules and 3-channel grey copies (``bench_transferattack.py``,
  imported): both codes attack 3-channel copies through models that average the channels (TransferAttack's PI / SIA
  kernels are built for 3 channels);
* ``Attack.load_model`` returns ``nn.Sequential(channel mean + resnet20's normalisation, resnet20's network)``, the
  network a deep copy with ``requires_grad=True`` parameters (as torchvision's loaders give; its NAA calls
  ``loss.backward()`` on inputs that need no gradient): the same function as advkit's wrapped model (the largest
  logit difference is printed), ``model[1]`` the zoo network, as ``find_layer`` and LinBP expect;
* CPU only: ``torch.Tensor.cuda`` is the identity while its code runs (FIA, NAA, ILA, PI-FGSM, LinBP call it);
* BSR's ``torchvision.transforms.RandomRotation(degrees=(-24, 24), interpolation=BILINEAR)`` is a port of
  torchvision's tensor path (one angle per call, ``torch.empty(1).uniform_`` from torch's global generator, rotation
  about the centre, ``grid_sample`` with zeros, ``align_corners=False``, times the rotated all-ones mask as
  torchvision's ``fill=0`` does);
* LinBP's ResNet-50 functions (``linbp_forw_resnet50``, ``block_func`` with conv3/bn3/downsample,
  ``linbp_backw_resnet50``) are ported line for line to the zoo's BasicBlock (conv1 bn1 relu conv2 bn2, ``shortcut``,
  relu after the addition; stem without max-pool; three stages; average pool, fc), keeping their logic: the branch
  ReLU linear (its own ``linbp_relu``), the post-addition ReLU true, the ``main_grad_norm`` renormalisation;
  ``linbp_layer`` (hard-coded '3_1') is set to the block of advkit's ``linbp_start="auto"`` ('2_1' on resnet20);
* FIA / NAA get ``feature_layer`` = the block advkit's ``ila_layer(model)`` picks (``layer2 1`` on resnet20);
* TransferAttack runs on chunks of ``--ta-batch`` images (its ``main.py``: batches of 32), advkit on the whole set.

Each TransferAttack class is compared with advkit's paper attack ("paper") and, where advkit has one, its setting that
follows TransferAttack's code ("code"; FIA / NAA: ``fia`` / ``naa`` with ``*_variant="transferattack"`` and no
momentum, as TransferAttack's step on the plain gradient's sign). A row whose advkit part is not registered, or whose
TransferAttack class does not import, is skipped with the reason.

    python benchmarks/bench_transferattack_methods.py --transferattack /tmp/transferattack --n 1000 --seeds 0,1,2 \
        --threads 2 --out benchmarks/results/transferattack_methods.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import math
import platform
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transferattack import TARGETS, _MeanChannels, grey3, install_stand_ins, predict  # noqa: E402

import advkit.attacks as A  # noqa: E402
import advkit.data  # noqa: E402
from advkit.attacks.gradient.ila import ila_layer  # noqa: E402
from advkit.models import Classifier, load  # noqa: E402
from advkit.models.zoo.resnet import BasicBlock  # noqa: E402

ALL_TARGETS = (*TARGETS, "densenet_bc40", "resnet56")


class RandomRotation:
    """Port of torchvision's ``RandomRotation(degrees, interpolation=BILINEAR)`` on tensors (fill 0, no expand)."""

    def __init__(self, degrees: tuple[float, float], interpolation: str = "bilinear", **_: Any) -> None:
        self.degrees, self.mode = degrees, interpolation

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        angle = float(torch.empty(1).uniform_(float(self.degrees[0]), float(self.degrees[1])).item())
        rot = math.radians(-angle)  # F.rotate passes -angle to _get_inverse_affine_matrix; centre 0, no shear
        theta = torch.tensor([math.cos(rot), math.sin(rot), 0.0, -math.sin(rot), math.cos(rot), 0.0],
                             dtype=img.dtype).reshape(1, 2, 3)
        h, w = img.shape[-2], img.shape[-1]
        base = torch.empty(1, h, w, 3, dtype=theta.dtype)
        base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w))
        base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h).unsqueeze_(-1))
        base[..., 2].fill_(1)
        grid = base.view(1, h * w, 3).bmm(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=theta.dtype))
        grid = grid.view(1, h, w, 2).expand(img.shape[0], h, w, 2)
        ones = torch.ones(img.shape[0], 1, h, w, dtype=img.dtype)
        out = F.grid_sample(torch.cat((img, ones), 1), grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        mask = out[:, -1:].expand_as(out[:, :-1])
        return out[:, :-1] * mask + (1.0 - mask) * torch.zeros_like(out[:, :-1])


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """``Tensor.cuda`` as the identity while TransferAttack's code runs."""
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.Tensor.cuda = saved  # type: ignore[method-assign]


def linbp_port(ta_linbp: Any) -> None:
    """TransferAttack's ``linbp_forw_resnet50`` / ``block_func`` / ``linbp_backw_resnet50`` ported line for line to
    the zoo's BasicBlock (one branch ReLU, made linear; the post-addition ReLU true) and ResNet (no max-pool, three
    stages, global average pool), installed in its module under the names ``LinBP.forward`` calls."""
    linbp_relu = ta_linbp.linbp_relu

    def block_func(block: Any, x: torch.Tensor, linbp: bool) -> tuple[Any, ...]:
        identity = x
        conv_in = x + 0
        out = block.conv1(conv_in)
        out = block.bn1(out)
        out_0 = out + 0
        if linbp:
            out = linbp_relu(out_0)
        else:
            out = block.relu(out_0)
        ori_mask_0 = out.data.bool().int()
        out = block.conv2(out)
        out = block.bn2(out)
        identity = block.shortcut(identity)
        identity_out = identity + 0
        x_out = out + 0
        out = identity_out + x_out
        out = block.relu(out)
        ori_mask_1 = out.data.bool().int()
        return out, (ori_mask_0, ori_mask_1), (identity_out, x_out), (out_0,), (0, conv_in)

    def linbp_forw(model: Any, x: torch.Tensor, do_linbp: bool, linbp_layer: str) -> tuple[Any, ...]:
        jj = int(linbp_layer.split("_")[0])
        kk = int(linbp_layer.split("_")[1])
        x = model[0](x)
        x = model[1].conv1(x)
        x = model[1].bn1(x)
        x = model[1].relu(x)
        ori_mask_ls: list[Any] = []
        conv_out_ls: list[Any] = []
        relu_out_ls: list[Any] = []
        conv_input_ls: list[Any] = []

        def layer_forw(jj_now: int, kk_now: int, x: torch.Tensor, mm: nn.Module) -> torch.Tensor:
            if jj < jj_now or (jj == jj_now and kk_now >= kk):
                x, ori_mask, conv_out, relu_out, conv_in = block_func(mm, x, linbp=True)
                ori_mask_ls.append(ori_mask)
                conv_out_ls.append(conv_out)
                relu_out_ls.append(relu_out)
                conv_input_ls.append(conv_in)
            else:
                x, _, _, _, _ = block_func(mm, x, linbp=False)
            return x

        for stage, layer in enumerate((model[1].layer1, model[1].layer2, model[1].layer3), start=1):
            for ind, mm in enumerate(layer):
                x = layer_forw(stage, ind, x, mm)
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        x = model[1].fc(x)
        return x, ori_mask_ls, conv_out_ls, relu_out_ls, conv_input_ls

    def linbp_backw(img: torch.Tensor, loss: torch.Tensor, conv_out_ls: list[Any], ori_mask_ls: list[Any],
                    relu_out_ls: list[Any], conv_input_ls: list[Any], xp: float) -> torch.Tensor:
        main_grad_norm: torch.Tensor | None = None
        grads: tuple[torch.Tensor, ...] = ()
        for i in range(-1, -len(conv_out_ls) - 1, -1):
            if i == -1:
                grads = torch.autograd.grad(loss, conv_out_ls[i])
            else:
                grads = torch.autograd.grad((conv_out_ls[i + 1][0], conv_input_ls[i + 1][1]), conv_out_ls[i],
                                            grad_outputs=(grads[0], main_grad_norm))
            normal_grad_1 = torch.autograd.grad(conv_out_ls[i][1], relu_out_ls[i][0], grads[1] * ori_mask_ls[i][1],
                                                retain_graph=True)[0]
            normal_grad_0 = torch.autograd.grad(relu_out_ls[i][0], conv_input_ls[i][1],
                                                normal_grad_1 * ori_mask_ls[i][0], retain_graph=True)[0]
            del normal_grad_1
            main_grad = torch.autograd.grad(conv_out_ls[i][1], conv_input_ls[i][1], grads[1])[0]
            alpha = normal_grad_0.norm(p=2, dim=(1, 2, 3), keepdim=True) / main_grad.norm(p=2, dim=(1, 2, 3),
                                                                                          keepdim=True)
            main_grad_norm = xp * alpha * main_grad
        input_grad = torch.autograd.grad((conv_out_ls[0][0], conv_input_ls[0][1]), img,
                                         grad_outputs=(grads[0], main_grad_norm))
        return input_grad[0].data

    vars(ta_linbp).update(linbp_forw_resnet50=linbp_forw, block_func=block_func, linbp_backw_resnet50=linbp_backw)


CLASSES = {"BSR": "input_transformation.bsr", "SIA": "input_transformation.sia",
           "DeCowA": "input_transformation.decowa", "Admix": "input_transformation.admix", "PGN": "gradient.pgn",
           "GRA": "gradient.gra", "PIFGSM": "gradient.pifgsm", "FIA": "advanced_objective.fia",
           "NAA": "advanced_objective.naa", "ILA": "advanced_objective.ila", "LinBP": "model_related.linbp"}


def import_transferattack(root: Path, model: nn.Module) -> dict[str, Any]:
    """TransferAttack's classes from ``root``, with ``load_model`` returning ``model``; a class that does not import
    maps to its error message."""
    install_stand_ins()
    tv = sys.modules["torchvision.transforms"]
    tv.RandomRotation = RandomRotation  # type: ignore[attr-defined]
    tv.InterpolationMode = type("InterpolationMode", (), {"BILINEAR": "bilinear", "NEAREST": "nearest"})  # type: ignore[attr-defined]
    sys.path.insert(0, str(root))
    import transferattack.attack as ta_attack

    ta_attack.Attack.load_model = lambda self, name: model  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    for cls, mod in CLASSES.items():
        try:
            module = importlib.import_module(f"transferattack.{mod}")
        except Exception as e:  # noqa: BLE001  (reported as the row's skip reason)
            out[cls] = f"{type(e).__name__}: {e}"
            continue
        out[cls] = getattr(module, cls)
        if cls == "LinBP":
            linbp_port(module)
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    ph, d = k / n, 1 + z * z / n
    c, h = (ph + z * z / (2 * n)) / d, z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def t_interval(v: list[float]) -> tuple[float, float]:
    m, h = float(np.mean(v)), float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
    return m - h, m + h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transferattack", type=Path, required=True, help="a checkout of TransferAttack (its root)")
    p.add_argument("--n", type=int, default=1000, help="test images (first ones resnet20 classifies correctly)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2", help="seeds of the random rows (deterministic rows use the first)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ta-batch", type=int, default=100, help="images per TransferAttack call")
    p.add_argument("--only", default="", help="comma-separated rows (bsr,sia,decowa,pgn,gra,pi,fia,naa,linbp,ila,"
                   "admix)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here (after every row)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    eps, s = args.eps, args.steps
    a = eps / s

    r20 = load("resnet20", dataset="fashion-mnist")
    white = grey3(r20)  # advkit's surrogate: 3-channel pixels in, the channel mean through resnet20
    net = copy.deepcopy(r20.net).requires_grad_(True).eval()
    ta_model = nn.Sequential(nn.Sequential(_MeanChannels(), copy.deepcopy(r20.preprocess)), net).eval()
    targets: dict[str, Classifier] = {n: load(n, dataset="fashion-mnist") for n in ALL_TARGETS}
    ta = import_transferattack(args.transferattack, ta_model)

    data = advkit.data.load("fashion-mnist", "test", limit=min(10000, max(200, 2 * args.n)), subset="first",
                            download_ok=False)
    x3 = data.x.expand(-1, 3, -1, -1).contiguous()
    ok = predict(white, x3) == data.y
    x, y = x3[ok][: args.n], data.y[ok][: args.n]
    with torch.no_grad():
        gap = (white(x[:100]) - ta_model(x[:100])).abs().amax().item()
    blocks = [n for n, m in r20.net.named_modules() if isinstance(m, BasicBlock)]
    start = blocks[len(blocks) // 2]  # advkit's linbp_start="auto"; "layer2.1" -> TransferAttack's "2_1"
    linbp_layer = start.replace("layer", "").replace(".", "_")
    layer = ila_layer(r20.net)  # the block advkit's fia/naa/ila "auto" picks
    print(f"{len(y)} images; max |logit difference| advkit vs TransferAttack model {gap:.1e}; FIA/NAA/ILA layer "
          f"{layer!r}; LinBP from block {start!r} ({linbp_layer})", flush=True)

    def evaluate(xa: torch.Tensor) -> tuple[float, float, int]:
        wb = (predict(white, xa) != y).float().mean().item()
        fooled = [int((predict(m, xa.mean(1, keepdim=True)) != y).sum()) for m in targets.values()]
        return wb, sum(fooled) / (len(fooled) * len(y)), sum(fooled)

    def run_ta(cls: str, kw: dict[str, Any], seed: int) -> tuple[torch.Tensor, float]:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        t0 = time.perf_counter()
        with cpu_only():
            attack = ta[cls](model_name="resnet20", epsilon=eps, alpha=a, epoch=s, **kw)
            if cls == "LinBP":
                attack.linbp_layer = linbp_layer
            outs = [attack(x[i:i + args.ta_batch], y[i:i + args.ta_batch]) for i in range(0, len(y), args.ta_batch)]
        return (x + torch.cat(outs)).clamp(0, 1).detach(), time.perf_counter() - t0

    def run_adv(name: str, kw: dict[str, Any], seed: int) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed)
        res = A.create(name, eps=eps, steps=s, alpha=a, **kw)(white, x, y, generator=gen)
        return res.x_adv.detach(), time.perf_counter() - t0

    lay = layer.replace(".", " ")  # find_layer's path syntax

    def pair(name: str, kw: dict[str, Any], code: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
        return [(name, kw, "paper"), (name, {**kw, **code}, "code")]

    # (key, TransferAttack class, its settings, [(advkit name, settings, tag)], deterministic)
    plan: list[tuple[str, str, dict[str, Any], list[tuple[str, dict[str, Any], str]], bool]] = [
        ("bsr", "BSR", dict(decay=1.0, num_scale=20, num_block=2),
         pair("bsr+mi", dict(bsr_copies=20, bsr_blocks=2, bsr_angle=24.0), dict(bsr_variant="code")), False),
        ("sia", "SIA", dict(decay=1.0, num_scale=20, num_block=3),
         pair("sia+mi", dict(sia_copies=20, sia_blocks=3), dict(sia_variant="code")), False),
        ("decowa", "DeCowA", dict(decay=1.0, num_warping=20, mesh_width=3, mesh_height=3, noise_scale=2, rho=0.01),
         pair("decowa+mi", dict(decowa_copies=20, decowa_noise_scale=2.0, decowa_rho=0.01),
              dict(decowa_variant="code")), False),
        ("pgn", "PGN", dict(decay=1.0, beta=3.0, gamma=0.5, num_neighbor=20),
         [("pgn+mi", dict(pgn_samples=20, pgn_zeta=3.0, pgn_delta=0.5), "paper")], False),
        ("gra", "GRA", dict(decay=1.0, beta=3.5, num_neighbor=20),
         [("gra+mi", dict(gra_samples=20, gra_beta=3.5, gra_eta=0.94), "paper")], False),
        ("pi", "PIFGSM", dict(decay=0.0, kern_size=3, gamma=16.0, beta=10.0),
         pair("pi", dict(pi_beta=10.0, pi_kernel=3), dict(pi_variant="code")), True),
        ("fia", "FIA", dict(decay=1.0, num_ens=30, drop_rate=0.3, feature_layer=lay),
         [("fia+mi", dict(fia_copies=30, fia_drop=0.3), "paper"),
          ("fia", dict(fia_copies=30, fia_drop=0.3, fia_variant="transferattack"), "code")], False),
        ("naa", "NAA", dict(decay=1.0, N=30, feature_layer=lay),
         [("naa+mi", dict(naa_steps=30), "paper"),
          ("naa", dict(naa_steps=30, naa_variant="transferattack"), "code")], True),
        ("linbp", "LinBP", dict(decay=1.0), [("linbp+mi", dict(linbp_start="auto"), "paper")], True),
        ("ila", "ILA", dict(decay=1.0, coeff=1.0), [("mi+ila", dict(ila_steps=s), "paper")], True),
        ("admix", "Admix", dict(decay=1.0, num_scale=5, num_admix=3, admix_strength=0.2),
         [("admix+mi", dict(admix_scales=5, admix_images=3, admix_eta=0.2), "paper")], False),
    ]
    only = {k for k in args.only.split(",") if k}
    rows: list[dict[str, Any]] = []
    for key, cls, ta_kw, configs, det in plan:
        if only and key not in only:
            continue
        if not isinstance(ta.get(cls), type):
            print(f"{key}: skipped, TransferAttack's {cls} did not import ({ta.get(cls)})", flush=True)
            continue
        usable = []
        for name, kw, tag in configs:
            try:
                A.create(name, eps=eps, steps=s, alpha=a, **kw)
                usable.append((name, kw, tag))
            except Exception as e:  # noqa: BLE001  (a part not registered yet, or a setting it lacks)
                print(f"{key}: advkit {name} {kw} skipped: {type(e).__name__}: {e}", flush=True)
        if not usable:
            continue
        run_seeds = seeds[:1] if det else seeds
        ta_runs = [run_ta(cls, ta_kw, sd) for sd in run_seeds]
        ta_eval = [evaluate(xa) for xa, _ in ta_runs]
        for name, kw, tag in usable:
            adv_runs = [run_adv(name, kw, sd) for sd in run_seeds]
            adv_eval = [evaluate(xa) for xa, _ in adv_runs]
            d = (ta_runs[0][0] - adv_runs[0][0]).abs()
            row: dict[str, Any] = dict(
                key=key, cls=cls, adv=name, tag=tag, kw=kw, det=det, seeds=run_seeds, ta=ta_eval, ad=adv_eval,
                diff=d.amax().item(), frac=(d > 1e-6).float().mean().item(),
                t_ta=float(np.mean([r[1] for r in ta_runs])), t_ad=float(np.mean([r[1] for r in adv_runs])),
                linf=max((r[0] - x).abs().amax().item() for r in [*ta_runs, *adv_runs]))
            rows.append(row)
            wb, tr = ([float(np.mean([e[i] for e in ev])) for ev in (ta_eval, adv_eval)] for i in (0, 1))
            print(f"{cls:7s} vs {name} ({tag}): TA wb {wb[0]:.3f} tr {tr[0]:.3f} | advkit wb {wb[1]:.3f} "
                  f"tr {tr[1]:.3f} | max|diff| {row['diff']:.2e} ({row['frac']:.1%} px) | {row['t_ta'] / len(y):.3f} / "
                  f"{row['t_ad'] / len(y):.3f} s per image", flush=True)
            if args.out is not None:  # after every row, so a cut-short run still leaves its table
                write(args, rows, len(y), len(targets), gap)


def write(args: argparse.Namespace, rows: list[dict[str, Any]], n: int, n_targets: int, gap: float) -> None:
    cmd = "python benchmarks/bench_transferattack_methods.py " + " ".join(sys.argv[1:])
    lines = [f"<!-- generated by: {cmd} -->",
             "| TransferAttack | advkit (setting) | white-box TA / advkit | mean transfer TA | mean transfer advkit "
             "| Wilson 95%, one seed: TA / advkit | max pixel diff (share > 1e-6) | s per image TA / advkit |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(ev: list[tuple[float, float, int]]) -> str:
        v = [e[1] for e in ev]
        return f"{v[0]:.1%}" if len(v) < 2 else f"{np.mean(v):.1%} [{t_interval(v)[0]:.1%}, {t_interval(v)[1]:.1%}]"

    for r in rows:
        extra = ", ".join(f"{k}={v}" for k, v in r["kw"].items() if k.endswith("variant"))
        wl = [wilson(e[0][2], n * n_targets) for e in (r["ta"], r["ad"])]
        diff = f"{r['diff']:.2e} ({r['frac']:.1%})" if r["det"] else f"random ({r['diff']:.2e})"
        lines.append(f"| {r['cls']} | `{r['adv']}` ({r['tag']}{', ' + extra if extra else ''}) | "
                     f"{np.mean([e[0] for e in r['ta']]):.1%} / {np.mean([e[0] for e in r['ad']]):.1%} | "
                     f"{cell(r['ta'])} | {cell(r['ad'])} | {wl[0][0]:.1%}-{wl[0][1]:.1%} / {wl[1][0]:.1%}-"
                     f"{wl[1][1]:.1%} | {diff} | {r['t_ta'] / n:.3f} / {r['t_ad'] / n:.3f} |")
    seeds = sorted({sd for r in rows for sd in r["seeds"]})
    lines.append(f"\n{n} images, eps {args.eps}, {args.steps} steps, alpha eps/steps; mean transfer over "
                 f"{n_targets} targets ({', '.join(ALL_TARGETS)}); random rows: mean over seeds {seeds} with a 95% "
                 f"Student-t interval; Wilson on one seed's pooled {n} x {n_targets} attempts. Largest L-inf of any "
                 f"example {max(r['linf'] for r in rows):.4f}; max logit gap of the two model supplies {gap:.1e}. "
                 f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads.")
    old = args.out.read_text() if args.out.exists() else ""  # a hand-written "## Notes" section survives a rerun
    notes = "\n## Notes" + old.split("\n## Notes", 1)[1] if "\n## Notes" in old else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + notes)


if __name__ == "__main__":
    main()
