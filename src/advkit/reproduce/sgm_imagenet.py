"""The SGM authors' ImageNet protocol (Wu et al., ICLR 2020), for users who have ImageNet and the weights.

5,000 ImageNet validation images (the first 5,000 in file order), eps 16/255, 10 steps of 2/255, gamma 0.2 for the
ResNet-152 source and 0.5 for the DenseNet-201 source; targets VGG19 (BN), DenseNet-201 / ResNet-152 and
SENet-154 (timm ``legacy_senet154``); success over all images. SGM runs both as the paper's formula (``sgm``) and
as the authors' released code (``sgm-orig``, ``sgm_variant: original``), which the published numbers come from.

The images are read as the dataset ``imagenet``: class folders named by WordNet id (``ROOT/val/n01440764/``),
or flat images with a ``filename wnid`` labels file, labelled with ImageNet's own class index however few classes
the folder holds (see :mod:`advkit.data.imagefolder`).

``reproduce_sgm_imagenet(dry_run=True)`` only validates the experiment and says what is missing on this machine
(the validation folder and its labels, torchvision / timm, the weights in their caches); it never raises for a
missing piece. With ``dry_run=False`` it runs the study when nothing is missing.

``smoke=True`` is the same pipeline on a few images (8 by default) with random weights (``NAME@random``, seeded
from each name) and one seed: a check that torchvision, timm, the data folder and the attacks work together,
before downloading the weights and ImageNet. Its numbers mean nothing.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advkit._files import atomic_write_text
from advkit.data import IMAGENET_WNIDS, DataError, DataNotFoundError, index_folder
from advkit.data.imagefolder import resolve_split
from advkit.progress import ProgressFn
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.study.config import ConfigError, load_config

log = logging.getLogger(__name__)

__all__ = ["SGM_IMAGENET", "ImagenetSettings", "imagenet_config", "reproduce_sgm_imagenet"]

# torchvision weights files (IMAGENET1K_V1, the weights the authors used) and the timm hub repository.
TORCHVISION_FILES = {"resnet152": "resnet152-394f9c45.pth", "densenet201": "densenet201-c1103571.pth",
                     "vgg19_bn": "vgg19_bn-c79401a0.pth"}
TIMM_REPOS = {"legacy_senet154": "models--timm--legacy_senet154.in1k"}
SMOKE_N = 8


def imagenet_config(data_dir: str | Path | None = None, n: int = 5000,
                    seeds: list[int] | None = None, *, smoke: bool = False) -> dict[str, Any]:
    """The authors' protocol as an experiment dict for :func:`advkit.study.run_study`.

    Args:
        data_dir: the ImageNet root (``ROOT/val``).
        n: images.
        seeds: seeds (default: 5; the smoke run: one).
        smoke: every model with random weights (``NAME@random``), for a run without downloaded weights.
    """
    suffix = "@random" if smoke else ""
    sources = ["torchvision:resnet152", "torchvision:densenet201"]
    targets = ["torchvision:vgg19_bn", "torchvision:densenet201", "torchvision:resnet152", "timm:legacy_senet154"]
    notes = ["The authors' success is 1 - top-1 accuracy over all 5,000 images (not only those each target "
             "classified correctly); 'PGD' in the paper is I-FGSM without random start."]
    if smoke:
        notes.insert(0, f"Smoke run: random weights (seeded from each model's name), {n} images, one seed. It checks "
                        f"that the pipeline runs; its numbers mean nothing.")
    return {
        "title": "SGM reproduction on ImageNet (Wu et al., ICLR 2020 protocol)" + (": smoke run" if smoke else ""),
        "dataset": "imagenet", "data_dir": None if data_dir is None else str(data_dir),
        # only the first n images in file order are decoded: the ones the sample takes (order first, all images)
        "data_options": {"size": 224, "resize": 256, "limit": n, "subset": "first"},
        "sources": [m + suffix for m in sources], "targets": [m + suffix for m in targets],
        "attacks": ["ifgsm", "ti", "mi", "di", "sgm", {"name": "sgm", "label": "sgm-orig",
                                                         "settings": {"sgm_variant": "original"}}, "sgm+mi", "sgm+di"],
        "eps": ["16/255"], "steps": 10, "alpha": "2/255", "gamma": {"residual": 0.2, "dense": 0.5},
        "seeds": seeds or ([0] if smoke else [0, 1, 2, 3, 4]), "baseline": "ifgsm", "batch_size": min(50, n),
        "sample": {"n": n, "pool": n, "split": "val", "only_correct": False, "order": "first", "seed": 0},
        "notes": notes,
    }


def _check_import(package: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(package)
    except ImportError as e:
        return False, f"not installed ({e}); `pip install {package}` (torchvision must match torch's build)"
    except Exception as e:  # a wheel built for another torch raises RuntimeError / OSError on import
        return False, f"installed but fails to import ({type(e).__name__}: {e}); install the build matching torch"
    return True, f"version {getattr(mod, '__version__', '?')}"


def _check_data(data_dir: str | Path | None, n: int) -> list[dict[str, Any]]:
    """The folder holds ``n`` images, and their labels map to ImageNet's class index."""
    if data_dir is None:
        env = os.environ.get("ADVKIT_DATA")
        data_dir = Path(env) / "imagenet" if env else None
    layouts = ("ROOT/val/WNID/*.JPEG class folders, or ROOT/val/*.JPEG with ROOT/val_labels.txt ('filename wnid' "
               "lines) or ROOT/LOC_val_solution.csv")
    if data_dir is None or not Path(data_dir).is_dir():
        return [{"item": "ImageNet validation folder", "ok": False,
                 "detail": f"{data_dir or 'no data_dir given'}: not found; pass data_dir=ROOT ({layouts})"}]
    try:
        val = resolve_split(Path(data_dir), "val")
    except DataNotFoundError as e:
        return [{"item": "ImageNet validation folder", "ok": False, "detail": str(e)}]
    count = 0
    for _dirpath, _dirs, names in os.walk(val, followlinks=True):
        count += sum(f.lower().endswith((".jpeg", ".jpg", ".png")) for f in names)
        if count >= n:
            break
    checks = [{"item": "ImageNet validation folder", "ok": count >= n,
               "detail": f"{val}: {count}{'+' if count >= n else ''} images ({n:,} needed)"}]
    try:
        files, labels, _ = index_folder(val, classes=IMAGENET_WNIDS)
    except (DataError, DataNotFoundError) as e:
        return [*checks, {"item": "labels", "ok": False, "detail": f"{e} Expected: {layouts}."}]
    classes = len(set(labels))
    folders = any(d.is_dir() and not d.name.startswith(".") for d in val.iterdir())
    how = "class folders named by WordNet id" if folders else "the labels file"
    return [*checks, {"item": "labels", "ok": True,
                      "detail": f"{len(files)} images in {classes} of the 1,000 ImageNet classes, from {how}, "
                                f"labelled with ImageNet's class index"}]


