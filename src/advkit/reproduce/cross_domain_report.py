"""The cross-domain run's records and report: per-target and headline summaries with intervals, the findings,
CSV files, the gallery and bar figures, and the Markdown/HTML document (:func:`advkit.reproduce.cross_domain.
reproduce_cross_domain` computes the rows; this module turns them into the run's files)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkit._files import atomic_write_bytes, atomic_write_text
from advkit.attacks.artefact.universal import UniversalAttack
from advkit.evaluate.stats import summarize_seeds
from advkit.report import figures
from advkit.report.html import Code, Document, Figure, Heading, Para, Table
from advkit.reproduce.cross_domain_setup import (
    Artefact,
    CrossDomainSetup,
    Method,
    apply_artefact,
    held_out,
    match_shape,
)

__all__ = ["aggregate_rows", "report", "write_run"]


def _summary(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Mean and Student-t interval over the seeds; the interval is clipped to ``bounds`` (a rate cannot leave
    [0, 1], a difference of rates [-1, 1]), which a t interval over 3 seeds otherwise often does."""
    s = summarize_seeds(values)
    lo, hi = bounds
    return {"mean": s.mean, "low": None if s.low is None else max(s.low, lo),
            "high": None if s.high is None else min(s.high, hi), "std": s.std, "seeds": s.n, "per_seed": values}


def aggregate_rows(setup: CrossDomainSetup, targets: dict[str, tuple[str, ...]], rows: list[dict[str, Any]]
               ) -> dict[str, Any]:
    by: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"], r["target"]), {})[r["seed"]] = r
    per_target = []
    for (d, m, t), seeds in by.items():
        rs = [seeds[k] for k in setup.seeds]
        per_target.append({
            "dataset": d, "method": m, "target": t, "kind": rs[0]["kind"], "relation": rs[0]["relation"],
            "trained_on": rs[0]["trained_on"], "host": rs[0]["host"], "white_box": rs[0]["white_box"],
            "all": _summary([r["fooled"] / max(r["n"], 1) for r in rs]),
            "clean_correct": _summary([r["fooled_correct"] / max(r["correct"], 1) for r in rs])})
    headline = []
    for d in setup.datasets:
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == d))
        cell = {(p["method"], p["target"]): p for p in per_target if p["dataset"] == d}
        for m in methods:
            tr = held_out(setup, targets[d])
            rec: dict[str, Any] = {"dataset": d, "method": m, "kind": cell[(m, tr[0])]["kind"],
                                   "relation": cell[(m, tr[0])]["relation"],
                                   "trained_on": cell[(m, tr[0])]["trained_on"], "host": cell[(m, tr[0])]["host"],
                                   "transfer_targets": tr}
            for over in ("all", "clean_correct"):
                per_seed = [sum(cell[(m, t)][over]["per_seed"][i] for t in tr) / len(tr)
                            for i in range(len(setup.seeds))]
                noise = [sum(cell[("noise", t)][over]["per_seed"][i] for t in tr) / len(tr)
                         for i in range(len(setup.seeds))]
                rec[over] = _summary(per_seed)
                rec[f"{over}_minus_noise"] = _summary([a - b for a, b in zip(per_seed, noise, strict=True)],
                                                      (-1.0, 1.0))
            wb = [t for t in targets[d] if cell[(m, t)]["white_box"]]  # the host itself, for in-domain methods
            rec["white_box"] = {t: cell[(m, t)]["all"] for t in wb}
            headline.append(rec)
    return {"per_target": per_target, "headline": headline, "findings": _findings(setup, headline)}


