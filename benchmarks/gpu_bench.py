"""GPU throughput of advkit's iterative attacks on a ResNet-50 at 224 px, against ART's BIM and the bare passes.

What is measured, in one run, for fp32 and for bf16 (``torch.autocast`` around every call):

* **bare**: ``steps`` x (forward + ``torch.autograd.grad`` of the summed cross-entropy w.r.t. the input) on the
  batch: the cost floor of a ``steps``-step gradient attack;
* **advkit I-FGSM, MI, SGM+MI** (``eps=16/255``, ``steps`` steps, step ``eps/steps``, SGM ``gamma=0.2``): one
  ``attack(model, x, y)`` call, which includes the input checks and the final forward pass that measures success;
* **ART's BIM** (``BasicIterativeMethod``, same eps, step, steps and batch, ``PyTorchClassifier`` on the GPU,
  numpy in and out as ART is used): fp32, and bf16 through a wrapper whose forward runs under autocast and
  returns float32 logits (ART itself has no bf16 mode; the row says so if that fails).

Each row: the median of ``--repeats`` timed calls (rounds interleave the methods) after one warm-up call, with
``torch.cuda.synchronize`` around ``time.perf_counter``; images/s = batch / time; "x bare" = time / bare time.
Then, for fp32 and bf16, the **largest batch that fits**: one SGM+MI step at batch 64, 128, ... until
``torch.cuda.OutOfMemoryError``, then a few bisection steps between the last fit and the first failure
(``cudnn.benchmark`` is on for the throughput rows, off for the search so that it does not re-tune every size).

The model is torchvision's ``resnet50(weights=None)`` when torchvision imports, else the same architecture defined
here (Bottleneck [3, 4, 6, 3], 1000 classes, 25.6M parameters, torchvision's module names and ``out += identity``),
random weights (speed does not depend on them), wrapped in ``advkit.models.Classifier`` (pixels in [0, 1],
ImageNet normalisation inside).

    python benchmarks/gpu_bench.py                 # the GPU run (benchmarks/gpu_check.sh installs and calls it)
    python benchmarks/gpu_bench.py --cpu-smoke     # same code path on CPU: ResNet-50 at 32 px, batch 4, 2 steps
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:
    import advkit  # noqa: F401
except ImportError:  # not installed: use the checkout's src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import advkit.attacks as A  # noqa: E402
from advkit.models import Classifier  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000
EPS = 16 / 255
GAMMA = 0.2
ATTACKS = ("ifgsm", "mi", "sgm+mi")


# --------------------------------------------------------------------------------------------------- the model


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block: 1x1 reduce, 3x3 (stride here), 1x1 expand; ``relu(out + identity)``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2016) with torchvision's layout and initialisation, for machines without torchvision."""

    def __init__(self, num_classes: int = NUM_CLASSES, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride,
                                                 bias=False), nn.BatchNorm2d(planes * Bottleneck.expansion))
        out = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        out += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet50(source: str) -> tuple[nn.Module, str]:
    """ResNet-50 with random weights: torchvision's when ``source`` allows and it imports, else :class:`ResNet50`."""
    if source in ("auto", "torchvision"):
        try:
            import torchvision  # type: ignore[import-untyped]

            return torchvision.models.resnet50(weights=None), f"torchvision {torchvision.__version__} resnet50"
        except Exception as e:  # ImportError, or a torchvision built for another torch
            if source == "torchvision":
                raise
            note = f"built-in ResNet50 (torchvision unavailable: {type(e).__name__}: {str(e)[:80]})"
            return ResNet50(), note
    return ResNet50(), "built-in ResNet50"


