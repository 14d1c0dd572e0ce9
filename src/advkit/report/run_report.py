"""The report of a transfer-study run: ``write_report(run_dir)`` -> ``report.md`` and ``report.html``.

Built only from the run directory's files (``results.json``, ``config.json``, ``manifest.json``, the sample and
the cells' shards), so it can be regenerated at any time, on any machine holding the directory. Figures are
written to ``figures/`` and embedded in the HTML page.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advkit.report import figures
from advkit.report.accuracy import atomic_write_text
from advkit.report.defence_table import defence_table
from advkit.report.gammas import gamma_order, gamma_text
from advkit.report.holdout import holdout_table
from advkit.report.html import Code, Document, Figure, Heading, Para, Table
from advkit.report.tables import (
    attack_norms,
    budget_label,
    budgets,
    clean_table,
    distortion_table,
    matrix,
    matrix_table,
    mean_transfer,
    paired_mean_table,
    paired_table,
    quantization_table,
    reference_table,
    row_label,
    sanity_table,
    success_name,
    targeted_table,
)
from advkit.study.runstate import RunDir, read_tensors
from advkit.study.schema import norm_label

log = logging.getLogger(__name__)

__all__ = ["build_report", "load_run", "save_document", "write_report"]


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(records, config, manifest)`` of a finished run.

    Raises:
        FileNotFoundError: the directory holds no finished run (no ``results.json``).
    """
    root = Path(run_dir)
    if not (root / "results.json").is_file():
        raise FileNotFoundError(f"{root} holds no finished run (results.json is missing); run or resume the study "
                                f"first")
    records = _read_json(root / "results.json", ("meta", "sanity"))
    config = _read_json(root / "config.json", ()) if (root / "config.json").is_file() else {}
    manifest = _read_json(root / "manifest.json", ()) if (root / "manifest.json").is_file() else {}
    return records, config, manifest


def _read_json(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A run file that must hold a JSON mapping with ``keys``; ``ValueError`` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the run's files are damaged: rerun the study with "
                         f"--force into this folder, or into a new one") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if not isinstance(data, dict) or missing:
        what = (f"a JSON {type(data).__name__} where a mapping belongs" if not isinstance(data, dict)
                else f"a mapping without {', '.join(missing)}")
        raise ValueError(f"{path} holds {what}, not the results of an advkit transfer run; check the folder, or "
                         f"rerun the study with --force")
    return data


def _save(run: RunDir, name: str, png: bytes, caption: str) -> Figure:
    run.figures.mkdir(parents=True, exist_ok=True)
    path = run.figures / name
    tmp = path.with_name(f".{name}.part")
    tmp.write_bytes(png)
    tmp.replace(path)
    return Figure(f"figures/{name}", png, caption)


def _heatmap(run: RunDir, records: dict[str, Any], eps: str, norm: str, idx: int) -> Figure:
    rows, cols, cells = matrix(records, eps, norm=norm)
    cols = [c for c in cols if any(c != key[0] for key in rows)]
    many = len(records["meta"]["sources"]) > 1
    vals = np.full((len(rows), len(cols)), np.nan)
    for i, key in enumerate(rows):
        for j, c in enumerate(cols):
            r = cells.get((key, c))
            if r is not None and r["mean"] is not None and not (c == key[0] and c != "white-box"):
                vals[i, j] = r["mean"]
    at = budget_label(eps, norm)
    png = figures.heatmap(vals, [row_label(k, many) for k in rows], cols, f"transfer {success_name(records)}, eps {at}")
    return _save(run, f"matrix_{idx}.png", png, f"Transfer matrix at eps {at} (mean over seeds, %).")


def _eps_curves(run: RunDir, records: dict[str, Any], eps_values: dict[str, float]) -> Figure:
    series: dict[str, dict[str, list[tuple[float, float, float | None]]]] = defaultdict(lambda: defaultdict(list))
    norms = attack_norms(records)
    mixed = len({n for _, n in budgets(records)}) > 1
    for (src, atk, eps, g), m in mean_transfer(records).items():
        name = atk + (f" γ={g:g}" if g is not None else "") + (f" ({norm_label(norms.get(atk))})" if mixed else "")
        series[src][name].append((eps_values[eps], m["mean"], m["std"]))
    norm_text = "each attack in its own norm" if mixed else norm_label(budgets(records)[0][1])
    png = figures.curves(series, f"eps (pixel units of [0, 1], {norm_text})", "Mean transfer success vs eps")
    return _save(run, "success_vs_eps.png", png, "Mean transfer success over the targets vs eps; bars: std over "
                                                 "seeds.")


