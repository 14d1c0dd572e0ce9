"""``advkit models list``, ``advkit models import`` and ``advkit sgm inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from advkit.cli.common import console, invocation, parse_number, warn

app = typer.Typer(help="Models: the architecture registry and the shipped zoo.", no_args_is_help=True)
sgm_app = typer.Typer(help="The Skip Gradient Method: inspect what it finds in a model.", no_args_is_help=True)


@app.command("list")
def models_list(dataset: Annotated[str | None, typer.Option(help="Only checkpoints for this dataset.")] = None
                ) -> None:
    """List the architectures, the shipped checkpoints with their test accuracy, and the shipped generators."""
    from advkit import models

    t = Table("name", "dataset", "arch", "connections", "test acc.", "paper")
    for col in t.columns[:5]:  # names are what users type next: never cut them, wrap the citation instead
        col.no_wrap = True
    for m in models.list(dataset):
        acc = f"{100 * m.test_accuracy:.2f}%" if m.test_accuracy is not None else "-"
        t.add_row(m.name, m.dataset or "(not shipped)", m.arch, m.connections, acc, m.paper)
    console.print(t)
    from advkit.models.generator import generator_path, read_generator_card, shipped_generators

    gens = [(n, read_generator_card(generator_path(n))) for n in shipped_generators()]
    gens = [(n, c) for n, c in gens if dataset is None or c.get("dataset") == dataset]
    if gens:
        g = Table("attack name", "dataset", "sources", "eps", "loss", "fools its source", "size")
        g.columns[0].no_wrap = True
        for n, c in gens:
            fool = ", ".join(f"{k} {100 * v:.1f}%" for k, v in (c.get("fooling_rate_test") or {}).items())
            size = generator_path(n).stat().st_size / 1e6
            g.add_row(f"generator:{n}", c.get("dataset", "-"), ", ".join(s["name"] for s in c.get("sources", [])),
                      f"{c['eps']:g}", str(c.get("loss", "-")), fool or "-", f"{size:.1f} MB")
        console.print(g)
    from advkit.models.universal import load_universal, shipped_universal, universal_path

    uaps = [(n, load_universal(universal_path(n))[1]) for n in shipped_universal()]
    uaps = [(n, c) for n, c in uaps if dataset is None or c.get("dataset") == dataset]
    if uaps:
        u = Table("attack name", "dataset", "source", "eps", "fools (test, its source)")
        u.columns[0].no_wrap = True
        for n, c in uaps:
            u.add_row(f"uap:{n}", c.get("dataset", "-"), (c.get("source") or {}).get("name", "-"),
                      f"{c['eps']:g} {c['norm']}", f"{100 * c.get('fooling_rate_test', 0):.1f}%")
        console.print(u)


def _numbers(text: str, what: str) -> tuple[float, ...]:
    return tuple(parse_number(v, what) for v in text.split(",") if v.strip())


@app.command("import")
def models_import(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A torch.save file holding a state dict (.pt, .pth).")],
    arch: Annotated[str, typer.Option(help="The architecture the weights belong to (advkit models list), e.g. "
                                           "lenet5 for AdverTorch's MNIST LeNet-5.")],
    dataset: Annotated[str, typer.Option(help="The dataset it was trained on (sets the input shape and class "
                                              "count for mnist, fashion-mnist, cifar10).")],
    out: Annotated[Path, typer.Option(help="Folder for NAME.safetensors and NAME.json.")],
    name: Annotated[str | None, typer.Option(help="The model's name (default: the file's stem).")] = None,
    mean: Annotated[str, typer.Option(help="Per-channel mean the model subtracts, comma-separated (0: it takes "
                                           "raw pixels in [0, 1]).")] = "0",
    std: Annotated[str, typer.Option(help="Per-channel std the model divides by, comma-separated.")] = "1",
    input_shape: Annotated[str | None, typer.Option(help="C,H,W for datasets advkit does not know.")] = None,
    num_classes: Annotated[int | None, typer.Option(min=2, help="Class count for such datasets.")] = None,
    description: Annotated[str, typer.Option(help="Where the checkpoint came from, for the card.")] = "",
    force: Annotated[bool, typer.Option(help="Overwrite an existing NAME.safetensors.")] = False,
) -> None:
    """Convert an outside PyTorch state dict, once, into safetensors plus a model card (source SHA-256 recorded).

    The file is read with torch.load(weights_only=True), never a full unpickle: a file holding anything but
    tensors and plain containers is refused with the reason. advkit.models.load then reads the safetensors file.
    Weights whose outputs are NaN, or whose clean accuracy is near chance (a missing --mean/--std), are written
    with a warning."""
    from advkit.models.importer import import_state_dict

    shape: tuple[int, int, int] | None = None
    if input_shape is not None:
        parts = input_shape.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise typer.BadParameter(f"--input-shape must be C,H,W (three positive integers), got {input_shape!r}")
        shape = (int(parts[0]), int(parts[1]), int(parts[2]))
    path, card = import_state_dict(source, arch, out, dataset=dataset, name=name, input_shape=shape,
                                   num_classes=num_classes, mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"),
                                   description=description, command=invocation(ctx), force=force)
    acc = card.get("test_accuracy")
    console.print(f"imported {source} ({card['imported']['sha256'][:12]}...) as {path}")
    if acc is not None:
        from advkit.evaluate import wilson_interval

        lo, hi = wilson_interval(card["test_correct"], card["test_images"])
        console.print(f"clean accuracy on the {dataset} test split: {100 * acc:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
                      f"over {card['test_images']} images")
    else:
        console.print(card.get("test_accuracy_note", "clean accuracy not measured"))
    for w in card.get("warnings", []):
        warn(w)
    console.print(f"use it as: --model {path}")


@sgm_app.command("inspect")
def sgm_inspect(
    model: Annotated[str, typer.Argument(help="Zoo name, .safetensors path, torchvision:NAME or timm:NAME.")],
    dataset: Annotated[str, typer.Option(help="Which zoo a bare name refers to.")] = "fashion-mnist",
    arch: Annotated[bool, typer.Option("--arch", help="MODEL is an architecture name: inspect an untrained "
                                                      "instance (no checkpoint needed).")] = False,
) -> None:
    """Print the skip connections (residual additions, dense concatenations) SGM finds in a model."""
    from advkit import backprop, models

    if arch:
        spec = models.get_arch(model)
        from advkit.data import get_spec

        c, h, _ = get_spec(dataset).shape
        net = spec.build(c, 10, h)
    else:
        net = models.load(model, dataset=dataset)
    found = backprop.find_connections(net)
    console.print(backprop.format_connections(found))
