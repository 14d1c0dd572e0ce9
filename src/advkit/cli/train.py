"""``advkit train``: deterministic training of an architecture into a checkpoint with its model card."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import bars, console, fail, invocation, parse_number

__all__ = ["train"]


def train(
    ctx: typer.Context,
    arch: Annotated[str, typer.Argument(help="Architecture name (see `advkit models list`).")],
    dataset: Annotated[str, typer.Option(help="Dataset to train on.")] = "fashion-mnist",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 5,
    lr: Annotated[float, typer.Option(help="Learning rate: the peak of the one-cycle schedule, or the constant rate "
                                           "(SGD).")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per optimiser step.")] = 128,
    momentum: Annotated[float, typer.Option(help="SGD momentum (the JSMA paper's LeNet: 0.5).")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay (0 turns it off).")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="one-cycle, or constant (the JSMA paper's LeNet).")] = "one-cycle",
    nesterov: Annotated[bool, typer.Option(help="Nesterov momentum (the papers' recipes use plain momentum: "
                                                "--no-nesterov).")] = True,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast where the CPU has AVX512-BF16 or AMX (--no-bf16: "
                                            "float32 throughout).")] = True,
    seed: Annotated[int, typer.Option(min=0, help="Seed for initialisation, shuffling and augmentation.")] = 0,
    augment: Annotated[bool, typer.Option(help="Random crops with padding and flips.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write NAME.safetensors and its JSON card here "
                                                     "(default: ./ARCH.safetensors).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="A folder searched first for the dataset.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    adversarial: Annotated[str | None, typer.Option(
        help="Adversarial training: fgsm (Goodfellow et al. 2015), pgd (Madry et al. 2018), ensemble (Tramer et "
             "al. 2018: FGSM from --adversarial-static models too) or generator:PATH (train on a trained generator's "
             "samples, e.g. an AdvGAN one; eps from its card). Default fgsm when --adversarial-eps is given.")
    ] = None,
    adversarial_eps: Annotated[str | None, typer.Option(
        help="Adversarial training's L-inf radius in pixel units of [0,1] (fgsm: 0.25, pgd and ensemble: 0.3 by "
             "default); fractions like 16/255 accepted.")] = None,
    adversarial_alpha: Annotated[float | None, typer.Option(
        help="Weight of the clean term in alpha*J(x,y) + (1-alpha)*J(x_adv,y) (fgsm and ensemble: 0.5; pgd: 0, "
             "Madry et al.'s adversarial loss alone).")] = None,
    adversarial_steps: Annotated[int | None, typer.Option(
        min=1, help="pgd: PGD steps per training batch (Madry et al. on MNIST: 40).")] = None,
    adversarial_step_size: Annotated[str | None, typer.Option(
        help="pgd: step size in pixel units (Madry et al. on MNIST: 0.01).")] = None,
    adversarial_random_init: Annotated[bool, typer.Option(
        help="pgd: start from a random point in the eps ball.")] = True,
    adversarial_static: Annotated[str | None, typer.Option(
        help="ensemble: the static pre-trained models, comma-separated zoo names or paths.")] = None,
    adversarial_craft: Annotated[str, typer.Option(
        help="eval: craft with dropout off (default); train: craft through the training-mode network.")] = "eval",
    train_split: Annotated[str, typer.Option(
        help="Rows trained on: train, or a range such as 'train[:50000]' (the JSMA paper's LeNet).")] = "train",
    val_split: Annotated[str | None, typer.Option(
        help="Rows held out and scored for the card's validation accuracy, e.g. 'train[50000:]'.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, or auto (a GPU when one is visible).")] = "cpu",
) -> None:
    """Train an architecture deterministically and write a safetensors checkpoint with its model card."""
    from advkit.train import Recipe
    from advkit.train import train as train_model

    out = out or Path(f"{arch}.safetensors")
    if out.suffix != ".safetensors":
        fail(f"--out must end in .safetensors, got {out}")
    if out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it")
    adv_spec: dict[str, object] | None = None
    if adversarial is None and adversarial_eps is None:
        # by the source's name: typer >= 0.28 bundles its own click, whose ParameterSource is another class
        given = [f"--{n.replace('_', '-')}" for n in ("adversarial_static", "adversarial_alpha", "adversarial_steps",
                                                      "adversarial_step_size", "adversarial_craft",
                                                      "adversarial_random_init")
                 if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"]
        if given:
            several = len(given) > 1
            fail(f"{', '.join(given)} {'are settings' if several else 'is a setting'} of adversarial training, which "
                 f"is off without --adversarial: add --adversarial "
                 f"{'ensemble' if '--adversarial-static' in given else 'fgsm|pgd|ensemble|generator:PATH'} (or drop "
                 f"{'them' if several else 'it'})")
    if adversarial is not None or adversarial_eps is not None:
        adv_spec = {"attack": adversarial or "fgsm", "craft": adversarial_craft}
        if adversarial_eps is not None:
            adv_spec["eps"] = parse_number(adversarial_eps, "--adversarial-eps")
        if adversarial_alpha is not None:
            adv_spec["alpha"] = adversarial_alpha
        if adv_spec["attack"] == "pgd":
            if adversarial_steps is not None:
                adv_spec["steps"] = adversarial_steps
            if adversarial_step_size is not None:
                adv_spec["step_size"] = parse_number(adversarial_step_size, "--adversarial-step-size")
            adv_spec["random_init"] = adversarial_random_init
        elif adversarial_steps is not None or adversarial_step_size is not None:
            fail("--adversarial-steps and --adversarial-step-size apply to --adversarial pgd only")
        if adv_spec["attack"] == "ensemble":
            adv_spec["static"] = adversarial_static or ""
        elif adversarial_static is not None:
            fail("--adversarial-static applies to --adversarial ensemble only")
    recipe = Recipe(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                    augment=augment, adversarial=adv_spec, schedule=schedule, nesterov=nesterov, bf16=bf16)
    command = invocation(ctx)
    with bars() as bar:
        started = time.monotonic()

        def progress(stage: str, done: int, total: int | None, detail: str) -> None:  # stage: "epoch E/EPOCHS"
            bar(f"{arch} {stage}", done, total, detail)
            if done == total and not console.is_terminal:  # the output is a log: one line per epoch there too
                console.print(f"{arch} {stage} done: last batch {detail}, {time.monotonic() - started:.0f} s elapsed")

        _, card = train_model(arch, dataset, recipe=recipe, seed=seed, out=out, name=out.stem,
                              data_dir=str(data_dir) if data_dir else None, progress=progress, command=command,
                              train_split=train_split, val_split=val_split, device=device)
    console.print(f"test accuracy {100 * card['test_accuracy']:.2f}% on {card['test_size']} images; wrote {out} "
                  f"and {out.with_suffix('.json')}")
    if "validation_accuracy" in card:
        console.print(f"validation accuracy {100 * card['validation_accuracy']:.2f}% on {card['validation_size']} "
                      f"held-out images ({card['validation_split']})")
    if "generator_test_accuracy" in card:
        console.print(f"accuracy on the training generator's examples (eps {card['adversarial_training']['eps']:g}): "
                      f"{100 * card['generator_test_accuracy']:.2f}%")
    if "fgsm_test_accuracy" in card:
        console.print(f"accuracy on FGSM examples (eps {card['fgsm_test_eps']:g}, crafted against itself): "
                      f"{100 * card['fgsm_test_accuracy']:.2f}%")
    if "robust_test_accuracy" in card:
        from advkit.evaluate import wilson_interval

        r = card["robust_test_accuracy"]
        lo, hi = wilson_interval(r["correct"], r["n"])
        console.print(f"robust accuracy under PGD (eps {r['eps']:g}, {r['steps']} steps of {r['step_size']:.4g}, "
                      f"{r['restarts']} random start(s)) on {r['images']} test images: {100 * r['accuracy']:.2f}% "
                      f"[{100 * lo:.2f}, {100 * hi:.2f}]")
