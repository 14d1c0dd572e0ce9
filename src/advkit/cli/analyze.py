"""``advkit analyze``: studies of a finished run's perturbations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import console, invocation

app = typer.Typer(help="Analyses of finished runs: perturbation clusters.", no_args_is_help=True)


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

    out = out or run_dir / "analysis" / "clusters"
    check_writable_dir(out)
    if k_max < k_min:
        raise typer.BadParameter(f"--k-max {k_max} is below --k-min {k_min}")
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
