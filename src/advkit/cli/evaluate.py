"""``advkit evaluate``: clean accuracy of a model or of the zoo, with Wilson intervals; with ``--robust``, the robust
accuracy under the AutoAttack composition (:func:`advkit.evaluate.robust.robust_accuracy`), which attack broke how
many points, and the sanity checks' gradient-masking warnings next to it."""

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
    robust: Annotated[bool, typer.Option("--robust", help="Also the robust accuracy under AutoAttack "
                                                          "(APGD-CE, APGD-T, FAB-T, Square).")] = False,
    eps: Annotated[float | None, typer.Option(help="With --robust: the budget in pixel units (e.g. 0.1, 8/255 "
                                                   "as 0.0314).")] = None,
    norm: Annotated[str, typer.Option(help="With --robust: linf or l2.")] = "linf",
    version: Annotated[str, typer.Option(help="With --robust: standard (four attacks) or fast (APGD-CE and "
                                              "APGD-T).")] = "standard",
    seed: Annotated[int, typer.Option(help="With --robust: seeds the attacks.")] = 0,
) -> None:
    """Clean top-1 accuracy of a model (or of the whole zoo with --all), with 95% Wilson intervals; with --robust
    --eps E, the robust accuracy under AutoAttack (on 1,000 images unless --limit says otherwise)."""
    from advkit import data, models
    from advkit._files import check_writable_dir
    from advkit.evaluate import predict, rate
    from advkit.report.accuracy import write_accuracy_report

    if (model is None) == (not all_models):
        fail("give a MODEL or --all (not both)")
    if robust and eps is None:
        fail("--robust needs --eps (the budget in pixel units, e.g. --eps 0.1)")
    if eps is not None and not robust:
        fail("--eps is the robust evaluation's budget; add --robust")
    if robust:
        from advkit.evaluate.robust import VERSIONS

        if version not in VERSIONS or norm not in ("linf", "l2"):
            fail(f"--version must be one of {', '.join(VERSIONS)} and --norm linf or l2, got {version!r} / {norm!r}")
        limit = 1000 if limit is None else limit
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
            if robust:
                assert eps is not None
                rows[-1].update(_robust_row(m, ds, eps, norm, version, seed, batch_size, bar))
    console.print(t)
    if ds.selection != "all":
        console.print(f"images: {ds.selection} of the {split} split")
    if ds.note:
        console.print(f"note: {ds.note}")
    if robust:
        _print_robust(rows)
    if out is not None:
        report = write_accuracy_report(rows, out, command=invocation(ctx))
        console.print(f"report: {report}")


def _robust_row(m: Any, ds: Any, eps: float, norm: str, version: str, seed: int, batch_size: int,
                bar: Any) -> dict[str, Any]:
    """The robust evaluation of one model: AutoAttack's table and the gradient-masking checks."""
    import warnings

    from advkit.defences import Defended
    from advkit.evaluate import check_model
    from advkit.evaluate.robust import robust_accuracy

    if isinstance(m, Defended):
        return _defended_row(m, ds, eps, norm, version, seed, batch_size, bar)
    rep = robust_accuracy(m, ds.x, ds.y, eps=eps, norm=norm, version=version, seed=seed, batch_size=batch_size,
                          progress=bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = check_model(m, ds.x[:64], ds.y[:64], warn=False)
    console.print(f"[bold]{m.name}[/bold]\n{rep.table()}")
    masked = [c for c in checks if not c.ok]
    for c in masked:
        console.print(f"  sanity check {c.name}: {c.detail}")
    return _robust_fields(rep, version, norm, eps, {r.attack: r.broken for r in rep.rows}, masked)


def _defended_row(m: Any, ds: Any, eps: float, norm: str, version: str, seed: int, batch_size: int,
                  bar: Any) -> dict[str, Any]:
    """A defended model: the robust accuracy through its own gradients and under BPDA / EOT (Athalye et al.)."""
    from advkit.evaluate.defended import defence_robust_accuracy

    rep = defence_robust_accuracy(m, ds.x, ds.y, eps=eps, norm=norm, version=version, seed=seed,
                                  batch_size=batch_size, progress=bar)
    console.print(f"[bold]{m.name}[/bold]\n{rep.plain.table()}\n{rep.how}:\n{rep.adaptive.table()}\n{rep.table()}")
    broken: dict[str, int] = {}
    for label, r in (("", rep.plain), ("adaptive ", rep.adaptive)):
        for row in r.rows:
            broken[label + row.attack] = row.broken
    failed = [c for c in rep.checks if not c.ok]
    return {**_robust_fields(rep, version, norm, eps, broken, failed), "defence": rep.as_dict()}


def _robust_fields(rep: Any, version: str, norm: str, eps: float, broken: dict[str, int],
                   failed: list[Any]) -> dict[str, Any]:
    """The row's robust columns from a :class:`RobustReport` or a :class:`DefenceReport` (both give ``robust``,
    ``accuracy`` and ``interval``)."""
    lo, hi = rep.interval
    return {"robust_version": version, "robust_norm": norm, "robust_eps": eps, "robust_correct": rep.robust,
            "robust_accuracy": rep.accuracy, "robust_ci_low": lo, "robust_ci_high": hi, "broken_by": broken,
            "failed_checks": [c.name for c in failed]}


def _print_robust(rows: list[dict[str, Any]]) -> None:
    t = Table("model", "clean", "robust", "95% interval", "broken by", "failed checks")
    for r in rows:
        broke = ", ".join(f"{k} {v}" for k, v in r["broken_by"].items())
        t.add_row(r["model"], f"{100 * r['accuracy']:.2f}%", f"{100 * r['robust_accuracy']:.2f}%",
                  f"[{100 * r['robust_ci_low']:.2f}, {100 * r['robust_ci_high']:.2f}]", broke,
                  ", ".join(r["failed_checks"]) or "none")
    console.print(t)
