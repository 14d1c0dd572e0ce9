"""``advkit evaluate``: clean accuracy of a model or of the zoo, with Wilson intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from advkit.cli.common import bars, console, fail, invocation

__all__ = ["evaluate"]


def _row(m: Any, r: Any, dataset: str, split: str, ds: Any) -> dict[str, Any]:
    """One model's record in results.json / results.csv."""
    return {"model": m.name, "arch": m.card.get("arch", "?"), "dataset": dataset, "split": split, "n": r.n,
            "correct": r.k, "accuracy": r.value, "ci_low": r.low, "ci_high": r.high,
            "card_accuracy": m.card.get("test_accuracy"), "data_note": ds.note, "data_selection": ds.selection}


def evaluate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="Zoo name, .safetensors path, torchvision:NAME or timm:NAME.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset to evaluate on.")] = "fashion-mnist",
    all_models: Annotated[bool, typer.Option("--all", help="Evaluate every shipped checkpoint for --dataset.")] = False,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Use at most this many images.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 500,
    data_dir: Annotated[Path | None, typer.Option(help="A folder searched first for the dataset.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write results.json, results.csv and report.md here.")] = None,
) -> None:
    """Clean top-1 accuracy of a model (or of the whole zoo with --all), with 95% Wilson intervals."""
    from advkit import data, models
    from advkit._files import check_writable_dir
    from advkit.evaluate import predict, rate
    from advkit.report.accuracy import write_accuracy_report

    if (model is None) == (not all_models):
        fail("give a MODEL or --all (not both)")
    names = [p.stem for p in models.shipped(dataset)] if all_models else [str(model)]
    if not names:
        fail(f"no shipped checkpoints for {dataset}")
    if out is not None:
        check_writable_dir(out)  # before any work
    ds = data.load(dataset, split, limit=limit, data_dir=data_dir)
    rows = []
    t = Table("model", "arch", "accuracy", "95% interval", "n")
    for col in t.columns[:2]:
        col.no_wrap = True
    with bars(transient=True, every=0) as bar:
        bar("evaluated", 0, len(names), f"on {len(ds.y)} {dataset} {split} images")
        for i, name in enumerate(names):
            m = models.load(name, dataset=dataset)
            models.check_input_shape(m, ds.images.shape[1:], f"{dataset} ({ds.source})")
            data.warn_if_seen_in_training(m, ds)
            r = rate(predict(m, ds.x, batch_size) == ds.y)
            bar("evaluated", i + 1, len(names), f"{name} ({100 * r.value:.2f}%)")
            rows.append(_row(m, r, dataset, split, ds))
            t.add_row(m.name, rows[-1]["arch"], f"{100 * r.value:.2f}%", f"[{100 * r.low:.2f}, {100 * r.high:.2f}]",
                      str(r.n))
    console.print(t)
    if ds.selection != "all":
        console.print(f"images: {ds.selection} of the {split} split")
    if ds.note:
        console.print(f"note: {ds.note}")
    if out is not None:
        report = write_accuracy_report(rows, out, command=invocation(ctx))
        console.print(f"report: {report}")
