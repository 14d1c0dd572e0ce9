"""Perturbation clusters of a finished transfer run (the SGM presentation's first proposed experiment).

Do the attacks of a study make perturbations of different kinds, and does the kind predict transfer? Over every
perturbation ``x_adv - x`` a run kept (several attacks, sources and seeds), :func:`cluster_perturbations` projects
onto the leading principal components (scikit-learn's PCA), runs k-means for each ``k`` in a range and keeps the
``k`` with the best silhouette score (every ``k``'s score is reported), then describes each cluster: which
attacks and sources fill it, its mean perturbation (an image), its members' transfer success and how pure it is
against the attack labels (with the adjusted Rand index of the whole partition against the attack, source and
clean-class labels: perturbations may group by what they perturb rather than by who made them). Perturbations of
different budgets differ first by their size, so each eps is clustered on its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.evaluate.metrics import wilson_interval
from advkit.progress import ProgressFn, report
from advkit.study.runstate import RunDir, read_tensors

__all__ = ["ClusterResult", "cluster_perturbations", "load_perturbations"]


@dataclass
class ClusterResult:
    """One eps's clustering: ``silhouette`` per ``k``, the chosen ``k``, per-cluster rows, the members' labels,
    the mean perturbations ``(k, C, H, W)`` and the partition's agreement with the attack labels."""

    eps: str
    n: int
    components: int
    explained_variance: float
    silhouette: dict[int, float]
    k: int
    clusters: list[dict[str, Any]]
    mean_perturbation: np.ndarray
    adjusted_rand_attack: float
    adjusted_rand_source: float
    adjusted_rand_label: float
    purity_attack: float
    purity_label: float
    labels: np.ndarray = field(repr=False)


def load_perturbations(run_dir: str | Path) -> dict[str, Any]:
    """Every kept perturbation of a finished run: ``delta`` float32 ``(N, C, H, W)`` and, per row, ``eps``,
    ``attack``, ``source``, ``seed``, ``cell``, ``fooled`` of ``targets`` (the run's targets other than the
    source) and ``transfer`` (their ratio; NaN when the source is the only target).

    Raises:
        ValueError: not a finished run, or a run that kept no examples (``save_tensors: false``).
    """
    run = RunDir(Path(run_dir))
    records = run.records()
    sample, _ = read_tensors(run.sample_file)
    seeds = list(records["meta"]["seeds"])
    deltas, rows = [], []
    for c in records["cells"]:
        t, metas = run.read_cell(c["id"], int(c["shards"]))
        pick = sample["picks"][seeds.index(c["seed"])]
        kept = t["x_adv"].shape[0]
        if kept == 0:
            continue
        x = sample["images"][pick[:kept]].float() / 255.0
        y = sample["y"][pick[:kept]]
        deltas.append((t["x_adv"] - x).float())
        models = metas[0]["models"]
        others = [i for i, m in enumerate(models) if m != c["source"]]
        fooled = (t["pred"][:, :kept] != y).float()
        hits = fooled[others].sum(0) if others else torch.zeros(kept)
        index = sample["index"][pick[:kept]]
        for j in range(kept):
            rows.append({"eps": str(c["eps"]), "attack": c["attack"], "source": c["source"], "seed": c["seed"],
                         "label": int(y[j]), "image": int(index[j]),
                         "cell": c["id"], "fooled": int(hits[j]), "targets": len(others),
                         "transfer": float(hits[j]) / len(others) if others else float("nan")})
    if not deltas:
        raise ValueError(f"{run_dir}: the run kept no adversarial examples; rerun it with `save_tensors: true` "
                         f"in the experiment (the default)")
    names = records.get("meta", {}).get("models") or {}
    for r in rows:  # display names where the run has them (paths become zoo-style names)
        r["source"] = names.get(r["source"], r["source"]) if isinstance(names, dict) else r["source"]
    return {"delta": torch.cat(deltas).numpy(), "rows": rows, "records": records}