def _gamma_text(config: dict[str, Any], records: dict[str, Any]) -> str:
    """The SGM decays of the run, for the report's first paragraph: the experiment's top-level ``gamma`` as written,
    or the values the cells used when an attack sets its own (``settings: {gamma: [...]}``)."""
    used = sorted({c["gamma"] for c in records["cells"] if c.get("gamma") is not None}, key=gamma_order)
    if not used:
        return "."
    own = any(isinstance(a, dict) and "gamma" in (a.get("settings") or {}) for a in config.get("attacks", []))
    text = ", ".join(g if isinstance(g, str) else f"{g:g}" for g in used) if own else json.dumps(config.get("gamma"))
    if any(c.get("sgm_gammas") for c in records["cells"]):
        text += " (auto on an ensemble: each member's own, listed in results.json's cells as sgm_gammas)"
    return f"; SGM gamma: {text}."


def _gamma_curves(run: RunDir, records: dict[str, Any]) -> Figure | None:
    mt = mean_transfer(records)
    gammas: dict[tuple[str, str], set[float]] = defaultdict(set)
    for (src, atk, _eps, g) in mt:
        if g is not None and not isinstance(g, str):  # "auto" (an ensemble's members' own) is not on the axis
            gammas[(src, atk)].add(g)
    if not any(len(v) > 1 for v in gammas.values()):
        return None
    multi_eps = len(budgets(records)) > 1
    norms = attack_norms(records)
    series: dict[str, dict[str, list[tuple[float, float, float | None]]]] = defaultdict(lambda: defaultdict(list))
    base: dict[str, dict[str, float]] = defaultdict(dict)
    for (src, atk, eps, g), m in mt.items():
        name = atk + (f" @ {budget_label(eps, norms.get(atk, 'linf'))}" if multi_eps else "")
        if g is not None and not isinstance(g, str) and len(gammas[(src, atk)]) > 1:
            series[src][name].append((g, m["mean"], m["std"]))
        elif g is None and src in {s for s, _ in gammas}:
            base[src][name] = m["mean"]
    png = figures.curves(series, "gamma (SGM decay on residual gradients)", "Mean transfer success vs gamma", base)
    return _save(run, "success_vs_gamma.png", png, "Mean transfer success vs gamma; dashed: attacks without SGM "
                                                   "at the same eps.")


def _examples(run: RunDir, records: dict[str, Any], config: dict[str, Any]) -> Figure | None:
    cells_file = run.state / "cells.json"
    if not cells_file.is_file() or not run.sample_file.is_file():
        return None
    cells = json.loads(cells_file.read_text())
    if not cells:
        return None
    eps_val = {e: float(d["eps_value"]) for e, d in ((x["eps"], x) for x in records["sanity"]["per_eps"])}
    sgm = [c for c in cells if c["gamma"] is not None]
    pool = sgm or [c for c in cells if c["attack"] != records["meta"]["baseline"]] or cells
    top = max(eps_val[c["eps"]] for c in pool)
    cell = next(c for c in pool if eps_val[c["eps"]] == top)
    t, meta = run.read_shard(cell["id"], 0)
    sample, smeta = read_tensors(run.sample_file)
    seed_pos = list(records["meta"]["seeds"]).index(cell["seed"])
    k = min(5, int(t["x_adv"].shape[0]))
    if k == 0:
        return None
    pick = sample["picks"][seed_pos][:k]
    x = sample["images"][pick].float() / 255.0
    classes = smeta.get("classes") or []

    def name(i: int) -> str:
        return classes[i] if i < len(classes) else str(i)

    models = meta["models"][:4]
    labels = [name(int(v)) for v in sample["y"][pick]]
    preds = [[name(int(t["pred"][j][i])) + (" (fooled)" if int(t["pred"][j][i]) != int(sample["y"][pick][i]) else "")
              for j in range(len(models))] for i in range(k)]
    norm = attack_norms(records).get(cell["attack"], "linf")
    title = f"{cell['source']} / {cell['attack']}" + gamma_text(cell["gamma"]).replace(" (", " ").rstrip(")") \
        + f", eps {budget_label(cell['eps'], norm)}, seed {cell['seed']}"
    png = figures.example_grid(x, t["x_adv"][:k], labels, preds, [f"{m} (source)" if i == 0 else m
                                                                  for i, m in enumerate(models)], top, title)
    return _save(run, "examples.png", png, f"Examples ({title}): clean, perturbation amplified to fill the range, "
                                           f"adversarial; predictions on the adversarial image below it.")


