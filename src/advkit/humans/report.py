"""The report of ``advkit analyze humans``: people vs clean controls vs the attacked model vs the distance proxy on
JSMA's adversarial samples (Papernot et al., "The Limitations of Deep Learning in Adversarial Settings", EuroS&P
2016, asked people "is this a numeric digit?" and "what digit is it?"), with per-pair tables, two heatmaps, the
attention rule, the drop counts and a plain-language verdict computed from the numbers.

Files: ``report.md`` and the self-contained ``report.html`` (:func:`advkit.report.run_report.save_document`),
``source_heatmap.png``, ``target_heatmap.png``, ``pairs.csv`` and ``answers.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advkit._files import atomic_write_bytes, atomic_write_text, csv_text
from advkit.humans.analysis import HumansStudy, Share, write_answers_csv
from advkit.report.figures import heatmap
from advkit.report.html import Document, Figure, Heading, Para, Table
from advkit.report.run_report import save_document

__all__ = ["build_humans_document", "verdict", "write_humans_report"]


def _pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.0f}%"


def verdict(h: HumansStudy) -> str:
    """One sentence from the numbers: what people read adversarial samples as, against the model and the proxy."""
    adv, ctl = h.overall["adversarial"], h.overall["control"]
    people = f"{h.counts['kept']} participant{'s' if h.counts['kept'] != 1 else ''}"
    if not adv["source"].answers:
        return f"{people} answered no adversarial sample yet; clean controls: {ctl['source'].text()} labelled with " \
               f"their class."
    src, tgt = adv["source"], adv["target"]
    lead = "people still read" if src.value >= 0.5 else "people read only"
    said = (f"{lead} {src.text()} of adversarial samples as their source class and {tgt.text()} as the attacker's "
            f"target ({people}, {src.answers} answers)")
    if ctl["source"].answers:
        said += f"; clean controls: {ctl['source'].text()} read as their class"
    m = h.model
    said += (f"; the model reads {_pct(m['adversarial_source'].value)} of the same samples as their source class "
             f"and {_pct(m['adversarial_target'].value)} as the target")
    if h.proxy["examples"]:
        said += (f"; the distance proxy puts {_pct(h.proxy['share_nearer_target'])} of them nearer a target-class "
                 f"training image than a source-class one")
    return said[0].upper() + said[1:] + "."


def _row(name: str, shares: dict[str, Share], cols: tuple[str, ...]) -> list[str]:
    first = next(iter(shares.values()))
    return [name, *(shares[c].text() if c in shares else "-" for c in cols), str(first.answers),
            str(first.participants)]


def _overall_table(h: HumansStudy) -> Table:
    cols = ("is_digit", "source", "target")
    m = h.model
    proxy = h.proxy
    rows = [_row("people, adversarial samples", h.overall["adversarial"], cols),
            _row("people, clean controls", h.overall["control"], cols),
            ["model, adversarial samples", "-", m["adversarial_source"].text(), m["adversarial_target"].text(),
             str(m["adversarial_target"].answers) + " items", "-"],
            ["model, clean controls", "-", m["control_source"].text(), "-", str(m["control_source"].answers) + " items",
             "-"],
            ["proxy, adversarial samples (nearer the class)", "-",
             _pct(1 - proxy["share_nearer_target"]) if proxy["examples"] else "-",
             _pct(proxy["share_nearer_target"]), f"{proxy['examples']} examples", "-"]]
    return Table(["who, what", "called a digit", "labelled source class", "labelled target class", "answers",
                  "participants"], rows,
                 caption="Shares with 95% intervals: people, bootstrap over participants; model, Wilson over the "
                         "distinct items answered; proxy: the share of examples nearer the nearest clean training "
                         "image of that class.")


def _pair_table(h: HumansStudy) -> Table:
    c = h.classes
    rows = [[c[p["source"]], c[p["target"]], str(p["items"]), str(p["people"]["source"].answers),
             str(p["people"]["source"].participants),
             *(p["people"][m].text() for m in ("is_digit", "source", "target")),
             p["model_target"].text(), _pct(p["proxy_nearer_target"]), f"{p['proxy_ratio']:.2f}"] for p in h.pairs]
    return Table(["source", "target", "items", "answers", "participants", "called a digit", "labelled source",
                  "labelled target", "model: target", "proxy: nearer target", "proxy: d(source) / d(target)"], rows,
                 align="llrrrrrrrrr")


def _class_table(h: HumansStudy) -> Table:
    rows = [[h.classes[r["source"]], str(r["items"]), str(r["people"]["source"].answers),
             str(r["people"]["source"].participants), r["people"]["is_digit"].text(), r["people"]["source"].text()]
            for r in h.per_class]
    return Table(["class", "items", "answers", "participants", "called a digit", "labelled with its class"], rows,
                 align="lrrrrr")


def _grid(h: HumansStudy, measure: str) -> np.ndarray:
    k = len(h.classes)
    grid = np.full((k, k), np.nan)
    for p in h.pairs:
        grid[p["source"], p["target"]] = p["people"][measure].value
    return grid


def build_humans_document(h: HumansStudy, figures: dict[str, bytes], command: str = "") -> Document:
    """The report as a :class:`~advkit.report.html.Document` (``figures``: ``source`` / ``target`` heatmap PNGs)."""
    c = h.counts
    doc = Document(f"Human perception of JSMA's adversarial samples ({h.dataset})")
    doc.add(Para(verdict(h)),
            Heading("People, clean controls, the model and the proxy", 2), _overall_table(h),
            Heading("Participants", 2),
            Para(f"Attention rule: {h.rule}. {c['total']} participants: {c['kept']} kept, {c['dropped_attention']} "
                 f"dropped for failing the attention checks, {c['dropped_no_attention']} dropped with no attention "
                 f"answer yet. Kept but unfinished: {c['unfinished_kept']} participants, "
                 f"contributing {c['unfinished_answers']} counted answers. {c['kept_answers']} of {c['answers']} "
                 f"answers are counted "
                 f"(attention checks and dropped participants' answers are not). Intervals: {h.n_boot} bootstrap "
                 f"draws of participants, 2.5th and 97.5th percentiles."),
            Heading("Per source / target pair", 2), _pair_table(h),
            Figure("source_heatmap.png", figures["source"], "people labelling with the source class"),
            Figure("target_heatmap.png", figures["target"], "people labelling with the target class"),
            Heading("Clean controls per class", 2), _class_table(h))
    if command:
        doc.add(Para(f"Command: `{command}`"))
    return doc


def write_humans_report(h: HumansStudy, out: str | Path, *, command: str = "") -> dict[str, Path]:
    """Write the report, its figures, ``pairs.csv`` and ``answers.csv`` to ``out``; returns the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    axes = ("source class", "target class")
    names = list(h.classes)
    figures = {m: heatmap(_grid(h, m), names, names,
                          f"people labelling adversarial samples with the {m} class (%)",
                          label=f"share labelled {m}", axes=axes) for m in ("source", "target")}
    paths = {"source_heatmap": out / "source_heatmap.png", "target_heatmap": out / "target_heatmap.png",
             "pairs": out / "pairs.csv", "answers": out / "answers.csv"}
    for m in ("source", "target"):
        atomic_write_bytes(paths[f"{m}_heatmap"], figures[m])
    atomic_write_text(paths["pairs"], csv_text([
        {"source": names[p["source"]], "target": names[p["target"]], "items": p["items"],
         **{f"{k}_{f}": getattr(share, f) for k, share in (*p["people"].items(), ("model_target", p["model_target"]))
            for f in ("value", "low", "high", "answers", "participants")},
         "proxy_nearer_target": p["proxy_nearer_target"], "proxy_ratio": p["proxy_ratio"]} for p in h.pairs]))
    write_answers_csv(h.answers, paths["answers"])
    return {**paths, **save_document(build_humans_document(h, figures, command), out)}
