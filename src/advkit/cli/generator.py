"""``advkit train-generator``: train a perturbation generator against source models and save it with its card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import bars, console, fail, parse_number

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
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 1,
    loss: Annotated[str, typer.Option(help="relativistic (Naseer et al. 2019), ce (GAP, without the relativistic "
                                           "term) or advgan (Xiao et al. 2018: a discriminator, the C&W margin and "
                                           "a hinge on the L2 norm).")] = "relativistic",
    ngf: Annotated[int, typer.Option(min=1, help="Generator width (filters of its first convolution).")] = 16,
    blocks: Annotated[int, typer.Option(min=1, help="Residual blocks of the generator.")] = 6,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per Adam step.")] = 64,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (betas 0.5, 0.999); default 2e-4, advgan "
                                                  "1e-3.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the initialisation, shuffling and dropout.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Train on the first N training images only.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing generator at --out.")] = False,
    cross_domain: Annotated[bool, typer.Option(help="Train on --dataset images against sources trained on another "
                                                    "dataset of the same image size (Naseer et al.'s cross-domain "
                                                    "setting); refused otherwise.")] = False,
    gan_alpha: Annotated[float | None, typer.Option(help="advgan: weight alpha of the discriminator's loss "
                                                         "L_GAN (default 1).")] = None,
    hinge_beta: Annotated[float | None, typer.Option(help="advgan: weight beta of the hinge on ||delta||_2 "
                                                          "(default 10).")] = None,
    hinge_bound: Annotated[str | None, typer.Option(help="advgan: the hinge's L2 bound c in pixel units (default "
                                                         "eps * sqrt(C*H*W) / 2).")] = None,
    gan_loss: Annotated[str | None, typer.Option(help="advgan: bce (the paper's) or lsgan (least squares).")] = None,
    target: Annotated[int | None, typer.Option(min=0, help="advgan: train a targeted generator toward this "
                                                           "class.")] = None,
) -> None:
    """Train a perturbation generator (Naseer et al. 2019; AdvGAN with --loss advgan) against --source models; use
    it as generator:PATH."""
    from advkit.models.generator import save_generator
    from advkit.train.generator import train_generator as train

    _check_out(out, force)
    eps_v = parse_number(eps, "--eps")
    advgan: dict[str, object] = {k: v for k, v in (
        ("alpha", gan_alpha), ("beta", hinge_beta), ("gan_loss", gan_loss), ("target", target),
        ("bound", None if hinge_bound is None else parse_number(hinge_bound, "--hinge-bound"))) if v is not None}
    if advgan and loss != "advgan":
        flags = {"alpha": "--gan-alpha", "beta": "--hinge-beta", "bound": "--hinge-bound", "gan_loss": "--gan-loss",
                 "target": "--target"}
        fail(f"{', '.join(flags[k] for k in advgan)} apply to --loss advgan only (AdvGAN, Xiao et al. 2018): add "
             f"--loss advgan or drop them")
    with bars(transient=True) as bar:  # stage "generator vs SOURCES"
        gen, card = train(source, dataset, eps=eps_v, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                          ngf=ngf, blocks=blocks, seed=seed, limit=limit, out=str(out), progress=bar,
                          cross_domain=cross_domain, advgan=advgan if loss == "advgan" else None)
    path = save_generator(gen, out, card)
    rates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in card["fooling_rate_test"].items())
    console.print(f"generator ({card['loss']} loss, eps {card['eps']:g}, {epochs} epoch(s) on {card['train_images']} "
                  f"{dataset} images, {card['train_seconds']:.0f}s): fools {rates} of "
                  f"{card['fooling_rate_images']} test images")
    console.print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) and its card; attack with generator:{path}")


def train_uap(
    source: Annotated[str, typer.Option(help="Source model: zoo name or .safetensors path.")],
    out: Annotated[Path, typer.Option(help="File to write (.safetensors; the card goes beside it).")],
    dataset: Annotated[str, typer.Option(help="Images the perturbation is computed on (train split).")]
    = "fashion-mnist",
    eps: Annotated[str, typer.Option(help="Radius xi in pixel units of [0,1] (L-inf, or L2 with --norm l2); "
                                          "fractions like 16/255 accepted.")] = "0.1",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    images: Annotated[int, typer.Option(min=1, help="Training images used (the paper: 10 per class suffice).")] = 1000,
    max_passes: Annotated[int, typer.Option(min=1, help="Passes over the images at most.")] = 10,
    delta: Annotated[float, typer.Option(help="Stop once 1 - delta of the images are fooled.")] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the image order (and of the images with --subset random).")]
    = 0,
    subset: Annotated[str, typer.Option(help="first (the first --images training images) or random (drawn with "
                                             "--seed).")] = "first",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file at --out.")] = False,
    cross_domain: Annotated[bool, typer.Option(help="Compute it on --dataset images for a source trained on another "
                                                    "dataset of the same image size; refused otherwise.")] = False,
) -> None:
    """Compute a universal adversarial perturbation (Moosavi-Dezfooli et al. 2017) for --source; use as uap:PATH."""
    from advkit.models.universal import save_universal
    from advkit.train.universal import check_uap_settings
    from advkit.train.universal import train_uap as compute

    _check_out(out, force)
    xi = parse_number(eps, "--eps")
    check_uap_settings(xi, norm, images, max_passes, delta)
    if subset not in ("first", "random"):
        raise ValueError(f"--subset must be first or random, got {subset!r}")
    with bars(transient=True, every=0) as bar:  # stage "universal perturbation: passes"
        v, card = compute(source, dataset, eps=xi, norm=norm, images=images, max_passes=max_passes, delta=delta,
                          seed=seed, subset=subset, out=str(out), progress=bar, cross_domain=cross_domain)
    path = save_universal(v, out, card)
    fooling = card["fooling_rate_train_per_pass"]
    console.print(f"universal perturbation for {card['source']['name']} (eps {xi:g} {norm}, {len(fooling)} pass(es) "
                  f"over {card['images']} images): the kept pass fools {100 * max(fooling):.1f}% of them and "
                  f"{100 * card['fooling_rate_test']:.1f}% of {card['fooling_rate_images']} class-balanced test "
                  f"images; "
                  f"saved {path}; attack with uap:{path}")
