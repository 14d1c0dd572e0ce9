"""The files of ``advkit analyze clusters``: JSON and CSV records, two figures per eps, a Markdown section, and a
manifest, under ``RUN_DIR/analysis/clusters`` (or ``--out``)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from advkit._files import atomic_write_bytes, atomic_write_text, csv_text
from advkit.analysis.clusters import ClusterResult
from advkit.report.provenance import manifest, sha256_of

__all__ = ["write_cluster_report"]


def _slug(eps: str) -> str:
    return eps.replace("/", "-").replace(".", "p")


def _silhouette_png(r: ClusterResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(r.silhouette)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(ks, [r.silhouette[k] for k in ks], marker="o")
    ax.axvline(r.k, color="grey", linestyle=":")
    ax.set_xlabel("k (k-means clusters)")
    ax.set_ylabel("silhouette score")
    ax.set_title(f"eps {r.eps}: chosen k = {r.k}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _means_png(r: ClusterResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = r.k
    cols = min(k, 5)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.8 * rows), squeeze=False)
    lim = float(np.abs(r.mean_perturbation).max()) or 1.0
    for ax in axes.flat:
        ax.axis("off")
    for c, ax in zip(r.clusters, axes.flat, strict=False):
        img = r.mean_perturbation[c["cluster"]].mean(0)  # channel mean: red = brighter, blue = darker
        ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
        t = f"{100 * c['transfer']:.0f}%" if c["transfer"] is not None else "-"
        ax.set_title(f"#{c['cluster']} n={c['size']}\n{c['majority_attack']} {100 * c['purity']:.0f}%, tr {t}",
                     fontsize=8)
    fig.suptitle(f"mean perturbation per cluster, eps {r.eps} (colour scale +-{lim:.3f})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def write_cluster_report(results: list[ClusterResult], run_dir: Path, out: Path, *, command: str,
                         settings: dict[str, Any]) -> dict[str, Path]:
    """Write the clustering of every eps into ``out``; returns the paths of ``report.md`` and ``clusters.json``."""
    import sklearn

    (out / "figures").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    sil_rows, cl_rows = [], []
    md = ["# Perturbation clusters", "",
          f"Run: `{run_dir}`. Command: `{command}`. PCA ({settings['components']} components at most), then k-means "
          f"(10 initialisations) for k = {settings['k_min']}..{settings['k_max']}, k chosen by the silhouette score "
          f"(on at most {settings['silhouette_sample']} perturbations), seed {settings['seed']}; scikit-learn "
          f"{sklearn.__version__}. Each eps is clustered on its own. Transfer: the share of (image, target) pairs "
          f"fooled over the run's targets other than the source, 95% Wilson interval (pairs of one image are not "
          f"independent, so the interval is optimistic). Purity: the share of a cluster's members made by its "
          f"most common attack. Adjusted Rand index (ARI): agreement of the partition with the attack, source and "
          f"clean-class labels (0: chance, 1: the same partition).", ""]
    for r in results:
        s = _slug(r.eps)
        atomic_write_bytes(out / "figures" / f"silhouette_{s}.png", _silhouette_png(r))
        atomic_write_bytes(out / "figures" / f"mean_perturbation_{s}.png", _means_png(r))
        for k, v in sorted(r.silhouette.items()):
            sil_rows.append({"eps": r.eps, "k": k, "silhouette": round(v, 5), "chosen": k == r.k})
        for c in r.clusters:
            cl_rows.append({"eps": r.eps, **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in c.items()}})
        records.append({"eps": r.eps, "n": r.n, "components": r.components,
                        "explained_variance": r.explained_variance, "silhouette": r.silhouette, "k": r.k,
                        "adjusted_rand_attack": r.adjusted_rand_attack, "adjusted_rand_source": r.adjusted_rand_source,
                        "adjusted_rand_label": r.adjusted_rand_label, "purity_attack": r.purity_attack,
                        "purity_label": r.purity_label, "clusters": r.clusters})
        md += [f"## eps {r.eps}", "",
               f"{r.n} perturbations, {r.components} principal components ({100 * r.explained_variance:.1f}% of the "
               f"variance). Silhouette by k: " + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(r.silhouette.items()))
               + f"; chosen k = {r.k}.", "",
               f"Against the attack labels: purity {100 * r.purity_attack:.1f}%, ARI {r.adjusted_rand_attack:.3f}; "
               f"against the sources: ARI {r.adjusted_rand_source:.3f}; against the clean classes: purity "
               f"{100 * r.purity_label:.1f}%, ARI {r.adjusted_rand_label:.3f}.", "",
               "| cluster | size | attacks | sources | majority (purity) | top classes | distinct images | "
               "transfer [95% CI] | mean L2 |",
               "|---:|---:|---|---|---|---|---:|---|---:|"]
        for c in r.clusters:
            att = ", ".join(f"{k} {v}" for k, v in c["attacks"].items())
            src = ", ".join(f"{k} {v}" for k, v in c["sources"].items())
            cls = ", ".join(f"{k}: {v}" for k, v in list(c["classes"].items())[:3])
            tr = (f"{_pct(c['transfer'])} [{_pct(c['transfer_low'])}, {_pct(c['transfer_high'])}]"
                  if c["transfer"] is not None else "-")
            md.append(f"| {c['cluster']} | {c['size']} | {att} | {src} | {c['majority_attack']} "
                      f"({100 * c['purity']:.0f}%) | {cls} | {c['distinct_images']} | {tr} | {c['l2_mean']:.3f} |")
        md += ["", f"![silhouette](figures/silhouette_{s}.png) "
                   f"![mean perturbations](figures/mean_perturbation_{s}.png)", ""]
    atomic_write_text(out / "clusters.json", json.dumps(records, indent=1) + "\n")
    atomic_write_text(out / "silhouette.csv", csv_text(sil_rows))
    atomic_write_text(out / "clusters.csv", csv_text(cl_rows))
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "manifest.json", json.dumps({
        **manifest(command, settings, {"run_results": Path(run_dir) / "results.json"}), "run_dir": str(run_dir),
        "run_results_sha256": sha256_of(Path(run_dir) / "results.json")}, indent=2) + "\n")
    return {"markdown": out / "report.md", "json": out / "clusters.json"}
