"""``advkit train-generator``: train a perturbation generator against source models and save it with its card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advkit.cli.common import console, fail, parse_number

__all__ = ["train_generator", "train_uap"]


def _check_out(out: Path, force: bool) -> None:
    """Exit 2 unless ``out`` is a ``.safetensors`` path that is free (or ``--force`` was given)."""
    if out.suffix != ".safetensors":
        fail(f"--out must name a .safetensors file (the card is written beside it), got {out}")
    if out.exists() and not force:
        fail(f"{out} already exists; pass --force to overwrite it or choose another --out")


def train_generator(
    source: Annotated[list[str], typer.Option(help="Source model(s) the generator learns to fool (repeatable): zoo "
                                                   "name or .safetensors path.")],
    out: Annotated[Path, typer.Option(help="Weights file to write (.safetensors; the card goes beside it).")],
    dataset: Annotated[str, typer.Option(help="Training domain (its train split).")] = "fashion-mnist",
    eps: Annotated[str, typer.Option(help="L-inf budget in pixel units of [0,1]; fractions like 16/255 "
                                          "accepted.")] = "0.1",
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 1,
    loss: Annotated[str, typer.Option(help="relativistic (Naseer et al. 2019) or ce (GAP, without the "
                                           "relativistic term).")] = "relativistic",
    ngf: Annotated[int, typer.Option(help="Generator width (filters of its first convolution).")] = 16,
    blocks: Annotated[int, typer.Option(help="Residual blocks of the generator.")] = 6,
    batch_size: Annotated[int, typer.Option(help="Images per Adam step.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate (betas 0.5, 0.999).")] = 2e-4,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, shuffling and dropout.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Train on the first N training images only.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing generator at --out.")] = False,
) -> None:
    """Train a perturbation generator (Naseer et al. 2019) against --source models; use it as generator:PATH."""
    from advkit.models.generator import save_generator
    from advkit.train.generator import train_generator as train

    _check_out(out, force)
    eps_v = parse_number(eps, "--eps")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(f"generator vs {', '.join(source)}", total=None, loss="")
        try:
            gen, card = train(source, dataset, eps=eps_v, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                              ngf=ngf, blocks=blocks, seed=seed, limit=limit, out=str(out),
                              on_step=lambda s, t, v: bar.update(task, completed=s, total=t, loss=f"loss {v:.3f}"))
        except ValueError as e:
            fail(str(e))
    path = save_generator(gen, out, card)
    rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in card["fooling_rate_test"].items())
    console.print(f"generator ({card['loss']} loss, eps {card['eps']:g}, {epochs} epoch(s) on {card['train_images']} "
                  f"{dataset} images, {card['train_seconds']:.0f}s): fools {rates} of the first "
                  f"{card['fooling_rate_images']} test images")
    console.print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) and its card; attack with generator:{path}")


def train_uap(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="Source model: zoo name or .safetensors path.")],
    out: Annotated[Path, typer.Option(help="File to write (.safetensors; the card goes beside it).")],
    dataset: Annotated[str, typer.Option(help="Images the perturbation is computed on (train split).")]
    = "fashion-mnist",
    eps: Annotated[str, typer.Option(help="Radius xi in pixel units of [0,1] (L-inf, or L2 with --norm l2); "
                                          "fractions like 16/255 accepted.")] = "0.1",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    images: Annotated[int, typer.Option(help="Training images used (the paper: 10 per class suffice).")] = 1000,
    max_passes: Annotated[int, typer.Option(help="Passes over the images at most.")] = 10,
    delta: Annotated[float, typer.Option(help="Stop once 1 - delta of the images are fooled.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the image order.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file at --out.")] = False,
) -> None:
    """Compute a universal adversarial perturbation (Moosavi-Dezfooli et al. 2017) for --source; use as uap:PATH."""
    import time

    import torch

    import advkit
    from advkit.attacks.deepfool import universal_perturbation
    from advkit.cli.common import invocation
    from advkit.data import load as load_data
    from advkit.models import load as load_model
    from advkit.models.universal import save_universal

    _check_out(out, force)
    if norm not in ("linf", "l2"):
        fail(f"--norm must be linf or l2, got {norm!r}")
    xi = parse_number(eps, "--eps")
    if xi <= 0 or (norm == "linf" and xi > 1):
        fail(f"eps must be in (0, 1] for an L-inf radius in pixel units (e.g. 0.1), or > 0 for an L2 one; got {xi}")
    if images < 1 or max_passes < 1:
        fail("--images and --max-passes must be >= 1")
    try:
        model = load_model(source, dataset=dataset)
        data = load_data(dataset, "train", limit=images)
        t0 = time.perf_counter()
        with console.status("computing the universal perturbation") as status:
            v, fooling = universal_perturbation(
                model, data.x, xi=xi, norm=norm, delta=delta, max_passes=max_passes, seed=seed,
                on_pass=lambda p, r: status.update(f"pass {p}: fools {100 * r:.1f}% of the images"))
        test = load_data(dataset, "test", limit=1000)
        with torch.no_grad():
            clean = model(test.x).argmax(1)
            test_rate = float((model((test.x + v).clamp(0, 1)).argmax(1) != clean).float().mean())
    except ValueError as e:
        fail(str(e))
    card = {"name": f"uap-{model.name}", "paper": "Moosavi-Dezfooli et al. 2017", "dataset": dataset,
            "data_note": data.note, "images": len(data.x), "eps": xi, "norm": norm, "delta": delta,
            "max_passes": max_passes, "seed": seed,
            "source": {"spec": source, "name": model.name, "sha256": model.card.get("sha256")},
            "fooling_rate_train_per_pass": [round(r, 4) for r in fooling],
            "fooling_rate_test": round(test_rate, 4), "fooling_rate_images": len(test.x),
            "seconds": round(time.perf_counter() - t0, 1), "advkit_version": advkit.__version__,
            "command": invocation(ctx)}
    path = save_universal(v, out, card)
    console.print(f"universal perturbation for {model.name} (eps {xi:g} {norm}, {len(fooling)} pass(es) over "
                  f"{len(data.x)} images): the kept pass fools {100 * max(fooling):.1f}% of them and "
                  f"{100 * test_rate:.1f}% of the first {len(test.x)} test images; saved {path}; attack with "
                  f"uap:{path}")