class Float32Logits(nn.Module):
    """Runs ``model`` under autocast and returns float32 logits (for ART, which converts outputs to numpy)."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device_type, self.dtype):
            return self.model(x).float()


# --------------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def autocast(device_type: str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast(device_type, dtype)``, or nothing for fp32 (``dtype=None``)."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type, dtype=dtype):
            yield


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Deadline:
    """A time budget for the whole run: sections that would start after it are skipped, with a printed note."""

    def __init__(self, budget_s: float | None) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return float("inf") if self.budget_s is None else self.budget_s - self.elapsed()


def bare_passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """``steps`` forward passes and input-gradient backward passes: the floor of a ``steps``-step attack."""
    for _ in range(steps):
        xr = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        torch.autograd.grad(loss, xr)


def create_attack(name: str, steps: int) -> A.Attack:
    kw: dict[str, Any] = {"eps": EPS, "steps": steps}
    if "sgm" in name:
        kw["gamma"] = GAMMA
    return A.create(name, **kw)


def art_status() -> tuple[bool, str]:
    try:
        import art  # type: ignore[import-untyped]
    except Exception as e:
        return False, f"not importable ({type(e).__name__}: {str(e)[:100]})"
    return True, f"adversarial-robustness-toolbox {art.__version__}"


def make_art_bim(model: nn.Module, device: torch.device, size: int, batch: int, steps: int) -> Callable[..., Any]:
    """ART's BIM on ``model`` with the same budget, step size, steps and batch; returns ``bim.generate``."""
    from art.attacks.evasion import BasicIterativeMethod  # type: ignore[import-untyped]
    from art.estimators.classification import PyTorchClassifier  # type: ignore[import-untyped]

    est = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, size, size),
                            nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0),
                            device_type="gpu" if device.type == "cuda" else "cpu")
    bim = BasicIterativeMethod(est, eps=EPS, eps_step=EPS / steps, max_iter=steps, batch_size=batch, verbose=False)
    return bim.generate


# --------------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    method: str
    precision: str
    batch: int
    seconds: float | None = None
    images_per_s: float | None = None
    vs_bare: float | None = None
    passes: str = ""
    note: str = ""
    times: list[float] = field(default_factory=list)


@dataclass
class Fit:
    precision: str
    largest_fit: int | None
    first_failure: int | None
    peak_gib_at_largest: float | None
    tried: list[tuple[int, str]] = field(default_factory=list)
    note: str = ""


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_rows(rows: list[Row]) -> None:
    print(f"  {'method':<22} {'median s':>9} {'images/s':>10} {'x bare':>7}  {'fwd/bwd':>7}  note")
    for r in rows:
        print(f"  {r.method:<22} {fmt(r.seconds, '9.3f')} {fmt(r.images_per_s, '10.1f')} "
              f"{fmt(r.vs_bare, '7.2f')}  {r.passes:>7}  {r.note}")


# --------------------------------------------------------------------------------------------------- sections


