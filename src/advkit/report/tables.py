"""Tables of a transfer study's records (``results.json``), as report blocks (Markdown / HTML).

All rates are shown in percent. Unless a caption says otherwise, success is measured on the float examples over
all attacked images (the SGM paper's definition); "mean +/- std" is over seeds. In a targeted study (records'
``meta.targeted``) the rates are targeted success (the model labels the image with its target class), and every
caption says so (:func:`success_name`); :func:`targeted_table` shows the untargeted fooling rate beside it.

A budget is an eps and the norm it bounds, written ``0.1 (L-inf)`` or ``0.5 (L2)`` wherever a table shows one: the
transfer matrix and the paired tables are drawn per budget, never an L2 radius beside an L-inf one under one eps.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from advkit.evaluate.stats import summarize_seeds
from advkit.report.gammas import gamma_order, gamma_text
from advkit.report.html import Table
from advkit.study.defended import order_targets
from advkit.study.schema import norm_label

__all__ = ["RowKey", "attack_norms", "budget_label", "budgets", "clean_table", "distortion_table", "matrix",
           "matrix_table", "mean_transfer", "paired_table", "pct", "quantization_table", "reference_table",
           "row_label", "sanity_table", "success_name", "targeted_table", "text_matrix"]

RowKey = tuple[str, str, Any]  # (source, attack, gamma)


def attack_norms(records: dict[str, Any]) -> dict[str, str]:
    """The norm each attack's budgets bound, by label (records written before norms were recorded: read from the
    cells' attack configs; ``linf`` where a config has none)."""
    norms = records["meta"].get("norms")
    if norms:
        return dict(norms)
    return {c["attack"]: str((c.get("config") or {}).get("norm", "linf")) for c in records.get("cells", [])}