def cluster_perturbations(run_dir: str | Path, *, k_min: int = 2, k_max: int = 10, components: int = 50,
                          seed: int = 0, eps: str | None = None, silhouette_sample: int = 4000,
                          data: dict[str, Any] | None = None,
                          progress: ProgressFn | None = None) -> list[ClusterResult]:
    """PCA, then k-means with ``k`` chosen by silhouette, for each eps of the run (or only ``eps``).

    Args:
        run_dir: a finished ``advkit transfer`` run that kept its examples.
        k_min, k_max: the range of ``k`` tried (inclusive; capped below the number of perturbations).
        components: principal components kept (at most the data's rank).
        seed: seeds PCA's randomised solver, k-means' initialisation and the silhouette subsample.
        eps: one eps label of the run (``"16/255"``); all of them by default.
        silhouette_sample: perturbations the silhouette score is computed on (all when fewer).
        data: :func:`load_perturbations`' result, to avoid reading the run twice.
        progress: stage ``"k-means"``, one step per eps.

    Returns:
        One :class:`ClusterResult` per eps.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    if k_min < 2 or k_max < k_min:
        raise ValueError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    data = data or load_perturbations(run_dir)
    delta, rows = data["delta"], data["rows"]
    eps_values = sorted({r["eps"] for r in rows}, key=lambda e: [r["eps"] for r in rows].index(e))
    if eps is not None:
        if eps not in eps_values:
            raise ValueError(f"eps {eps!r} is not in this run; its eps: {', '.join(eps_values)}")
        eps_values = [eps]
    out = []
    for done, e in enumerate(eps_values):
        report(progress, "k-means", done, len(eps_values), f"eps {e}")
        idx = np.array([i for i, r in enumerate(rows) if r["eps"] == e])
        if len(idx) < 3:
            raise ValueError(f"eps {e}: {len(idx)} perturbation(s) are too few to cluster")
        flat = delta[idx].reshape(len(idx), -1).astype(np.float64)
        n_comp = int(min(components, flat.shape[0] - 1, flat.shape[1]))
        pca = PCA(n_components=n_comp, random_state=seed)
        z = pca.fit_transform(flat)
        rng = np.random.default_rng(seed)
        sub = rng.choice(len(z), size=min(silhouette_sample, len(z)), replace=False)
        scores, fits = {}, {}
        for k in range(k_min, min(k_max, len(z) - 1) + 1):
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
            if len(set(km.labels_[sub])) < 2:
                continue
            scores[k] = float(silhouette_score(z[sub], km.labels_[sub]))
            fits[k] = km.labels_
        if not scores:
            raise ValueError(f"eps {e}: k-means found no two clusters to compare")
        best = max(scores, key=lambda k: scores[k])
        labels = fits[best]
        attacks = np.array([rows[i]["attack"] for i in idx])
        sources = np.array([rows[i]["source"] for i in idx])
        classes = np.array([rows[i]["label"] for i in idx])
        images = np.array([rows[i]["image"] for i in idx])
        fooled = np.array([rows[i]["fooled"] for i in idx])
        targets = np.array([rows[i]["targets"] for i in idx])
        clusters, means = [], []
        for c in range(best):
            m = labels == c
            by_attack = Counter(attacks[m].tolist())
            by_source = Counter(sources[m].tolist())
            k_fool, n_pairs = int(fooled[m].sum()), int(targets[m].sum())  # (image, target) pairs
            lo, hi = wilson_interval(k_fool, n_pairs) if n_pairs else (float("nan"), float("nan"))
            top, top_n = by_attack.most_common(1)[0]
            by_label = Counter(classes[m].tolist())
            clusters.append({
                "cluster": c, "size": int(m.sum()), "attacks": dict(by_attack.most_common()),
                "sources": dict(by_source.most_common()), "majority_attack": top,
                "purity": top_n / int(m.sum()), "classes": {int(k): v for k, v in by_label.most_common()},
                "class_purity": by_label.most_common(1)[0][1] / int(m.sum()),
                "distinct_images": int(len(set(images[m].tolist()))),
                "transfer": k_fool / n_pairs if n_pairs else None, "transfer_low": lo, "transfer_high": hi,
                "transfer_pairs": n_pairs,
                "linf_mean": float(np.abs(flat[m]).max(1).mean()),
                "l2_mean": float(np.linalg.norm(flat[m], axis=1).mean()),
            })
            means.append(delta[idx][m].mean(0))
        purity = sum(max(Counter(attacks[labels == c].tolist()).values()) for c in range(best)) / len(idx)
        purity_label = sum(max(Counter(classes[labels == c].tolist()).values()) for c in range(best)) / len(idx)
        out.append(ClusterResult(
            eps=e, n=len(idx), components=n_comp, explained_variance=float(pca.explained_variance_ratio_.sum()),
            silhouette=scores, k=best, clusters=clusters, mean_perturbation=np.stack(means),
            adjusted_rand_attack=float(adjusted_rand_score(attacks, labels)),
            adjusted_rand_source=float(adjusted_rand_score(sources, labels)),
            adjusted_rand_label=float(adjusted_rand_score(classes, labels)), purity_attack=float(purity),
            purity_label=float(purity_label),
            labels=labels))
    report(progress, "k-means", len(eps_values), len(eps_values))
    return out