def throughput(model: nn.Module, device: torch.device, precision: str, size: int, batch: int, steps: int,
               repeats: int, with_art: bool) -> list[Row]:
    """One warm-up, then ``repeats`` interleaved rounds of every method; medians."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    calls: dict[str, Callable[[], Any]] = {}
    rows: dict[str, Row] = {}

    def add(name: str, fn: Callable[[], Any]) -> None:
        calls[name] = fn
        rows[name] = Row(name, precision, batch)

    add(f"bare fwd+bwd x{steps}", functools.partial(bare_passes, model, x, y, steps))
    for name in ATTACKS:
        add(f"advkit {name}", functools.partial(create_attack(name, steps), model, x, y))
    art_name = f"ART BIM ({steps} it)"
    if with_art:
        x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
        try:
            art_model = Float32Logits(model, device.type, dtype) if dtype is not None else model
            generate = make_art_bim(art_model, device, size, batch, steps)
            add(art_name, functools.partial(generate, x_np, y=y_np))
        except Exception as e:
            rows[art_name] = Row(art_name, precision, batch, note=f"ART set-up failed: {type(e).__name__}: {e}"[:160])

    passes: dict[str, str] = {}
    failed: set[str] = set()

    def call(name: str) -> float | None:
        sync(device)
        t = time.perf_counter()
        try:
            with autocast(device.type, dtype):
                out = calls[name]()
            sync(device)
        except Exception as e:  # one method failing (ART's bf16, out of memory) must not lose the other rows
            failed.add(name)
            first = (str(e).splitlines() or [""])[0]
            rows[name].note = f"failed: {type(e).__name__}: {first[:120]}"
            print(f"  {name}: {rows[name].note}", flush=True)
            return None
        if isinstance(out, A.AttackResult):
            passes[name] = f"{out.forward_passes}/{out.backward_passes}"
        return time.perf_counter() - t

    for name in list(calls):  # warm-up (cuDNN autotuning, SGM discovery, ART's first transfers)
        call(name)
    for _ in range(repeats):
        for name in calls:
            if name not in failed:
                dt = call(name)
                if dt is not None:
                    rows[name].times.append(dt)
    base = next(iter(calls))
    bare_s = statistics.median(rows[base].times) if rows[base].times else None
    for name, r in rows.items():
        if r.times:
            r.seconds = statistics.median(r.times)
            r.images_per_s = batch / r.seconds
            r.vs_bare = r.seconds / bare_s if bare_s else None
        r.passes = passes.get(name, f"{steps}/{steps}" if name == base else "")
    if with_art and art_name in rows and dtype is not None and not rows[art_name].note:
        rows[art_name].note = "ART has no bf16 mode: model wrapped to run under autocast, float32 logits out"
    calls.clear()  # the batch, ART's estimator and its copies go with the calls
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return list(rows.values())


def one_step_fits(model: nn.Module, device: torch.device, dtype: torch.dtype | None, size: int,
                  batch: int) -> tuple[bool, str, float | None]:
    """Whether one SGM+MI step at ``batch`` runs; (ok, outcome, peak GiB)."""
    atk = create_attack("sgm+mi", 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ok, outcome = True, "ran"
    try:
        x = torch.rand(batch, 3, size, size, device=device)
        y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        with autocast(device.type, dtype):
            atk(model, x, y)
        sync(device)
        del x, y
    except torch.cuda.OutOfMemoryError:
        ok, outcome = False, "out of memory"
    except RuntimeError as e:  # cuDNN / cuBLAS allocation failures surface as RuntimeError
        msg = str(e)
        if "out of memory" not in msg.lower() and "CUDNN_STATUS" not in msg and "CUBLAS_STATUS_ALLOC" not in msg:
            raise
        ok, outcome = False, f"failed: {msg.splitlines()[0][:100]}"
    # the exception (and the frames holding the batch) is gone here: release the memory before the next try
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ok, outcome, peak


def largest_batch(model: nn.Module, device: torch.device, precision: str, size: int, start: int, limit: int,
                  refine: int, deadline: Deadline, granule: int) -> Fit:
    """Double from ``start`` until a step fails or ``limit`` is passed, then ``refine`` bisection steps."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    fit = Fit(precision, None, None, None)
    b = start
    while b <= limit:
        if deadline.left() < 15:
            fit.note = "stopped early: time budget"
            return fit
        ok, outcome, peak = one_step_fits(model, device, dtype, size, b)
        fit.tried.append((b, outcome))
        print(f"    {precision} batch {b:>6}: {outcome}" + (f" (peak {peak:.1f} GiB)" if ok and peak else ""),
              flush=True)
        if not ok:
            fit.first_failure = b
            break
        fit.largest_fit, fit.peak_gib_at_largest = b, peak
        b *= 2
    else:
        fit.note = f"no failure up to {limit} (the search's cap)"
    for _ in range(refine):
        lo, hi = fit.largest_fit, fit.first_failure
        if lo is None or hi is None or hi - lo <= granule or deadline.left() < 15:
            break
        mid = (lo + hi) // 2 // granule * granule
        if mid <= lo:
            break
        ok, outcome, peak = one_step_fits(model, device, dtype, size, mid)
        fit.tried.append((mid, outcome))
        print(f"    {precision} batch {mid:>6}: {outcome}" + (f" (peak {peak:.1f} GiB)" if ok and peak else ""),
              flush=True)
        if ok:
            fit.largest_fit, fit.peak_gib_at_largest = mid, peak
        else:
            fit.first_failure = mid
    return fit


# --------------------------------------------------------------------------------------------- query attacks


