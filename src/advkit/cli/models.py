"""``advkit models list`` and ``advkit sgm inspect``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from advkit.cli.common import console, fail

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
        fail(str(e))
    console.print(backprop.format_connections(found))