def _check_weights() -> list[dict[str, Any]]:
    import torch

    out = []
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name, fn in TORCHVISION_FILES.items():
        ok = (hub / fn).is_file()
        out.append({"item": f"torchvision {name} weights", "ok": ok,
                    "detail": f"{hub / fn}" + ("" if ok else " missing (download it where there is network and copy "
                                                            "it there, or set TORCH_HOME)")})
    hf = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" /
                                                      "huggingface") / "hub")
    for name, repo in TIMM_REPOS.items():
        ok = (hf / repo).is_dir()
        out.append({"item": f"timm {name} weights", "ok": ok,
                    "detail": f"{hf / repo}" + ("" if ok else " missing (fetch timm/legacy_senet154.in1k into the "
                                                             "Hugging Face cache, set HF_HUB_OFFLINE=1)")})
    return out


def reproduce_sgm_imagenet(dry_run: bool = True, data_dir: str | Path | None = None, out: str | Path | None = None,
                           *, n: int | None = None, seeds: list[int] | None = None, smoke: bool = False,
                           force: bool = False, backend: str = "local", address: str | None = None,
                           progress: ProgressFn | None = None, command: str = "") -> dict[str, Any]:
    """Validate (and, without ``dry_run``, run) the authors' ImageNet protocol.

    Args:
        dry_run: only check the config and what this machine has; never raises for a missing piece.
        data_dir: the ImageNet folder (``ROOT/val``); default ``$ADVKIT_DATA/imagenet``.
        out: the run directory (the dry run writes ``dry_run.json`` there when given).
        n: images (the authors: 5,000; the smoke run: 8).
        seeds: seeds (default 5; the smoke run: one).
        smoke: random weights (``NAME@random``) and few images: the pipeline without the weights' downloads.
        force, backend, address, progress, command: as for :func:`advkit.study.run_study`.

    Returns:
        ``{"config": dict, "checks": [{"item", "ok", "detail"}], "ready": bool, "missing": [str]}`` and, after a
        real run, ``"run_dir"``.

    Raises:
        ValueError: ``dry_run=False`` and something is missing (listing all of it).
    """
    n = n if n is not None else SMOKE_N if smoke else 5000
    if n < 1:
        raise ValueError(f"n: give at least one image, got {n}")
    cfg = imagenet_config(data_dir, n, seeds, smoke=smoke)
    checks: list[dict[str, Any]] = []
    try:
        load_config(cfg)
        checks.append({"item": "experiment config", "ok": True, "detail": "valid"})
    except ConfigError as e:
        checks.append({"item": "experiment config", "ok": False, "detail": "; ".join(e.problems)})
    for pkg in ("torchvision", "timm"):
        ok, detail = _check_import(pkg)
        checks.append({"item": f"package {pkg}", "ok": ok, "detail": detail})
    checks += _check_data(data_dir, n)
    if smoke:
        checks.append({"item": "weights", "ok": True, "detail": "none needed: random weights, seeded from each name"})
    else:
        checks += _check_weights()
    missing = [f"{c['item']}: {c['detail']}" for c in checks if not c["ok"]]
    result: dict[str, Any] = {"config": cfg, "checks": checks, "ready": not missing, "missing": missing}
    if dry_run:
        if out is not None:
            atomic_write_text(Path(out) / "dry_run.json", json.dumps(result, indent=2, default=str) + "\n")
        for m in missing:
            log.warning("missing: %s", m)
        return result
    if missing:
        raise ValueError("cannot run the ImageNet reproduction; missing:\n  " + "\n  ".join(missing))
    if out is None:
        raise ValueError("out: give a run directory for the ImageNet reproduction")
    from advkit.report.run_report import write_report
    from advkit.reproduce.sgm import PAPER
    from advkit.study.runner import run_study

    if not smoke:  # the paper's numbers beside random weights' would only mislead
        cfg["reference"] = {
            "citation": "Wu et al., ICLR 2020, mean of 5 runs", "baseline": "ifgsm", "eps": "16/255",
            "rows": [{"paper_source": s, "paper_target": t, "attack": a, "value": v,
                      "source": "torchvision:" + ("resnet152" if s.startswith("ResNet") else "densenet201"),
                      "target": {"VGG19": "torchvision:vgg19_bn", "DenseNet-201": "torchvision:densenet201",
                                 "ResNet-152": "torchvision:resnet152", "SE154": "timm:legacy_senet154"}[t]}
                     for s, t, a, v in PAPER]}
    run_study(cfg, out, force=force, backend=backend, address=address, progress=progress, command=command)
    write_report(out)
    result["run_dir"] = Path(out)
    return result