class _RowCount(nn.Module):
    """Counts the image rows sent to ``model`` (every row is a query)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.model(x.float())


def query_throughput(model: nn.Module, device: torch.device, size: int, batch: int, budget: int,
                     with_art: bool) -> list[dict[str, Any]]:
    """Square Attack (L-inf, eps 4/255, p_init 0.05, ``budget`` queries per image) on ``batch`` images: queries
    per second for advkit and for ART's SquareAttack (``max_iter = budget``), fp32. Labels are the model's own
    predictions, so every image starts correctly classified."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    out = []
    counted = _RowCount(model)
    sq = A.create("square", eps=4 / 255, max_queries=budget, p_init=0.05)
    sync(device)
    t = time.perf_counter()
    r = sq(counted, x, y, generator=torch.Generator().manual_seed(0))
    sync(device)
    dt = time.perf_counter() - t
    out.append({"method": "advkit square", "queries": counted.rows, "seconds": dt, "queries_per_s": counted.rows / dt,
                "success": float(r.success.float().mean())})
    if with_art:
        import numpy as np
        from art.attacks.evasion import SquareAttack  # type: ignore[import-untyped]
        from art.estimators.classification import PyTorchClassifier  # type: ignore[import-untyped]

        counted = _RowCount(model)
        clf = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=(3, size, size),
                                nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0), device_type="gpu")
        art_sq = SquareAttack(clf, norm=np.inf, eps=4 / 255, max_iter=budget, p_init=0.05, batch_size=batch,
                              verbose=False)
        xn, yn = x.cpu().numpy(), np.eye(NUM_CLASSES, dtype=np.float32)[y.cpu().numpy()]
        t = time.perf_counter()
        adv = art_sq.generate(xn, y=yn)
        dt = time.perf_counter() - t
        with torch.no_grad():
            fooled = model(torch.from_numpy(adv).to(device)).argmax(1) != y
        out.append({"method": "ART SquareAttack", "queries": counted.rows, "seconds": dt,
                    "queries_per_s": counted.rows / dt, "success": float(fooled.float().mean())})
    for row in out:
        print(f"  {row['method']:<18} {row['queries']:>8} queries in {row['seconds']:.1f} s: "
              f"{row['queries_per_s']:.0f} queries/s; fooled {100 * row['success']:.1f}%", flush=True)
    return out


