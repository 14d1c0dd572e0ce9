"""From finished shards to tidy records: success with Wilson intervals, summaries over seeds, McNemar tests,
distortion and sanity checks.

Every row that has an ``eps`` also has the ``norm`` that budget bounds (``linf``, ``l2``, ``l0``: the attack's own,
as it ran), so an L2 radius is never read as an L-inf one; an attack is compared with a baseline only in the same
norm.

Tables (each a list of flat dicts, written to ``results/NAME.csv`` and together to ``results.json``):

* ``clean``: every model's clean accuracy over all images scanned while choosing the sample.
* ``success``: one row per (source, attack, eps, gamma, seed, target, images, over): ``images`` is ``float``
  (the crafted examples) or ``8bit`` (rounded to 8-bit PNG levels within the budget); ``over`` is ``all`` (all
  attacked images, the SGM paper's definition) or ``clean-correct`` (only images the target classified correctly
  before the attack). ``white_box`` marks the source evaluated on its own examples.
  In a targeted study (``meta.targeted`` set) ``k`` / ``rate`` count the images the model labels with their
  target class (``measure: targeted``, targeted success), and ``fooled_k`` / ``fooled_rate`` beside them the
  untargeted fooling rate (prediction != true label); the Wilson interval and the McNemar tests are of the
  targeted success.
* ``summary``: the same keys without the seed: mean, sample std and Student-t 95% interval over seeds, and the
  Wilson interval of the pooled counts (images x seeds; seeds that share images are not independent trials, so
  prefer the t-interval when seeds vary).
* ``paired``: per seed, McNemar's test of each attack against the baseline on the same images (float, all).
* ``paired_summary``: mean difference over seeds, and the largest / smallest exact p-value over seeds.
  ``baseline`` may list several labels (``[ifgsm, mi]``): each attack is compared with each of them.
* ``paired_mean``: the difference averaged over the transfer targets per seed, with its t-interval over seeds.
* ``distortion`` and ``cells``: per cell; ``sanity``: the checks a report states.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from advkit._files import atomic_write_text, csv_text
from advkit.evaluate.metrics import wilson_interval
from advkit.evaluate.queries import query_stats
from advkit.evaluate.stats import mcnemar, summarize_seeds
from advkit.study.ensembles import holdout_sources

if TYPE_CHECKING:
    from advkit.study.plan import Cell
    from advkit.study.runstate import RunDir
    from advkit.study.schema import StudyConfig

__all__ = ["aggregate", "write_records"]

KEYS = ("source", "attack", "eps", "norm", "gamma", "target", "white_box", "images", "over")


def _rate_row(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci_low": lo, "ci_high": hi}


def _clean(cfg: StudyConfig, smeta: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for m in smeta["models"]:
        role = "source+target" if m in cfg.sources and m in cfg.targets else "source" if m in cfg.sources \
            else "target"
        rows.append({"model": names.get(m, m), "spec": m, "role": role, "over": "all images scanned",
                     **_rate_row(int(smeta["correct"][m]), int(smeta["examined"]))})
    return rows


def aggregate(cfg: StudyConfig, run: RunDir, cells: list[Cell], sample: dict[str, torch.Tensor],
              smeta: dict[str, Any], progress: Callable[[str, int, int, str], None] | None = None,
              targets: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Read every finished cell of ``run`` and build the records (see the module docstring). ``targets``: a
    targeted study's classes per source ``(S, n)``, used where a shard does not record the ones it aimed at."""
    n = cfg.sample.n
    size = cfg.shard_size or n
    shards = math.ceil(n / size)
    model_row = {m: i for i, m in enumerate(smeta["models"])}
    names: dict[str, str] = dict(smeta.get("names") or {})
    success: list[dict[str, Any]] = []
    distortion: list[dict[str, Any]] = []
    cell_rows: list[dict[str, Any]] = []
    fooled: dict[tuple[Any, ...], torch.Tensor] = {}
    norms: dict[str, str] = {}  # attack label -> the norm its cells ran in
    budgets: dict[tuple[str, str], float] = {}  # (eps, norm) in the order of the cells: eps's value
    for ci, c in enumerate(cells):
        t, metas = run.read_cell(c.id, shards)
        pick = sample["picks"][c.pick]
        y = sample["y"][pick]
        norm = str(metas[0]["norm"])
        norms[c.label] = norm
        budgets[(c.eps, norm)] = c.eps_value
        key = {"source": names.get(c.source, c.source), "attack": c.label, "eps": c.eps, "norm": norm,
               "gamma": c.gamma, "seed": c.seed}
        aim = _aim(c, t, targets)
        for j, target in enumerate(metas[0]["models"]):
            correct = sample["clean_pred"][model_row[target]][pick] == y
            for images, pred in (("float", t["pred"][j]), ("8bit", t["pred_8bit"][j])):
                f = pred != y if aim is None else pred == aim  # success: fooled, or labelled with the target
                if images == "float":
                    fooled[(c.source, c.label, c.eps, c.gamma, c.seed, target)] = f
                for over, mask in (("all", torch.ones_like(f)), ("clean-correct", correct)):
                    row = {**key, "target": names.get(target, target), "white_box": target == c.source,
                           "images": images, "over": over, **_rate_row(int((f & mask).sum()), int(mask.sum()))}
                    if aim is not None:  # the untargeted fooling rate beside the targeted success
                        k = int(((pred != y) & mask).sum())
                        row.update(measure="targeted", fooled_k=k, fooled_rate=k / row["n"] if row["n"] else None)
                    success.append(row)
        eps_v = c.eps_value
        for images, sfx in (("float", ""), ("8bit", "_8bit")):
            linf = t[f"linf{sfx}"]
            budget = eps_v if images == "float" else math.floor(eps_v * 255 + 1e-6) / 255
            l2 = t[f"l2{sfx}"]
            within = bool(float(linf.max()) <= budget + 1e-6) if norm == "linf" else \
                bool(float(l2.max()) <= eps_v * (1 + 1e-5) + 1e-6) if norm == "l2" else None
            distortion.append({**key, "images": images, "eps_value": eps_v, "linf_max": float(linf.max()),
                               "linf_mean": float(linf.mean()), "l2_max": float(l2.max()), "l2_mean": float(l2.mean()),
                               "l0_mean": float(t[f"l0{sfx}"].mean()), "within_budget": within})
        sgm = [m["info"].get("sgm") for m in metas if m["info"].get("sgm")]
        cell_rows.append({"id": c.id, **key, "n": n, "shards": shards, "white_box_attack_success":
                          float(t["white_box"].float().mean()),
                          "forward_passes": sum(m["forward_passes"] for m in metas),
                          "backward_passes": sum(m["backward_passes"] for m in metas),
                          "seconds": round(sum(m["seconds"] for m in metas), 3),
                          "nan_count": sum(m["nan_count"] for m in metas),
                          "pixel_min": min(m["pixel_min"] for m in metas),
                          "pixel_max": max(m["pixel_max"] for m in metas),
                          "sgm_connections": sgm[0].get("connections") if sgm else None,
                          "sgm_hooks_fired": sum(int(s.get("hooks_fired", 0)) for s in sgm) if sgm else None,
                          "sgm_variant": sgm[0].get("variant") if sgm else None,
                          **_member_gammas(sgm),
                          "config": metas[0]["config"],
                          "queries": query_stats(t["queries"], t["white_box"], int(metas[0]["config"]["max_queries"]))
                          if "queries" in t else None})
        if progress is not None:
            progress("results", ci + 1, len(cells), c.id)
    paired = _paired(cfg, cells, fooled, names, norms)
    return {
        "meta": {"title": cfg.title, "dataset": cfg.dataset, "split": cfg.sample.split, "n": n,
                 "pool": int(sample["y"].numel()), "seeds": list(cfg.seeds), "baseline": cfg.baseline,
                 "also_compare": list(cfg.also_compare), "data_note": smeta.get("note"),
                 "only_correct": cfg.sample.only_correct, "sources": [names.get(m, m) for m in cfg.sources],
                 "targets": [names.get(m, m) for m in cfg.targets], "models": {names.get(m, m): m for m in names},
                 "attacks": list(dict.fromkeys(c.label for c in cells)),
                 "eps": list(dict.fromkeys(e for e, _ in budgets)),
                 "budgets": [{"eps": e, "norm": n} for e, n in budgets], "norms": norms, "notes": list(cfg.notes),
                 "success_definition": _definition(cfg), **_target_meta(cfg, smeta),
                 **({"holdout": {names.get(s, s): names.get(t, t) for s, t in holdout_sources(cfg.targets).items()}}
                    if cfg.holdout else {})},
        "clean": _clean(cfg, smeta, names), "success": success, "summary": _summary(success), "paired": paired,
        "paired_summary": _paired_summary(paired), "paired_mean": _paired_mean(paired), "distortion": distortion,
        "cells": cell_rows,
        "sanity": _sanity(budgets, distortion, cell_rows, cells, smeta.get("model_checks") or {}, names),
    }