@dataclass(frozen=True)
class ImagenetSettings:
    """The ImageNet SGM reproduction's settings.

    Attributes:
        dry_run: only check the set-up and list what is missing (default: yes, except with ``smoke``).
        smoke: the pipeline on a few images with random weights and one seed; its numbers mean nothing.
        data_dir: the ImageNet root (``ROOT/val``); default ``$ADVKIT_DATA/imagenet``.
        n: images (default 5,000; smoke: 8).
        seeds: seeds (default 5; smoke: one).
        backend: ``local`` or ``ray``; ``address``: the Ray cluster.
    """

    dry_run: bool | None = None
    smoke: bool = False
    data_dir: Path | None = None
    n: int | None = None
    seeds: tuple[int, ...] = ()
    backend: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be greater than or equal to 1 (images), got {self.n}; --set n=5000")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}; --set backend=local")

    @property
    def check_only(self) -> bool:
        """Whether only the set-up is checked."""
        return self.dry_run if self.dry_run is not None else not self.smoke


def _lines(r: dict[str, Any]) -> list[str]:
    return [f"{'ok' if c['ok'] else 'missing':>8}  {c['item']}: {c['detail']}" for c in r["checks"]]


def _check(s: ImagenetSettings, out: Path | None) -> Outcome | None:
    if not s.check_only:
        return None
    r = reproduce_sgm_imagenet(True, s.data_dir, out, n=s.n, seeds=list(s.seeds) or None, smoke=s.smoke)
    return Outcome(None, _lines(r) + ["ready to run" if r["ready"] else f"{len(r['missing'])} item(s) missing; "
                                                                       f"nothing was run"], r)


def _work(out: Path, s: ImagenetSettings, run: RunContext) -> Outcome:
    r = reproduce_sgm_imagenet(False, s.data_dir, out, n=s.n, seeds=list(s.seeds) or None, smoke=s.smoke,
                               force=run.force, backend=s.backend, address=s.address, progress=run.progress,
                               command=run.command)
    done = "finished" + (" (smoke run: random weights, the numbers mean nothing)" if s.smoke else "")
    return Outcome(None, [*_lines(r), done], r)


SGM_IMAGENET = register(Reproduction(
    "sgm-imagenet", "The SGM authors' ImageNet protocol (5,000 val images, eps 16/255, 10 steps); by default only "
                    "checks the set-up, smoke=true runs it on a few images with random weights.",
    ImagenetSettings, {"n": 500}, _work, runtime=("backend", "address"), check=_check))