# --------------------------------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "device": str(device),
                           "advkit": str(Path(A.__file__).resolve().parents[1])}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["threads"] = torch.get_num_threads()
    env["art"] = art_status()[1]
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run the same code on CPU (one thread): 32 px, batch 4, 2 steps, batch search capped at 16")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=256, help="batch for the throughput rows")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row (the median is reported)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--model-source", choices=("auto", "torchvision", "builtin"), default="auto")
    ap.add_argument("--search-start", type=int, default=64)
    ap.add_argument("--search-limit", type=int, default=8192)
    ap.add_argument("--search-refine", type=int, default=3, help="bisection steps after the doubling")
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--query-budget", type=int, default=100, help="queries per image for the Square rows (0: skip)")
    ap.add_argument("--no-search", action="store_true")
    ap.add_argument("--budget-s", type=float, default=None, help="skip sections that would start after this")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # a code-path check: one thread keeps it steady on a busy machine
        args.size, args.batch, args.steps = 32, 4, 2
        args.search_start, args.search_limit, args.search_refine = 4, 16, 0
        args.query_budget = min(args.query_budget, 5)
        granule = 1
    else:
        if not torch.cuda.is_available():
            print("no CUDA device visible to torch; run with --cpu-smoke to check the code path on CPU")
            return 2
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        granule = 32
    deadline = Deadline(args.budget_s)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in ("fp32", "bf16"):
            ap.error(f"unknown precision {p!r} (fp32, bf16)")

    torch.manual_seed(0)
    net, model_note = build_resnet50(args.model_source)
    model = Classifier(net, IMAGENET_MEAN, IMAGENET_STD, (3, args.size, args.size), NUM_CLASSES,
                       name="resnet50-random").freeze().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    env = environment(device)
    env.update(model=model_note, params=n_params)
    print("environment:")
    for k, v in env.items():
        print(f"  {k}: {v}")
    with_art, art_note = art_status()
    if args.no_art:
        with_art, art_note = False, "skipped (--no-art)"
    if not with_art:
        print(f"note: ART {art_note}: the ART BIM rows are skipped")

    probe = create_attack("sgm+mi", 1)(model, torch.rand(2, 3, args.size, args.size, device=device),
                                       torch.zeros(2, dtype=torch.long, device=device))
    sgm = probe.info.get("sgm", probe.info)
    n_conns = sgm.get("connections") if isinstance(sgm, dict) else None
    if isinstance(n_conns, (list, tuple)):
        n_conns = len(n_conns)
    print(f"SGM on this model: {n_conns} skip connections found (a ResNet-50 has 16 residual blocks); "
          f"attack info: {probe.info}")
    env["sgm_connections"] = n_conns

    results: dict[str, Any] = {"environment": env, "throughput": [], "largest_batch": [], "skipped": []}
    all_rows: list[Row] = []
    for p in precisions:
        if deadline.left() < 60:
            print(f"\n== {p}: throughput skipped (time budget: {deadline.left():.0f} s left) ==")
            results["skipped"].append(f"throughput {p}")
            continue
        print(f"\n== {p} throughput: batch {args.batch}, {args.size} px, {args.steps} steps, eps 16/255, "
              f"median of {args.repeats} after one warm-up ==", flush=True)
        t = time.perf_counter()
        rows = throughput(model, device, p, args.size, args.batch, args.steps, args.repeats, with_art)
        print_rows(rows)
        print(f"  ({time.perf_counter() - t:.1f} s for this section)", flush=True)
        all_rows += rows
        results["throughput"] += [asdict(r) for r in rows]

    if args.query_budget > 0 and deadline.left() >= 60:
        qb = min(args.batch, 64)
        print(f"\n== query attacks: Square L-inf, {qb} images, {args.query_budget} queries per image, fp32 ==",
              flush=True)
        results["query"] = query_throughput(model, device, args.size, qb, args.query_budget, with_art)
    elif args.query_budget > 0:
        results["skipped"].append("query attacks")

    fits: list[Fit] = []
    if not args.no_search:
        # cuDNN's autotuning would run again for every new batch size: heuristics keep the search short
        torch.backends.cudnn.benchmark = False
        for p in precisions:
            if deadline.left() < 30:
                print(f"\n== {p}: largest-batch search skipped (time budget) ==")
                results["skipped"].append(f"largest batch {p}")
                continue
            print(f"\n== {p} largest batch: one SGM+MI step at {args.size} px, doubling from {args.search_start} "
                  f"(cap {args.search_limit}), then {args.search_refine} bisection steps, cudnn.benchmark off ==",
                  flush=True)
            if device.type == "cpu":
                print("    (CPU: no out-of-memory error to find; the search only exercises the code up to the cap)")
            fit = largest_batch(model, device, p, args.size, args.search_start, args.search_limit,
                                args.search_refine, deadline, granule)
            fits.append(fit)
            results["largest_batch"].append(asdict(fit))

    print("\n== summary (images/s; x bare = attack time / bare-pass time) ==")
    for p in precisions:
        rows = [r for r in all_rows if r.precision == p]
        if rows:
            parts = [f"{r.method} {fmt(r.images_per_s, '.0f')}"
                     + (f" ({r.vs_bare:.2f}x)" if r.vs_bare is not None else "") for r in rows]
            print(f"  {p}: " + "; ".join(parts))
    for f in fits:
        peak = f" ({f.peak_gib_at_largest:.1f} GiB peak)" if f.peak_gib_at_largest else ""
        fail = f", first failure at {f.first_failure}" if f.first_failure else ""
        print(f"  {f.precision} largest batch that ran: {f.largest_fit}{peak}{fail}"
              + (f"; {f.note}" if f.note else ""))
    if results["skipped"]:
        print(f"  skipped: {', '.join(results['skipped'])}")
    print(f"  total {deadline.elapsed():.1f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"  results also in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