def _member_gammas(sgm: list[dict[str, Any]]) -> dict[str, Any]:
    """An ensemble source's SGM decays, ``{"sgm_gammas": {member: gamma or None (untouched)}}``; empty for one
    model (its decay is the ``gamma`` column)."""
    if not sgm or "members" not in sgm[0]:
        return {}
    return {"sgm_gammas": {r["member"]: r.get("gamma") for r in sgm[0]["members"]}}


def _aim(cell: Cell, t: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """The classes a targeted cell aimed at ``(n,)``: as its shards record them, else from ``targets``."""
    if cell.targeted is None:
        return None
    if "target" in t:
        return t["target"].long()
    if not targets or cell.source not in targets:
        raise ValueError(f"cell {cell.id}: a targeted cell whose shards do not record their targets; rerun it "
                         "(delete its folder under cells/)")
    return targets[cell.source][cell.pick].long()


def _definition(cfg: StudyConfig) -> str:
    """What the success rates of the records count."""
    over = ("'all' counts every attacked image, 'clean-correct' only those the model classified correctly before "
            "the attack")
    if cfg.targeted is None:
        return f"success = the model's prediction on the adversarial image differs from the true label; {over}"
    return (f"targeted success = the model labels the adversarial image with its target class ({_mode(cfg)}); the "
            f"untargeted fooling rate (prediction differs from the true label) is recorded beside it (fooled_rate); "
            f"{over}")


def _mode(cfg: StudyConfig) -> str:
    t = cfg.targeted
    if t == "random":
        return "targeted: random, a seeded class other than the true one per image, the same for every source"
    if t == "least_likely":
        return "targeted: least_likely, the class each source scores lowest on the clean image"
    return f"targeted: class {t}"


def _target_meta(cfg: StudyConfig, smeta: dict[str, Any]) -> dict[str, Any]:
    """The records' meta keys of a targeted study (none for an untargeted one, whose records stay as they were)."""
    if cfg.targeted is None:
        return {}
    return {"targeted": cfg.targeted, "success_label": "targeted success", "targeted_note": smeta.get(
        "targeted_note")}


def _summary(success: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in success:
        groups[tuple(r[k] for k in KEYS)].append(r)
    rows = []
    for key, rs in groups.items():
        rates = [r["rate"] for r in rs if r["rate"] is not None]
        s = summarize_seeds(rates) if rates else None
        k, n = sum(r["k"] for r in rs), sum(r["n"] for r in rs)
        lo, hi = wilson_interval(k, n)
        row = {**dict(zip(KEYS, key, strict=True)), "seeds": len(rs), "mean": s.mean if s else None,
               "std": s.std if s else None, "t_low": s.low if s else None, "t_high": s.high if s else None,
               "pooled_k": k, "pooled_n": n, "pooled_low": lo, "pooled_high": hi}
        if "fooled_k" in rs[0]:  # targeted: the mean untargeted fooling rate beside the targeted success
            fr = [r["fooled_rate"] for r in rs if r["fooled_rate"] is not None]
            row.update(measure="targeted", fooled_mean=sum(fr) / len(fr) if fr else None)
        rows.append(row)
    return rows


def _paired(cfg: StudyConfig, cells: list[Cell], fooled: dict[tuple[Any, ...], torch.Tensor],
            names: dict[str, str], norms: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    targets_of: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for (src, lab, eps, g, seed, target) in fooled:
        targets_of[(src, lab, eps, g, seed)].append(target)
    for label in (cfg.baseline, *cfg.also_compare):
        sgm = any(c.gamma is not None for c in cells if c.label == label)  # compared at each cell's own decay
        rows.extend(_paired_with(label, sgm, cells, fooled, names, targets_of, norms))
    return rows


def _paired_with(base: str, base_sgm: bool, cells: list[Cell], fooled: dict[tuple[Any, ...], torch.Tensor],
                 names: dict[str, str], targets_of: dict[tuple[Any, ...], list[str]], norms: dict[str, str]
                 ) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        if c.label == base or norms[c.label] != norms[base]:
            continue  # an L2 attack is not compared with an L-inf baseline at the same number
        bg = c.gamma if base_sgm else None
        for target in targets_of[(c.source, c.label, c.eps, c.gamma, c.seed)]:
            b = fooled.get((c.source, base, c.eps, bg, c.seed, target))
            if b is None:
                continue
            m = mcnemar(fooled[(c.source, c.label, c.eps, c.gamma, c.seed, target)], b)
            rows.append({"source": names.get(c.source, c.source), "attack": c.label, "baseline": base,
                         "eps": c.eps, "norm": norms[c.label], "gamma": c.gamma, "seed": c.seed,
                         "target": names.get(target, target),
                         "white_box": target == c.source,
                         "n": m.n, "attack_k": m.a_k, "baseline_k": m.b_k, "only_attack": m.only_a,
                         "only_baseline": m.only_b, "difference": m.difference, "p_exact": m.p_exact,
                         "chi2": m.chi2, "p_chi2": m.p_chi2,
                         **({"measure": "targeted"} if c.targeted is not None else {})})
    return rows


def _paired_summary(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("source", "attack", "baseline", "eps", "norm", "gamma", "target", "white_box")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in paired:
        groups[tuple(r[k] for k in keys)].append(r)
    rows = []
    for key, rs in groups.items():
        s = summarize_seeds([r["difference"] for r in rs])
        ps = [r["p_exact"] for r in rs]
        rows.append({**dict(zip(keys, key, strict=True)), "seeds": s.n, "difference_mean": s.mean,
                     "difference_std": s.std, "t_low": s.low, "t_high": s.high, "p_exact_max": max(ps),
                     "p_exact_min": min(ps), "seeds_significant": sum(p < 0.05 for p in ps)})
    return rows


def _paired_mean(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (source, attack, baseline, eps, gamma): the difference averaged over the transfer targets (white-box
    excluded) in each seed, then its mean and Student-t 95% interval over seeds (the SGM tables' last column)."""
    keys = ("source", "attack", "baseline", "eps", "norm", "gamma")
    per_seed: dict[tuple[Any, ...], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in paired:
        if not r["white_box"]:
            per_seed[tuple(r[k] for k in keys)][r["seed"]].append(r["difference"])
    rows = []
    for key, seeds in per_seed.items():
        means = [sum(v) / len(v) for v in seeds.values()]
        s = summarize_seeds(means)
        rows.append({**dict(zip(keys, key, strict=True)), "seeds": s.n, "targets": len(next(iter(seeds.values()))),
                     "difference_mean": s.mean, "difference_std": s.std, "t_low": s.low, "t_high": s.high})
    return rows


def _sanity(budgets: dict[tuple[str, str], float], distortion: list[dict[str, Any]], cells: list[dict[str, Any]],
            planned: list[Cell], model_checks: dict[str, list[dict[str, Any]]], names: dict[str, str]
            ) -> dict[str, Any]:
    per_eps = []
    for (eps, norm), value in budgets.items():  # the largest perturbation, in L-inf and (for an L2 budget) in L2
        rows = [d for d in distortion if d["eps"] == eps and d["norm"] == norm]
        entry: dict[str, Any] = {"eps": eps, "norm": norm, "eps_value": value}
        for size in ("linf_max", "l2_max") if norm == "l2" else ("linf_max",):
            entry[size] = max((d[size] for d in rows if d["images"] == "float"), default=0.0)
            entry[f"{size}_8bit"] = max((d[size] for d in rows if d["images"] == "8bit"), default=0.0)
        per_eps.append({**entry, "within_budget": all(d["within_budget"] is not False for d in rows)})
    sgm = [{"cell": c["id"], "connections": c["sgm_connections"], "hooks_fired": c["sgm_hooks_fired"],
            "variant": c["sgm_variant"]} for c in cells if c["sgm_hooks_fired"] is not None]
    sgm_expected = [c.id for c in planned if c.gamma is not None]  # every SGM cell has its decay
    problems = [f"eps {e['eps']} ({e['norm']}): largest perturbation {e.get('l2_max', e['linf_max']):.6f} exceeds "
                f"the budget" for e in per_eps if not e["within_budget"]]
    nan = sum(c["nan_count"] for c in cells)
    lo = min((c["pixel_min"] for c in cells), default=0.0)
    hi = max((c["pixel_max"] for c in cells), default=1.0)
    if nan:
        problems.append(f"{nan} NaN values in adversarial examples")
    if lo < 0 or hi > 1:
        problems.append(f"pixel values outside [0, 1]: [{lo}, {hi}]")
    fired = {s["cell"] for s in sgm if s["hooks_fired"]}
    silent = [c for c in sgm_expected if c not in fired]
    if silent:
        problems.append(f"SGM hooks did not fire in {len(silent)} SGM cell(s), e.g. {silent[0]}")
    models = {names.get(spec, spec): checks for spec, checks in model_checks.items()}
    problems += [f"model {m}: {c['detail']}" for m, checks in models.items() for c in checks if not c["ok"]]
    return {"per_eps": per_eps, "nan_count": nan, "pixel_min": lo, "pixel_max": hi, "sgm": sgm, "models": models,
            "ok": not problems, "problems": problems}


def write_records(run: RunDir, records: dict[str, Any]) -> None:
    """Write each table of ``records`` to ``results/NAME.csv`` (atomically)."""
    for name, rows in records.items():
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            atomic_write_text(run.results_dir / f"{name}.csv", csv_text(rows))