def _provenance(manifest: dict[str, Any]) -> list[Any]:
    if not manifest:
        return []
    rows = [[spec, str(m.get("arch") or "-"), str(m.get("connections") or "-"),
             str(m.get("sha256") or "-")[:16], str(m.get("test_accuracy") or "-")]
            for spec, m in manifest.get("models", {}).items()]
    d = manifest.get("data", {})
    text = (f"advkit {manifest.get('advkit_version')}, torch {manifest.get('torch_version')}, Python "
            f"{manifest.get('python')}, {manifest.get('platform')}.\n"
            f"command: {manifest.get('command') or '-'}\n"
            f"data: {d.get('dataset')} {d.get('split')} from {d.get('source')}; pool of {d.get('pool')} images "
            f"({d.get('scanned')} scanned); indices sha256 {d.get('indices_sha256')}; images sha256 "
            f"{d.get('images_sha256')}\n"
            f"config digest: {manifest.get('config_digest')}\n"
            f"sessions: {json.dumps(manifest.get('sessions', []))}")
    return [Heading("Provenance"), Table(["model", "arch", "connections", "weights sha256 (16)", "card accuracy"],
                                         rows, align="lllll"), Code(text)]


def query_table(records: dict[str, Any]) -> Table | None:
    """Per cell of a query attack: the queries it spent on its source (the model it queried), or ``None``."""
    rows = []
    norms = attack_norms(records)
    for c in records.get("cells", []):
        q = c.get("queries")
        if not q:
            continue
        within = q["within"]
        norm = c.get("norm") or norms.get(c["attack"], "linf")
        rows.append([c["source"], c["attack"], budget_label(str(c["eps"]), norm), str(c["seed"]), str(q["budget"]),
                     f"{100 * q['success']['k'] / max(q['success']['n'], 1):.1f}%",
                     f"{q['median_queries_success']:.0f}", f"{q['mean_queries_success']:.1f}",
                     f"{q['mean_queries_all']:.1f}",
                     *(f"{100 * within[m]['k'] / max(within[m]['n'], 1):.1f}%" if m in within else "-"
                       for m in ("100", "1000"))])
    if not rows:
        return None
    return Table(["source", "attack", "eps", "seed", "budget", "fooled", "median queries (fooled)",
                  "mean queries (fooled)", "mean queries (all)", "fooled within 100", "within 1000"], rows,
                 align="llllrrrrrrr")


