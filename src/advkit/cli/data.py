"""``advkit data list`` and ``advkit data fetch``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from advkit.cli.common import bars, console

app = typer.Typer(help="Datasets: list what is registered and where it was found; fetch files.", no_args_is_help=True)


@app.command("list")
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


@app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (see `advkit data list`).")],
    data_dir: Annotated[Path | None, typer.Option(help="Download into this folder instead of the cache.")] = None,
    force: Annotated[bool, typer.Option(help="Download even if a local copy exists.")] = False,
) -> None:
    """Find a local copy of a dataset or download it from its canonical source (checked by SHA-256)."""
    from advkit import data

    with bars(transient=True) as bar:
        where = data.fetch(name, data_dir=data_dir, force=force,
                           progress=lambda stage, done, total, detail: bar(f"{stage} (kB)", done // 1000,
                                                                           None if total is None else total // 1000))
    console.print(f"{name}: files at {where}")
