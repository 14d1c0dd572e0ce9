"""Grey-box surrogate choice: which source, attack and SGM decay should an attacker use when all they know about
the target is whether it has skip connections (``knowledge="skip"``), or also, for a target without them, whether
it is convolutional or fully connected (``knowledge="layers"``)?

Over one or more finished transfer runs that attacked the same images (every zoo model as a source and as a
target), :func:`choose_surrogates` takes each target in turn as the unknown model and:

1. splits the images, by a seeded draw, into a *selection* half and a *fresh* half (an image is on one side for
   every seed, so nothing chosen on one half is scored on it);
2. scores every candidate (source, attack, gamma), the target itself excluded as a source, by its transfer
   success on the selection images against the *proxies*: the other models of the target's group (with skip
   connections, or without; with ``"layers"`` the models without are split into convolutional and fully
   connected ones), the candidate's own source excluded (that would be white-box);
3. picks the best-scoring candidate and reports its success against the real target on the fresh images, next
   to the *oracle* (the candidate best against the target itself on the selection images, scored on the fresh
   ones), the best in hindsight (the maximum on the fresh images: an optimistic bound), the *average* candidate,
   and the family-blind pick (scored against every other model), with Wilson intervals for single choices and
   bootstrap intervals (over fresh images) for the average and for the oracle's lead over the pick.

Success is the share of fresh images whose adversarial example the target misclassifies (the runs keep only images
every model classifies correctly, so this is the transfer rate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advkit.analysis.settings import KNOWLEDGE
from advkit.evaluate.metrics import wilson_interval
from advkit.models.registry import arch_names, get_arch
from advkit.progress import ProgressFn, report
from advkit.study.runstate import RunDir, read_tensors

__all__ = ["KNOWLEDGE", "Outcomes", "SurrogateChoice", "choose_surrogates", "knowledge_group", "load_outcomes"]

SKIP_KINDS = ("residual", "dense")
FULLY_CONNECTED = ("linear", "maxout", "mlp")  # architecture families without convolutions (the zoo's)


@dataclass
class Outcomes:
    """What the runs' examples did: ``fooled[c]`` is a bool ``(n_models, n_units)`` array per candidate ``c`` =
    ``(source, attack, gamma)``; units are (seed, image) pairs, the same for every candidate (``unit_image``:
    each unit's image index in the split). ``models``: the target models in row order; ``family``: each model's
    connection kind (``residual``, ``dense``, ``none``); ``arch``: each model's architecture name, where the runs'
    manifests record it."""

    eps: str
    models: list[str]
    family: dict[str, str]
    candidates: list[tuple[str, str, float | None]]
    fooled: dict[tuple[str, str, float | None], np.ndarray] = field(repr=False)
    unit_image: np.ndarray = field(repr=False)
    runs: list[str] = field(default_factory=list)
    arch: dict[str, str] = field(default_factory=dict)


def _cells(run: RunDir, eps: str | None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    records = run.records()
    manifest = json.loads(run.manifest.read_text()) if run.manifest.is_file() else {}
    cells = [c for c in records["cells"] if eps is None or str(c["eps"]) == eps]
    return records, cells, manifest


def load_outcomes(run_dirs: list[str | Path], eps: str | None = None, progress: ProgressFn | None = None) -> Outcomes:
    """Read every cell of ``run_dirs`` at one eps into an :class:`Outcomes` (``progress``: stage ``"read runs"``,
    one step per run).

    Raises:
        ValueError: a run is unfinished or kept no predictions; the runs hold several eps and ``eps`` is not given,
            or none at ``eps``; the runs drew different images or attacked different targets; a candidate appears
            in two runs.
    """
    if not run_dirs:
        raise ValueError("give at least one finished transfer run")
    loaded = [(RunDir(Path(d)), *_cells(RunDir(Path(d)), eps)) for d in run_dirs]
    all_eps = sorted({str(c["eps"]) for _, r, _, _ in loaded for c in r["cells"]})
    if eps is None and len(all_eps) > 1:
        raise ValueError(f"the runs hold several eps ({', '.join(all_eps)}); choose one with --eps")
    eps = eps or all_eps[0]
    family: dict[str, str] = {}
    arch: dict[str, str] = {}
    models: list[str] | None = None
    units: dict[int, np.ndarray] | None = None
    fooled: dict[tuple[str, str, float | None], list[np.ndarray]] = {}
    for done, (run, _, cells, manifest) in enumerate(loaded):
        report(progress, "read runs", done, len(loaded), str(run.root))
        if not cells:
            raise ValueError(f"{run.root}: no cell at eps {eps} (the runs hold {', '.join(all_eps)})")
        for spec, m in (manifest.get("models") or {}).items():
            family.setdefault(spec, str(m.get("connections") or "none"))
            if m.get("arch"):
                arch.setdefault(spec, str(m["arch"]))
        sample, smeta = read_tensors(run.sample_file)
        seeds = list(smeta.get("seeds") or [])
        by_seed: dict[int, np.ndarray] = {}
        per_cand: dict[tuple[str, str, float | None], dict[int, np.ndarray]] = {}
        for c in cells:
            t, metas = run.read_cell(c["id"], int(c["shards"]))
            names = list(metas[0]["models"])
            if models is None:
                models = names
            elif sorted(names) != sorted(models):
                raise ValueError(f"{run.root}: cell {c['id']} attacked targets {sorted(names)}, another cell "
                                 f"{sorted(models)}; give the runs the same targets")
            pred = t["pred"].numpy()[[names.index(m) for m in models]]  # rows in one order for every cell
            pick = sample["picks"][seeds.index(c["seed"])][: pred.shape[1]].numpy()
            images = sample["index"][pick].numpy()
            y = sample["y"][pick].numpy()
            by_seed.setdefault(int(c["seed"]), images)
            if not np.array_equal(by_seed[int(c["seed"])], images):
                raise ValueError(f"{run.root}: cells of seed {c['seed']} attacked different images")
            gamma = None if c.get("gamma") in (None, "") else float(c["gamma"])
            per_cand.setdefault((c["source"], c["attack"], gamma), {})[int(c["seed"])] = pred != y[None, :]
        if units is None:
            units = by_seed
        elif {k: v.tolist() for k, v in units.items()} != {k: v.tolist() for k, v in by_seed.items()}:
            raise ValueError(f"{run.root} attacked other images than {loaded[0][0].root}; give both runs the same "
                             f"dataset, sample settings, seeds and models so they draw the same images")
        for key, per_seed in per_cand.items():
            if key in fooled:
                raise ValueError(f"candidate {key} appears in two runs; each (source, attack, gamma) once")
            if sorted(per_seed) != sorted(by_seed):
                raise ValueError(f"{run.root}: candidate {key} lacks seeds {sorted(set(by_seed) - set(per_seed))}")
            fooled[key] = [per_seed[s] for s in sorted(per_seed)]
    report(progress, "read runs", len(loaded), len(loaded))
    assert models is not None and units is not None
    unit_image = np.concatenate([units[s] for s in sorted(units)])
    cands = sorted(fooled, key=lambda k: (k[0], k[1], -1.0 if k[2] is None else k[2]))
    return Outcomes(eps, models, {m: family.get(m, "none") for m in models}, cands,
                    {k: np.concatenate(fooled[k], axis=1) for k in cands}, unit_image,
                    [str(r.root) for r, *_ in loaded], {m: arch[m] for m in models if m in arch})


def knowledge_group(connections: str, arch: str | None, knowledge: str = "skip") -> str:
    """The group an attacker who knows ``knowledge`` about a model puts it in: ``"skip connections"`` or ``"no
    skip connections"``; with ``"layers"`` the latter is ``"no skips, convolutional"`` or ``"no skips, fully
    connected"`` (from the registered architecture's family; an architecture advkit does not know stays ``"no
    skip connections"``)."""
    if knowledge not in KNOWLEDGE:
        raise ValueError(f"knowledge must be one of {', '.join(KNOWLEDGE)}, got {knowledge!r}")
    if connections in SKIP_KINDS:
        return "skip connections"
    if knowledge == "skip" or arch not in arch_names():
        return "no skip connections"
    return "no skips, fully connected" if get_arch(arch).family in FULLY_CONNECTED else "no skips, convolutional"


@dataclass
class SurrogateChoice:
    """One unknown target: the choices and their success on the fresh images (see the module docstring).
    ``candidates`` holds one row per candidate with its selection scores and fresh success."""

    target: str
    family: str
    group: str
    proxies: list[str]
    n_selection: int
    n_fresh: int
    pick: dict[str, Any]
    blind_pick: dict[str, Any]
    oracle: dict[str, Any]
    hindsight: dict[str, Any]
    average: dict[str, Any]
    regret: dict[str, Any]
    candidates: list[dict[str, Any]] = field(repr=False)


def _best(key: str, pool: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest ``key`` (the first of ties, in the candidates' sorted order)."""
    return max(pool, key=lambda r: r[key])


def _label(c: tuple[str, str, float | None]) -> str:
    return f"{c[0]} {c[1]}" + ("" if c[2] is None else f" (gamma {c[2]:g})")


def _choice(c: tuple[str, str, float | None], hits: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n)
    return {"source": c[0], "attack": c[1], "gamma": c[2], "label": _label(c), "k": k, "n": n,
            "rate": k / max(1, n), "ci_low": lo, "ci_high": hi, **extra}


def choose_surrogates(outcomes: Outcomes, targets: list[str] | None = None, *, selection: float = 0.5,
                      seed: int = 0, bootstrap: int = 2000, knowledge: str = "skip",
                      progress: ProgressFn | None = None) -> list[SurrogateChoice]:
    """Each target of ``targets`` (default: every model of the runs) in turn as the unknown model.

    Args:
        outcomes: :func:`load_outcomes`' result.
        targets: the unknown targets; each must be one of the runs' targets.
        selection: share of the images used to choose (the rest are the fresh images).
        seed: seeds the image split and the bootstrap.
        bootstrap: resamples of the fresh images for the average's and the regret's intervals.
        knowledge: what the attacker knows about the target (:func:`knowledge_group`): ``"skip"`` (whether it has
            skip connections) or ``"layers"`` (also convolutional or fully connected when it has none).
        progress: stage ``"targets"``, one step per target.

    Raises:
        ValueError: an unknown target, a share outside (0, 1), or a target no candidate can be scored for.
    """
    if not 0.0 < selection < 1.0:
        raise ValueError(f"selection must be a share in (0, 1), got {selection}")
    o = outcomes
    group = {m: knowledge_group(o.family[m], o.arch.get(m), knowledge) for m in o.models}
    targets = list(o.models) if targets is None else list(targets)
    for t in targets:
        if t not in o.models:
            raise ValueError(f"target {t!r} is not among the runs' targets ({', '.join(o.models)})")
    rng = np.random.default_rng(seed)
    images = np.unique(o.unit_image)
    chosen = set(rng.permutation(images)[: max(1, int(round(selection * images.size)))].tolist())
    sel = np.array([i in chosen for i in o.unit_image])
    fresh = ~sel
    if not fresh.any():
        raise ValueError(f"{images.size} images leave no fresh image at selection share {selection}")
    row = {m: i for i, m in enumerate(o.models)}
    boot = rng.integers(0, int(fresh.sum()), size=(bootstrap, int(fresh.sum())))
    out = []
    for done, t in enumerate(targets):
        report(progress, "targets", done, len(targets), t)
        proxies = [m for m in o.models if m != t and group[m] == group[t]]
        rows = []
        for c in o.candidates:
            if c[0] == t:
                continue
            f = o.fooled[c]
            own = [row[m] for m in proxies if m != c[0]]
            others = [row[m] for m in o.models if m not in (t, c[0])]
            rows.append({"candidate": c, "proxies": len(own),
                         "score_family": float(f[own][:, sel].mean()) if own else float("nan"),
                         "score_blind": float(f[others][:, sel].mean()) if others else float("nan"),
                         "score_target": float(f[row[t], sel].mean()),
                         "fresh_hits": f[row[t], fresh]})
        ranked = [r for r in rows if np.isfinite(r["score_family"])]
        if not ranked:
            raise ValueError(f"target {t}: no candidate can be scored (its group, {group[t]}, has no other model)")
        pick, oracle = _best("score_family", ranked), _best("score_target", rows)
        blind = _best("score_blind", [r for r in rows if np.isfinite(r["score_blind"])] or rows)
        fresh_rates = np.array([r["fresh_hits"].mean() for r in rows])
        hind = rows[int(np.argmax(fresh_rates))]
        order = np.argsort(-fresh_rates, kind="stable")
        rank = {id(rows[i]): n + 1 for n, i in enumerate(order)}
        matrix = np.stack([r["fresh_hits"] for r in rows]).astype(np.float64)
        avg_boot = matrix[:, boot].mean(axis=(0, 2))
        reg_boot = (oracle["fresh_hits"][boot].mean(1) - pick["fresh_hits"][boot].mean(1))
        n_fresh = int(fresh.sum())
        out.append(SurrogateChoice(
            target=t, family=o.family[t], group=group[t], proxies=proxies, n_selection=int(sel.sum()), n_fresh=n_fresh,
            pick=_choice(pick["candidate"], pick["fresh_hits"], {"selection_score": pick["score_family"],
                                                                  "rank": rank[id(pick)]}),
            blind_pick=_choice(blind["candidate"], blind["fresh_hits"], {"selection_score": blind["score_blind"],
                                                                        "rank": rank[id(blind)]}),
            oracle=_choice(oracle["candidate"], oracle["fresh_hits"], {"selection_score": oracle["score_target"],
                                                                      "rank": rank[id(oracle)]}),
            hindsight=_choice(hind["candidate"], hind["fresh_hits"], {"rank": 1}),
            average={"rate": float(fresh_rates.mean()), "ci_low": float(np.quantile(avg_boot, 0.025)),
                     "ci_high": float(np.quantile(avg_boot, 0.975)), "candidates": len(rows)},
            regret={"rate": float(oracle["fresh_hits"].mean() - pick["fresh_hits"].mean()),
                    "ci_low": float(np.quantile(reg_boot, 0.025)), "ci_high": float(np.quantile(reg_boot, 0.975))},
            candidates=[{"target": t, "source": r["candidate"][0], "attack": r["candidate"][1],
                         "gamma": r["candidate"][2], "proxies": r["proxies"],
                         "selection_family": r["score_family"], "selection_blind": r["score_blind"],
                         "selection_target": r["score_target"], "fresh_k": int(r["fresh_hits"].sum()),
                         "fresh_n": n_fresh, "fresh_rate": float(r["fresh_hits"].mean()), "fresh_rank": rank[id(r)]}
                        for r in rows]))
    report(progress, "targets", len(targets), len(targets))
    return out
