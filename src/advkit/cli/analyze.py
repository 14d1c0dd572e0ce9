"""``advkit analyze``: studies of a finished run's perturbations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import console, invocation

app = typer.Typer(help="Analyses of finished runs: perturbation clusters, surrogate choice, perception proxy.",
                  no_args_is_help=True)


@app.command("clusters")
def clusters(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A finished `advkit transfer` run (it keeps its examples).")],
    k_min: Annotated[int, typer.Option(min=2, help="Smallest k tried.")] = 2,
    k_max: Annotated[int, typer.Option(min=2, help="Largest k tried.")] = 10,
    components: Annotated[int, typer.Option(min=1, help="Principal components kept before k-means.")] = 50,
    eps: Annotated[str | None, typer.Option(help="Only this eps label of the run (e.g. 16/255); default all.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of PCA, k-means and the silhouette subsample.")] = 0,
    silhouette_sample: Annotated[int, typer.Option(min=10, help="Perturbations the silhouette is computed on.")
                                 ] = 4000,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN_DIR/analysis/clusters).")] = None,
) -> None:
    """PCA then k-means (k by silhouette) over a run's perturbations: what fills each cluster, its mean
    perturbation, its transfer success, and how pure it is against the attack labels."""
    from advkit._files import check_writable_dir
    from advkit.analysis.clusters import cluster_perturbations
    from advkit.report.cluster_report import write_cluster_report
    from advkit.study.runstate import RunDir

    if k_max < k_min:
        raise typer.BadParameter(f"--k-max {k_max} is below --k-min {k_min}")
    RunDir(run_dir).records()  # says what RUN_DIR is unless a finished transfer run, before --out is checked
    out = out or run_dir / "analysis" / "clusters"
    check_writable_dir(out)
    settings = {"k_min": k_min, "k_max": k_max, "components": components, "seed": seed, "eps": eps,
                "silhouette_sample": silhouette_sample}
    with console.status("clustering perturbations"):
        results = cluster_perturbations(run_dir, k_min=k_min, k_max=k_max, components=components, seed=seed,
                                        eps=eps, silhouette_sample=silhouette_sample)
    paths = write_cluster_report(results, run_dir, out, command=invocation(ctx), settings=settings)
    for r in results:
        console.print(f"eps {r.eps}: {r.n} perturbations, k = {r.k} (silhouette {r.silhouette[r.k]:.3f}); "
                      f"attack purity {100 * r.purity_attack:.1f}%, ARI attack {r.adjusted_rand_attack:.3f}, "
                      f"source {r.adjusted_rand_source:.3f}, class {r.adjusted_rand_label:.3f}")
    console.print(f"report: {paths['markdown']}")


@app.command("surrogates")
def surrogates(
    ctx: typer.Context,
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished `advkit transfer` runs over the same images (e.g. "
                                                        "the gradient attacks and SGM of the whole zoo).")],
    out: Annotated[Path, typer.Option(help="Output folder (results.json, CSVs, figure, report.md).")],
    target: Annotated[list[str] | None, typer.Option(help="The unknown target (repeatable); default: every target "
                                                          "of the runs in turn.")] = None,
    eps: Annotated[str | None, typer.Option(help="The eps label to analyse (needed when the runs hold several).")]
    = None,
    selection: Annotated[float, typer.Option(help="Share of the images used to choose; the rest are fresh.")] = 0.5,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the image split and the bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples of the fresh images.")] = 2000,
    knowledge: Annotated[str, typer.Option(help="What the attacker knows about the target: skip (whether it has "
                                                "skip connections) or layers (also, without them, convolutional or "
                                                "fully connected).")] = "skip",
) -> None:
    """Grey-box surrogate choice: knowing only whether the target has skip connections, rank sources x attacks x
    gamma by transfer to the other models of that family, and report the pick's success on fresh images next to
    the oracle's and the average choice's."""
    from advkit._files import check_writable_dir
    from advkit.analysis.surrogates import KNOWLEDGE, choose_surrogates, load_outcomes
    from advkit.report.surrogate_report import write_surrogate_report

    if knowledge not in KNOWLEDGE:
        raise typer.BadParameter(f"--knowledge must be one of {', '.join(KNOWLEDGE)}, got {knowledge!r}")
    check_writable_dir(out)
    with console.status("reading the runs"):
        outcomes = load_outcomes(list(run_dirs), eps)
    choices = choose_surrogates(outcomes, target, selection=selection, seed=seed, bootstrap=bootstrap,
                                knowledge=knowledge)
    settings = {"eps": outcomes.eps, "selection": selection, "seed": seed, "bootstrap": bootstrap,
                "targets": target or "all", "knowledge": knowledge}
    paths = write_surrogate_report(choices, outcomes, out, command=invocation(ctx), settings=settings)
    for c in choices:
        console.print(f"{c.target} ({c.group}): pick {c.pick['label']} {100 * c.pick['rate']:.1f}%, oracle "
                      f"{c.oracle['label']} {100 * c.oracle['rate']:.1f}%, average {100 * c.average['rate']:.1f}%")
    console.print(f"report: {paths['markdown']}")


@app.command("perception")
def perception(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A finished `advkit reproduce jsma` run (one split or pooled).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN_DIR/analysis/perception).")] = None,
    reference: Annotated[str, typer.Option(help="The clean images compared with: the attacked model's training "
                                                "rows, e.g. 'train[:50000]' for lenet_50k.")] = "train",
) -> None:
    """Human perception by proxy: each JSMA example's distance to the nearest clean training image of its source
    class and of its target class, per class pair, with the hardest and easiest pairs' examples."""
    from advkit._files import check_writable_dir
    from advkit.analysis.perception import check_jsma_run, perception_study
    from advkit.report.perception_report import write_perception_report

    check_jsma_run(run_dir)  # says what RUN_DIR is unless a finished JSMA run, before --out is checked
    out = out or run_dir / "analysis" / "perception"
    check_writable_dir(out)
    with console.status("measuring distances to the training images"):
        study = perception_study(run_dir, reference)
    paths = write_perception_report(study, out, command=invocation(ctx))
    s = study.summary
    console.print(f"{s['examples']} examples: {100 * s['share_nearer_target']:.2f}% nearer their target class than "
                  f"their source class; mean distance {s['mean_distance_source']:.3f} to the source class, "
                  f"{s['mean_distance_target']:.3f} to the target class")
    console.print(f"report: {paths['markdown']}")