def _findings(setup: CrossDomainSetup, headline: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: for each cross-domain method, above / below / indistinguishable from noise, and its gap
    to the in-domain method of the same kind and host."""
    out = []
    idx = {(h["dataset"], h["method"]): h for h in headline}
    for h in headline:
        if h["relation"] != "cross-domain":
            continue
        d, diff = h["dataset"], h["all_minus_noise"]
        name = f"{'generator' if h['kind'] == 'generator' else 'UAP'} from {h['trained_on']} on {h['host']}"
        pts = f"{100 * diff['mean']:+.1f} points"
        if diff["low"] is not None and diff["low"] > 0:
            verdict = f"transfers to {d} above the noise control ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        elif diff["high"] is not None and diff["high"] < 0:
            verdict = f"does *worse* than random noise on {d} ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        elif diff["low"] is None:
            verdict = f"{pts} against noise on {d} (one seed: no interval)"
        else:
            verdict = f"is indistinguishable from random noise on {d} ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        own = idx.get((d, f"{h['kind']}:{d}:{h['host']}"))
        gap = ""
        if own is not None:
            gap = (f"; the in-domain {h['kind'] if h['kind'] == 'generator' else 'UAP'} on {h['host']} reaches "
                   f"{100 * own['all']['mean']:.1f}% against its {100 * h['all']['mean']:.1f}%")
        out.append(f"The {name} {verdict}{gap}.")
    return out


# ----------------------------------------------------------------------------------------------------- writing
ROW_FIELDS = ("dataset", "method", "kind", "relation", "trained_on", "host", "seed", "target", "white_box", "held_out",
              "n", "fooled", "correct", "fooled_correct", "linf_max")


def _csv(fields: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _flat(p: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: p[k] for k in ("dataset", "method", "kind", "relation", "trained_on", "host") if k in p}
    if "target" in p:
        out.update(target=p["target"], white_box=p["white_box"])
    for k in keys:
        s = p[k]
        out.update({f"{k}_mean": s["mean"], f"{k}_low": s["low"], f"{k}_high": s["high"], f"{k}_std": s["std"]})
    return out


def write_run(root: Path, result: dict[str, Any], arts: dict[tuple[str, str, str, int], Artefact],
              samples: dict[str, dict[int, Any]], setup: CrossDomainSetup,
              models: dict[str, dict[str, nn.Module]]) -> None:
    """Write the run's CSV files, figures and ``report.md`` / ``report.html`` (``models``: per domain, the loaded
    models; a host of each domain serves the artefact attacks' success check in the gallery)."""
    res = root / "results"
    res.mkdir(exist_ok=True)
    atomic_write_text(res / "rows.csv", _csv(ROW_FIELDS, result["rows"]))
    pt = [_flat(p, ("all", "clean_correct")) for p in result["per_target"]]
    atomic_write_text(res / "per_target.csv", _csv(tuple(pt[0]) if pt else ROW_FIELDS, pt))
    hl = [_flat(h, ("all", "clean_correct", "all_minus_noise", "clean_correct_minus_noise"))
          for h in result["headline"]]
    atomic_write_text(res / "headline.csv", _csv(tuple(hl[0]) if hl else ROW_FIELDS, hl))
    figs = root / "figures"
    figs.mkdir(exist_ok=True)
    pngs = {"perturbations.png": _gallery(arts, samples, setup, models)}
    for d in setup.datasets:
        pngs[f"transfer_{d}.png"] = _bars(result, d)
    for name, png in pngs.items():
        atomic_write_bytes(figs / name, png)
    doc = report(result, {n: p for n, p in pngs.items()})
    atomic_write_text(root / "report.md", doc.markdown())
    atomic_write_text(root / "report.html", doc.html())


def _gallery(arts: dict[tuple[str, str, str, int], Artefact], samples: dict[str, dict[int, Any]],
             setup: CrossDomainSetup, models: dict[str, dict[str, nn.Module]]) -> bytes:
    k0, eps = setup.seeds[0], float(setup.eps)
    pics = {d: samples[d][k0].x[:2] for d in setup.datasets}
    labels = {d: samples[d][k0].y[:2] for d in setup.datasets}
    cols = ["UAP"] + [f"G on {d} #{i + 1}" for d in setup.datasets for i in range(len(pics[d]))]
    rows: list[tuple[str, list[torch.Tensor | None]]] = [
        ("images", [None] + [img for d in setup.datasets for img in pics[d]])]
    for d in setup.datasets:
        for h in setup.hosts:
            uap = arts[("uap", d, h, k0)].attack
            assert isinstance(uap, UniversalAttack) and uap.perturbation is not None
            v = uap.perturbation
            gen = arts[("generator", d, h, k0)].attack
            deltas = [apply_artefact(gen, models[e][h], pics[e], labels[e])[i] - pics[e][i]
                      for e in setup.datasets for i in range(len(pics[e]))]
            rows.append((f"{d}\n{h}", [match_shape(v[None], tuple(pics[d].shape[1:]))[0], *deltas]))
    return figures.perturbation_gallery(rows, cols, eps, f"Learned perturbations, seed {k0}, eps {eps:g} (grey = 0)")


_COLOURS = {"cross-domain": "tab:red", "in-domain": "tab:blue", "control": "tab:grey"}


def _bars(result: dict[str, Any], dataset: str) -> bytes:
    hs = [h for h in result["headline"] if h["dataset"] == dataset]
    noise = next((h for h in hs if h["kind"] == "noise"), None)
    meta_setup = result.get("meta", {}).get("setup", {})
    labels = [_label(h, dataset) for h in hs]
    return figures.interval_bars(labels, [h["all"]["mean"] for h in hs], [h["all"]["low"] for h in hs],
                                 [h["all"]["high"] for h in hs],
                                 f"{dataset}, eps {meta_setup.get('eps', '?')}: held-out targets (red: cross-domain, "
                                 f"blue: in-domain)", "mean untargeted success, all images (%), 95% t-interval",
                                 reference=noise["all"]["mean"] if noise else None, reference_label="noise",
                                 colours=[_COLOURS[h["relation"]] for h in hs])


def _label(h: dict[str, Any], dataset: str) -> str:
    return Method(h["method"], h["kind"], h["trained_on"], h["host"]).label(dataset)


def _ci(s: dict[str, Any], signed: bool = False) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    if s["low"] is None:
        return f.format(100 * s["mean"])
    return f"{f.format(100 * s['mean'])} [{f.format(100 * s['low'])}, {f.format(100 * s['high'])}]"


def report(result: dict[str, Any], pngs: dict[str, bytes]) -> Document:
    """The run's report: setup, findings, the headline per domain, the per-target tables, the figures, the
    trained artefacts and the provenance."""
    meta = result["meta"]
    st = meta["setup"]
    doc = Document("Cross-domain transfer of host-model perturbations")
    if st["quick"]:
        doc.add(Para(f"**Quick run**: {st['images']} evaluation images per domain and seed, generators trained on "
                     f"{st['generator_images']} images, universal perturbations from {st['uap_images']} images, "
                     f"hosts {', '.join(st['hosts'])}, "
                     + ", ".join(f"{len(t)} {d} targets" for d, t in st["targets"].items())
                     + ". A smoke test of the pipeline; the full run (the default) is the measurement."))
    doc.add(Para(f"Domains: {', '.join(st['datasets'])}. eps {st['eps']:g} (L-inf, pixels in [0, 1]) for every "
                 f"method. Seeds {st['seeds']}: each seed trains its own generators (Naseer et al. 2019, "
                 f"relativistic loss, {st['generator_epochs']} epoch(s) on the first "
                 f"{st['generator_images'] or 'all'} training images) and universal perturbations (Moosavi-Dezfooli "
                 f"et al. 2017, {st['uap_images']} training images drawn with the seed, at most {st['uap_passes']} "
                 f"passes), and draws its own {st['images']} test images per domain. I-FGSM and SGM: "
                 f"{st['steps']} steps of eps/{st['steps']} on the in-domain surrogates {', '.join(st['surrogates'])} "
                 f"(SGM gamma from the card, else 0.2). Intervals: 95% Student t over the seeds."),
            Para("Success is untargeted: the target's label on the perturbed image differs from the true label, over "
                 "all images (clean errors count as successes, as in the noise control) or over the images the "
                 "target classified correctly. Transfer means are over the held-out targets of each domain, the "
                 "models that are neither a host nor a surrogate, so every row compares on the same targets; cells "
                 "where the target is the attacker's own model are in the per-target tables. Intervals are clipped "
                 "to the possible range."))
    if meta.get("eps_note"):
        doc.add(Para(meta["eps_note"]))
    for d, note in meta["data_notes"].items():
        if note:
            doc.add(Para(f"Note ({d}): {note}"))
    doc.add(Heading("What transfers across domains"))
    for f in result["findings"]:
        doc.add(Para(f))
    for d in st["datasets"]:
        hs = [h for h in result["headline"] if h["dataset"] == d]
        doc.add(Heading(f"Evaluated on {d}"))
        rows = []
        for h in hs:
            wb = "; ".join(f"{t} {_ci(s)}" for t, s in h["white_box"].items()) or "-"
            rows.append([_label(h, d), h["relation"], _ci(h["all"]), _ci(h["clean_correct"]),
                         "-" if h["kind"] == "noise" else _ci(h["all_minus_noise"], True), wb])
        doc.add(Table(["method", "relation", "transfer success, all (%)", "clean-correct (%)",
                       "minus noise, all (points)", "white-box cell (host = target)"], rows, align="llrrrl",
                      caption="Mean over the held-out targets: "
                              + (", ".join(hs[0]["transfer_targets"]) if hs else "-") + "."))
        name = f"transfer_{d}.png"
        doc.add(Figure(f"figures/{name}", pngs[name], f"{d}: mean transfer success with 95% intervals."))
        tg = st["targets"][d]
        cell = {(p["method"], p["target"]): p for p in result["per_target"] if p["dataset"] == d}
        methods = [h["method"] for h in hs]
        prow = []
        for m in methods:
            h = next(x for x in hs if x["method"] == m)
            prow.append([_label(h, d)] + [(f"*{100 * cell[(m, t)]['all']['mean']:.1f}*" if cell[(m, t)]["white_box"]
                                           else f"{100 * cell[(m, t)]['all']['mean']:.1f}") for t in tg])
        doc.add(Heading(f"Per target on {d} (success over all images, mean over seeds; *italic*: white-box)", 3),
                Table(["method", *tg], prow, align="l" + "r" * len(tg)))
    doc.add(Heading("Learned perturbations"),
            Figure("figures/perturbations.png", pngs["perturbations.png"],
                   "Each row: one host (training domain, model): its universal perturbation, then its generator's "
                   "perturbation on two images of each domain, after clipping to [0, 1]. Mid grey is 0, black -eps, "
                   "white +eps."))
    arows = [[a["kind"], a["dataset"], a["host"], str(a["seed"]), f"{100 * a['host_fooling_rate_test']:.1f}%",
              f"{a['seconds']:.0f}" if a["seconds"] is not None else "-", "reused" if a["reused"] else "trained",
              a["path"]] for a in meta["artefacts"]]
    doc.add(Heading("Trained generators and universal perturbations"),
            Table(["kind", "trained on", "host", "seed", "fools its host (test)", "seconds", "this run", "file"],
                  arows, align="lllrrrll"),
            Para("Each file has its card beside it (the command that reproduces it, data, eps, seed, hash); use it as "
                 "generator:PATH or uap:PATH in `advkit attack` or a transfer study."))
    doc.add(Heading("Provenance"),
            Code(f"advkit {meta['advkit_version']}, torch {meta['torch_version']}; training "
                 f"{meta['train_seconds']:.0f} s, evaluation {meta['eval_seconds']:.0f} s, total "
                 f"{meta['seconds']:.0f} s\n"
                 f"command: {meta['command'] or '-'}\n"
                 f"files: results/rows.csv, results/per_target.csv, results/headline.csv, results.json, figures/, "
                 f"artefacts/, manifest.json (model, data-sample and artefact hashes)"))
    return doc