def budgets(records: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's budgets, ``(eps, norm)`` in the order of its cells: one transfer matrix each."""
    if records["meta"].get("budgets"):
        return [(b["eps"], b["norm"]) for b in records["meta"]["budgets"]]
    norms = attack_norms(records)
    found = dict.fromkeys((c["eps"], norms.get(c["attack"], "linf")) for c in records.get("cells", []))
    return list(found) or [(e, "linf") for e in records["meta"]["eps"]]


def budget_label(eps: str, norm: str) -> str:
    """``("0.1", "linf") -> "0.1 (L-inf)"``."""
    return f"{eps} ({norm_label(norm)})"


def _norm_at(records: dict[str, Any], eps: str, norm: str | None) -> str:
    """``norm``, or the one norm of the budgets at ``eps`` (``ValueError`` where there are several)."""
    if norm is not None:
        return norm
    found = [n for e, n in budgets(records) if e == eps]
    if len(found) > 1:
        raise ValueError(f"eps {eps} is a budget in several norms ({', '.join(map(norm_label, found))}); pass "
                         f"norm= one of {found}")
    return found[0] if found else "linf"


def _norm_of(r: dict[str, Any], norms: dict[str, str]) -> str:
    return str(r.get("norm") or norms.get(r["attack"], "linf"))


def _same_norm(r: dict[str, Any], norms: dict[str, str]) -> bool:
    """Whether a paired row compares two attacks of one norm (records written before norms were recorded also
    compared an L2 attack with an L-inf baseline at the same number: those rows are left out)."""
    return norms.get(r["baseline"], "linf") == _norm_of(r, norms)


def pct(x: float | None, digits: int = 1) -> str:
    """``0.4503 -> "45.0"``; ``None`` / NaN -> ``"-"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{digits}f}"


def success_name(records: dict[str, Any]) -> str:
    """What the records' rates count: ``"targeted success"`` in a targeted study, else ``"success"``."""
    return "targeted success" if records["meta"].get("targeted") is not None else "success"


def _ms(mean: float | None, std: float | None) -> str:
    return pct(mean) if std is None or mean is None else f"{pct(mean)} ± {pct(std)}"


def row_label(key: RowKey, many_sources: bool = True) -> str:
    """``("resnet20", "sgm", 0.2) -> "resnet20 / sgm (γ=0.2)"``."""
    src, atk, g = key
    text = f"{src} / {atk}" if many_sources else atk
    return text + gamma_text(g)


def _order(records: dict[str, Any]) -> tuple[list[str], list[str]]:
    meta = records["meta"]
    return list(meta["sources"]), list(meta["attacks"])


def matrix(records: dict[str, Any], eps: str, images: str = "float", over: str = "all", norm: str | None = None
           ) -> tuple[list[RowKey], list[str], dict[tuple[RowKey, str], dict[str, Any]]]:
    """The transfer matrix at one budget (``eps`` in ``norm``; ``None``: the one norm used at ``eps``):
    ``(rows, columns, cells)``.

    Rows are (source, attack, gamma) in config order; columns are ``"white-box"`` then the targets; a cell is the
    summary record (mean, std, ... over seeds) or absent.
    """
    sources, attacks = _order(records)
    targets = order_targets(records["meta"]["targets"], records["meta"].get("models") or {})  # defended after own
    norm, norms = _norm_at(records, eps, norm), attack_norms(records)
    cells: dict[tuple[RowKey, str], dict[str, Any]] = {}
    keys = set()
    for r in records["summary"]:
        if r["eps"] != eps or r["images"] != images or r["over"] != over or _norm_of(r, norms) != norm:
            continue
        key = (r["source"], r["attack"], r["gamma"])
        keys.add(key)
        cells[(key, "white-box" if r["white_box"] else r["target"])] = r
    rows = sorted(keys, key=lambda k: (sources.index(k[0]), attacks.index(k[1]), gamma_order(k[2])))
    return rows, ["white-box", *targets], cells


def mean_transfer(records: dict[str, Any], images: str = "float", over: str = "all"
                  ) -> dict[tuple[str, str, str, Any], dict[str, Any]]:
    """Per (source, attack, eps, gamma): the mean success over the targets other than the source, summarised over
    seeds (``summarize_seeds`` of the per-seed means) as ``{"mean", "std", "low", "high", "seeds"}``."""
    per_seed: dict[tuple[str, str, str, Any], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records["success"]:
        if r["images"] == images and r["over"] == over and not r["white_box"] and r["rate"] is not None:
            per_seed[(r["source"], r["attack"], r["eps"], r["gamma"])][r["seed"]].append(r["rate"])
    out = {}
    for key, seeds in per_seed.items():
        s = summarize_seeds([sum(v) / len(v) for v in seeds.values()])
        out[key] = {"mean": s.mean, "std": s.std, "low": s.low, "high": s.high, "seeds": s.n}
    return out


def matrix_table(records: dict[str, Any], eps: str, images: str = "float", over: str = "all",
                 norm: str | None = None) -> Table:
    """The transfer matrix at ``eps`` (in ``norm``) as a table: mean ± std over seeds, a mean-transfer column,
    shaded cells."""
    norm = _norm_at(records, eps, norm)
    rows, cols, cells = matrix(records, eps, images, over, norm)
    cols = [c for c in cols if any(c != key[0] for key in rows)]  # a column that is only ever the source: white-box
    many = len(records["meta"]["sources"]) > 1
    means = mean_transfer(records, images, over)
    body, shade = [], []
    for key in rows:
        line, tint = [row_label(key, many)], [None]
        for c in cols:
            r = cells.get((key, c))
            if c == key[0] and c != "white-box":
                line.append("(source)")
                tint.append(None)
            elif r is None:
                line.append("-")
                tint.append(None)
            else:
                line.append(_ms(r["mean"], r["std"]))
                tint.append(r["mean"])
        m = means.get((key[0], key[1], eps, key[2]))
        line.append(_ms(m["mean"], m["std"]) if m else "-")
        tint.append(m["mean"] if m else None)
        body.append(line)
        shade.append(tint)
    seeds = len(records["meta"]["seeds"])
    what = "all attacked images" if over == "all" else "images the target classified correctly"
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    cap = (f"{success_name(records).capitalize()} rate (%) at eps {budget_label(eps, norm)} on {images} examples "
           f"over {what}; {spread} of "
           f"{records['meta']['n']} "
           f"images. 'white-box' is the source on its own examples; 'mean transfer' averages the other targets.")
    return Table(["source / attack" if many else "attack", *cols, "mean transfer"], body, cap, shade=shade)


def targeted_table(records: dict[str, Any]) -> Table | None:
    """A targeted study's targeted success beside the untargeted fooling rate, per (source, attack, eps, gamma):
    white-box and mean over the transfer targets (float examples, all images; mean over seeds), with the pooled
    95% Wilson interval of the white-box targeted success. ``None`` for an untargeted study."""
    if records["meta"].get("targeted") is None:
        return None
    norms = attack_norms(records)
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records["summary"]:
        if r["images"] == "float" and r["over"] == "all":
            groups[(r["source"], r["attack"], r["eps"], r["gamma"])]["wb" if r["white_box"] else "tr"].append(r)
    body = []
    for (src, atk, eps, g), rs in groups.items():
        wb, tr = rs.get("wb", []), rs.get("tr", [])
        wb_t, wb_f, tr_t, tr_f = (pct(sum(v) / len(v)) if (v := [r[k] for r in rows if r.get(k) is not None])
                                  else "-" for rows, k in ((wb, "mean"), (wb, "fooled_mean"), (tr, "mean"),
                                                           (tr, "fooled_mean")))
        ci = f"[{pct(wb[0]['pooled_low'])}, {pct(wb[0]['pooled_high'])}]" if wb else "-"
        body.append([src, atk + gamma_text(g), budget_label(eps, norms.get(atk, "linf")),
                     wb_t, ci, wb_f, tr_t, tr_f])
    return Table(["source", "attack", "eps", "white-box targeted success %", "95% Wilson", "white-box fooling rate %",
                  "transfer targeted success %", "transfer fooling rate %"], body,
                 f"Targeted success (the model labels the image with its target; {records['meta']['targeted']}) "
                 "beside the untargeted fooling rate (the label differs from the true one), float examples over all "
                 "images, mean over seeds; the transfer columns average the targets other than the source.",
                 align="lllrrrrr")


def clean_table(records: dict[str, Any]) -> Table:
    """Clean accuracy of every model with its 95% Wilson interval."""
    rows = [[r["model"], r["role"], pct(r["rate"], 2), f"[{pct(r['ci_low'], 2)}, {pct(r['ci_high'], 2)}]",
             f"{r['k']}/{r['n']}"] for r in records["clean"]]
    return Table(["model", "role", "accuracy %", "95% Wilson", "correct"], rows,
                 "Clean top-1 accuracy over every image scanned while choosing the sample.", align="llrrr")


def paired_table(records: dict[str, Any], eps: str, norm: str | None = None) -> Table | None:
    """Difference to the baseline (points), McNemar's exact test per seed: ``+12.5 (p≤0.001, 3/3)`` gives the mean
    difference, the largest p-value over seeds and how many seeds reached p < 0.05; at ``eps`` in ``norm``."""
    norm, norms = _norm_at(records, eps, norm), attack_norms(records)
    rows_ps = [r for r in records["paired_summary"] if r["eps"] == eps and not r["white_box"]
               and r.get("baseline", records["meta"]["baseline"]) == records["meta"]["baseline"]
               and _norm_of(r, norms) == norm and _same_norm(r, norms)]
    if not rows_ps:
        return None
    targets = list(dict.fromkeys(r["target"] for r in rows_ps))
    sources, attacks = _order(records)
    by_key: dict[RowKey, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows_ps:
        by_key[(r["source"], r["attack"], r["gamma"])][r["target"]] = r
    many = len(sources) > 1
    body = []
    for key in sorted(by_key, key=lambda k: (sources.index(k[0]), attacks.index(k[1]), gamma_order(k[2]))):
        line = [row_label(key, many)]
        for t in targets:
            r = by_key[key].get(t)
            if r is None:
                line.append("-")
                continue
            p = r["p_exact_max"]
            ptxt = "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"
            line.append(f"{100 * r['difference_mean']:+.1f} ({ptxt}, {r['seeds_significant']}/{r['seeds']})")
        body.append(line)
    base = records["meta"]["baseline"]
    return Table(["source / attack" if many else "attack", *targets], body,
                 f"{success_name(records).capitalize()} minus {base}'s on the same images at eps "
                 f"{budget_label(eps, norm)} (points, mean over "
                 f"seeds); McNemar's exact test: the largest p over seeds, and in how many seeds p < 0.05.")


def paired_mean_table(records: dict[str, Any]) -> Table | None:
    """Difference to each baseline averaged over the transfer targets, mean over seeds with its 95% t-interval."""
    norms = attack_norms(records)
    rows = [r for r in records.get("paired_mean") or [] if _same_norm(r, norms)]
    if not rows:
        return None
    sources, attacks = _order(records)
    bases = list(dict.fromkeys(r["baseline"] for r in rows))
    eps_list = list(dict.fromkeys((r["eps"], _norm_of(r, norms)) for r in rows))
    by_key: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_key[(r["source"], r["attack"], r["gamma"], (r["eps"], _norm_of(r, norms)))][r["baseline"]] = r
    many = len(sources) > 1
    body = []
    for key in sorted(by_key, key=lambda k: (sources.index(k[0]), eps_list.index(k[3]), attacks.index(k[1]),
                                             gamma_order(k[2]))):
        line = [row_label(key[:3], many) + (f" @ {budget_label(*key[3])}" if len(eps_list) > 1 else "")]
        for b in bases:
            r = by_key[key].get(b)
            if r is None:
                line.append("-")
            elif r["t_low"] is None:
                line.append(f"{100 * r['difference_mean']:+.1f}")
            else:
                line.append(f"{100 * r['difference_mean']:+.1f} [{100 * r['t_low']:+.1f}, {100 * r['t_high']:+.1f}]")
        body.append(line)
    at = f" at eps {budget_label(*eps_list[0])}" if len(eps_list) == 1 else ""
    return Table(["source / attack" if many else "attack", *[f"vs {b}" for b in bases]], body,
                 f"Success minus the baseline's on the same images{at}, averaged over the transfer targets "
                 f"(white-box excluded) in each seed; mean over seeds [Student-t 95% interval] (points).")


def distortion_table(records: dict[str, Any]) -> Table:
    """Perturbation sizes per (source, attack, eps), float and 8-bit, averaged over seeds (L-inf: the maximum)."""
    norms = attack_norms(records)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for d in records["distortion"]:
        groups[(d["source"], d["attack"], d["eps"], d["gamma"], d["images"])].append(d)
    body = []
    for (src, atk, eps, g, images), ds in groups.items():
        body.append([src, atk + gamma_text(g), budget_label(eps, _norm_of(ds[0], norms)),
                     images,
                     f"{max(d['linf_max'] for d in ds):.5f}", f"{sum(d['l2_mean'] for d in ds) / len(ds):.3f}",
                     f"{100 * sum(d['l0_mean'] for d in ds) / len(ds):.1f}"])
    return Table(["source", "attack", "eps", "images", "L-inf max", "L2 mean", "L0 mean %"], body,
                 "L0: share of pixel values changed by more than 1e-6.", align="llllrrr")


def quantization_table(records: dict[str, Any]) -> Table:
    """Mean transfer success on the float examples and after rounding to 8-bit PNG levels."""
    fl, q = mean_transfer(records, "float"), mean_transfer(records, "8bit")
    norms = attack_norms(records)
    wb: dict[tuple[Any, ...], dict[str, float]] = defaultdict(dict)
    for r in records["summary"]:
        if r["white_box"] and r["over"] == "all":
            wb[(r["source"], r["attack"], r["eps"], r["gamma"])][r["images"]] = r["mean"]
    body = []
    for key, f in fl.items():
        g = key[3]
        body.append([key[0], key[1] + gamma_text(g),
                     budget_label(key[2], norms.get(key[1], "linf")),
                     pct(wb[key].get("float")), pct(wb[key].get("8bit")), pct(f["mean"]),
                     pct(q.get(key, {}).get("mean"))])
    return Table(["source", "attack", "eps", "white-box float", "white-box 8-bit", "transfer float",
                  "transfer 8-bit"], body, f"{success_name(records).capitalize()} (%) before and after rounding "
                 "to 8 bits within the budget.",
                 align="lllrrrr")


def sanity_table(records: dict[str, Any]) -> Table:
    """The sanity checks: largest perturbation per eps, NaN count, pixel range, SGM hooks, the models' checks."""
    s = records["sanity"]
    rows = []
    for e in s["per_eps"]:
        norm = e.get("norm", "linf")  # records written before norms were recorded: L-inf
        size = "l2_max" if norm == "l2" else "linf_max"
        what = norm_label("l2" if norm == "l2" else "linf")
        rows.append([f"largest {what} perturbation at eps {budget_label(e['eps'], norm)} = {e['eps_value']:.5f}",
                     f"{e[size]:.6f} (8-bit {e[f'{size}_8bit']:.6f})",
                     "ok" if e["within_budget"] else "FAILED"])
    rows.append(["NaN values in adversarial examples", str(s["nan_count"]), "ok" if s["nan_count"] == 0 else "FAILED"])
    inside = 0 <= s["pixel_min"] and s["pixel_max"] <= 1
    rows.append(["pixel range", f"[{s['pixel_min']:.4f}, {s['pixel_max']:.4f}]", "ok" if inside else "FAILED"])
    if s["sgm"]:
        fired = [x["hooks_fired"] for x in s["sgm"]]
        conns = sorted({x["connections"] for x in s["sgm"]})
        rows.append([f"SGM hooks fired ({len(fired)} cells; connections found: {', '.join(map(str, conns))})",
                     f"min {min(fired)}, max {max(fired)} per cell", "ok" if min(fired) > 0 else "FAILED"])
    for name, checks in (s.get("models") or {}).items():  # advkit.evaluate.check_model, once per model
        failed = [c for c in checks if not c["ok"]]
        rows.append([f"model {name}: " + ", ".join(c["name"].replace("_", " ") for c in checks),
                     "; ".join(c["detail"] for c in failed) if failed else "all passed",
                     "WARNING" if failed else "ok"])
    return Table(["check", "value", "status"], rows, align="lll")


def reference_table(records: dict[str, Any], reference: dict[str, Any]) -> Table | None:
    """Paper numbers next to ours. Each reference row: ``attack``, ``value`` (%), optional ``paper_source`` /
    ``paper_target`` (the paper's models) and ``source`` / ``target`` (ours; ``target: mean`` compares with the
    mean transfer). Also shows each attack's gain over the reference baseline, paper vs ours."""
    rows = reference.get("rows") or []
    if not rows:
        return None
    means = mean_transfer(records)
    summ = {(r["source"], r["attack"], r["eps"], r["target"]): r for r in records["summary"]
            if r["images"] == "float" and r["over"] == "all"}
    eps = str(reference.get("eps", records["meta"]["eps"][0]))
    base = reference.get("baseline", records["meta"]["baseline"])

    def ours(src: str, atk: str, tgt: str) -> float | None:
        if tgt == "mean":
            m = [v["mean"] for k, v in means.items() if k[0] == src and k[1] == atk and k[2] == eps]
            return m[0] if m else None
        r = summ.get((src, atk, eps, tgt))
        return None if r is None else r["mean"]

    paper_base = {(r.get("paper_source"), r.get("paper_target")): r["value"] for r in rows if r["attack"] == base}
    body = []
    for r in rows:
        o = ours(str(r.get("source")), str(r["attack"]), str(r.get("target", "mean")))
        ob = ours(str(r.get("source")), base, str(r.get("target", "mean")))
        pb = paper_base.get((r.get("paper_source"), r.get("paper_target")))
        paper_gain = "-" if pb is None or r["attack"] == base else f"{r['value'] - pb:+.1f}"
        our_gain = "-" if o is None or ob is None or r["attack"] == base else f"{100 * (o - ob):+.1f}"
        body.append([f"{r.get('paper_source', '?')} → {r.get('paper_target', '?')}", str(r["attack"]),
                     f"{float(r['value']):.1f}", f"{r.get('source', '?')} → {r.get('target', 'mean')}", pct(o),
                     paper_gain, our_gain])
    cap = str(reference.get("citation", "")) + (f" {reference['note']}" if reference.get("note") else "") + \
        f" Ours at eps {budget_label(eps, attack_norms(records).get(base, 'linf'))}."
    return Table(["paper: source → target", "attack", "paper %", "ours: source → target", "ours %",
                  f"paper gain vs {base}", f"our gain vs {base}"], body, cap.strip(), align="llrlrrr")


def text_matrix(records: dict[str, Any], eps: str, norm: str | None = None) -> str:
    """The transfer matrix at ``eps`` (in ``norm``; ``None``: the one norm used at ``eps``) as aligned plain text
    (for a terminal), mean ± std over seeds in %."""
    norm = _norm_at(records, eps, norm)
    t = matrix_table(records, eps, norm=norm)
    rows = [list(t.headers), *[list(r) for r in t.rows]]
    widths = [max(len(str(r[j])) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in
                               enumerate(zip(r, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    what = "targeted transfer success" if success_name(records) != "success" else "transfer success"
    return f"{what} (%) at eps {budget_label(eps, norm)}, {records['meta']['n']} images x " \
           f"{len(records['meta']['seeds'])} " \
           f"seed(s):\n" + "\n".join(lines)