def build_report(run_dir: str | Path, reference: dict[str, Any] | None = None) -> Document:
    """Build the report of a finished run as a :class:`~advkit.report.html.Document` (figures are saved)."""
    run = RunDir(run_dir)
    records, config, manifest = load_run(run.root)
    meta = records["meta"]
    reference = reference or config.get("reference")
    doc = Document(str(meta.get("title") or "Transfer study"))
    runs = budgets(records)
    by_norm: dict[str, list[str]] = defaultdict(list)
    for e, n in runs:
        by_norm[n].append(e)
    eps_text = "; ".join(f"{', '.join(es)} ({norm_label(n)})" for n, es in by_norm.items())
    doc.add(Para(f"Dataset **{meta['dataset']}** ({meta['split']} split): {meta['n']} images per seed, seeds "
                 f"{meta['seeds']}, chosen from a pool of {meta['pool']} "
                 + ("that every model classifies correctly" if meta["only_correct"] else "(all images)")
                 + f". Sources: {', '.join(meta['sources'])}. Targets: {', '.join(meta['targets'])}. Attacks: "
                 f"{', '.join(meta['attacks'])} (baseline {meta['baseline']}). eps: {eps_text}; "
                 f"{config.get('steps', '?')} steps, step size {config.get('alpha') or 'eps/steps'}"
                 + _gamma_text(config, records)),
            Para(meta["success_definition"] + "."))
    tt = targeted_table(records)
    if tt is not None:
        doc.add(Para(f"Targeted study ({meta['targeted']}): every rate below is the **targeted success (%)**, the "
                     "share of images a model labels with its target class; the untargeted fooling rate is beside it "
                     "in the next table and in results/success.csv (fooled_rate); the Wilson intervals and McNemar "
                     "tests are of the targeted success." + (f" {meta['targeted_note']}." if meta.get(
                         "targeted_note") else "")),
                Heading("Targeted success and fooling rate"), tt)
    ht = holdout_table(records)
    if ht is not None:
        doc.add(Heading("Hold-out ensembles"), ht)
    if meta.get("data_note"):
        doc.add(Para(f"Note: {meta['data_note']}"))
    for n in meta.get("notes") or []:
        doc.add(Para(f"Note: {n}"))
    sanity = records["sanity"]
    doc.add(Heading("Sanity checks"), sanity_table(records))
    if sanity["problems"]:
        doc.add(Para("**Problems:** " + "; ".join(sanity["problems"])))
    eps_values = {e["eps"]: float(e["eps_value"]) for e in sanity["per_eps"]}
    doc.add(Heading("Transfer matrix" + (f": {success_name(records)} (%)" if meta.get("targeted") is not None
                                         else "")))
    for i, (eps, norm) in enumerate(runs):
        if len(runs) > 1:
            doc.add(Heading(f"eps {budget_label(eps, norm)}", 3))
        doc.add(matrix_table(records, eps, norm=norm))
        dt = defence_table(records, eps, norm)  # defended targets: the drop in success each defence buys
        if dt is not None:
            doc.add(dt)
        if i < 6:
            doc.add(_heatmap(run, records, eps, norm, i))
    doc.add(Heading(f"Paired comparison with {meta['baseline']} (McNemar)"))
    for eps, norm in runs:
        t = paired_table(records, eps, norm)
        if t is not None:
            if len(runs) > 1:
                doc.add(Heading(f"eps {budget_label(eps, norm)}", 3))
            doc.add(t)
    pm = paired_mean_table(records)
    if pm is not None:
        doc.add(Heading("Mean paired difference over the targets"), pm)
    qt = query_table(records)
    if qt is not None:
        doc.add(Heading("Query cost (query attacks, on their source)"), qt)
    if len(meta["eps"]) > 1:
        doc.add(Heading("Success vs eps"), _eps_curves(run, records, eps_values))
    g = _gamma_curves(run, records)
    if g is not None:
        doc.add(Heading("Success vs gamma"), g)
    ex = _examples(run, records, config)
    if ex is not None:
        doc.add(Heading("Examples"), ex)
    doc.add(Heading("Float vs 8-bit examples"), quantization_table(records))
    if not meta["only_correct"]:
        doc.add(Heading("Success over images each target classified correctly"))
        for eps, norm in runs:
            doc.add(matrix_table(records, eps, over="clean-correct", norm=norm))
    else:
        doc.add(Para("Every attacked image is classified correctly by every model, so success over all images and "
                     "over each target's clean-correct images coincide (both are in results/success.csv)."))
    doc.add(Heading("Distortion"), distortion_table(records))
    doc.add(Heading("Clean accuracy"), clean_table(records))
    if reference:
        t = reference_table(records, reference)
        if t is not None:
            doc.add(Heading("Comparison with the paper"), t)
    doc.add(*_provenance(manifest))
    doc.add(Para("Files: results/*.csv (tidy records), results.json, cells/ (adversarial examples as float32 and "
                 "8-bit safetensors per shard), png/ (8-bit PNG samples), figures/, manifest.json, config.yaml."))
    return doc


def save_document(doc: Document, root: str | Path, stem: str = "report") -> dict[str, Path]:
    """Write ``doc`` as ``ROOT/STEM.md`` and the self-contained ``ROOT/STEM.html`` (atomically)."""
    root = Path(root)
    md, page = root / f"{stem}.md", root / f"{stem}.html"
    atomic_write_text(md, doc.markdown())
    atomic_write_text(page, doc.html())
    log.info("report written: %s", page)
    return {"markdown": md, "html": page}


def write_report(run_dir: str | Path, reference: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md`` and the self-contained ``report.html`` of a finished run.

    Args:
        run_dir: the run directory.
        reference: paper numbers to compare with (default: the config's ``reference``); see
            :func:`advkit.report.tables.reference_table`.

    Returns:
        ``{"markdown": path, "html": path}``.

    Raises:
        FileNotFoundError: the directory holds no finished run.
    """
    return save_document(build_report(run_dir, reference), run_dir)
