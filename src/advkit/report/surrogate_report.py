"""The files of ``advkit analyze surrogates``: ``results.json``, ``surrogates.csv`` (one row per unknown target),
``candidates.csv`` (every candidate's scores), ``surrogates.png`` and ``report.md``, written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from advkit._files import atomic_write_bytes, atomic_write_text, csv_text
from advkit.analysis.surrogates import Outcomes, SurrogateChoice
from advkit.report.provenance import manifest

__all__ = ["surrogate_rows", "write_surrogate_report"]


def surrogate_rows(choices: list[SurrogateChoice]) -> list[dict[str, Any]]:
    """One tidy row per unknown target."""
    rows = []
    for c in choices:
        r: dict[str, Any] = {"target": c.target, "family": c.family, "group": c.group, "proxies": " ".join(c.proxies),
                             "n_selection": c.n_selection, "n_fresh": c.n_fresh}
        for name in ("pick", "blind_pick", "oracle", "hindsight"):
            ch = getattr(c, name)
            r.update({f"{name}": ch["label"], f"{name}_rate": ch["rate"], f"{name}_low": ch["ci_low"],
                      f"{name}_high": ch["ci_high"], f"{name}_rank": ch["rank"]})
        r.update({"average_rate": c.average["rate"], "average_low": c.average["ci_low"],
                  "average_high": c.average["ci_high"], "candidates": c.average["candidates"],
                  "regret": c.regret["rate"], "regret_low": c.regret["ci_low"], "regret_high": c.regret["ci_high"]})
        rows.append(r)
    return rows


def _png(choices: list[SurrogateChoice]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [c.target for c in choices]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.6))
    for i, (key, label) in enumerate((("pick", "family pick"), ("oracle", "oracle"), ("average", "average"))):
        vals = np.array([getattr(c, key)["rate"] for c in choices])
        lo = vals - np.array([getattr(c, key)["ci_low"] for c in choices])
        hi = np.array([getattr(c, key)["ci_high"] for c in choices]) - vals
        ax.bar(x + (i - 1) * 0.27, 100 * vals, 0.27, yerr=100 * np.stack([lo, hi]), capsize=2, label=label)
    ax.set_xticks(x, labels=names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("transfer success on fresh images (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _pct(d: dict[str, Any]) -> str:
    return f"{100 * d['rate']:.1f} [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]"


def report_markdown(choices: list[SurrogateChoice], outcomes: Outcomes, settings: dict[str, Any],
                    command: str) -> str:
    """The report: one row per unknown target, then what the picks have in common."""
    n_sel, n_fresh = choices[0].n_selection, choices[0].n_fresh
    knows = ("whether it has skip connections and, when it has none, whether it is convolutional or fully connected"
             if settings.get("knowledge") == "layers" else "whether it has skip connections")
    lines = [f"# Grey-box surrogate choice at eps {outcomes.eps}", "",
             f"Runs: {', '.join(f'`{r}`' for r in outcomes.runs)}. {len(outcomes.candidates)} candidates "
             f"(source x attack x gamma), {len(outcomes.models)} targets. Each target in turn is the unknown model: "
             f"the attacker knows only {knows}, ranks every candidate (the target excluded as a source) by "
             f"transfer to the other models of that group (its family) on {n_sel} selection units, and is scored on "
             f"{n_fresh} fresh units (seed, image) against the real target. Oracle: the candidate best against the "
             f"target itself on the selection units; hindsight: the best on the fresh units "
             f"(optimistic); average: the mean candidate. Success in % with 95% intervals (Wilson for one choice, "
             f"bootstrap over fresh images for the average and the regret); rank among the candidates on the "
             f"fresh units.", "",
             "| target | family | family pick | success | rank | family-blind pick | success | oracle | success | "
             "hindsight | average | oracle - pick |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in choices:
        lines.append(f"| {c.target} | {c.group} | {c.pick['label']} | {_pct(c.pick)} | {c.pick['rank']}/"
                     f"{c.average['candidates']} | {c.blind_pick['label']} | {_pct(c.blind_pick)} | "
                     f"{c.oracle['label']} | {_pct(c.oracle)} | {100 * c.hindsight['rate']:.1f} | "
                     f"{_pct(c.average)} | {100 * c.regret['rate']:+.1f} [{100 * c.regret['ci_low']:+.1f}, "
                     f"{100 * c.regret['ci_high']:+.1f}] |")
    mean = lambda key: sum(getattr(c, key)["rate"] for c in choices) / len(choices)  # noqa: E731
    behind = sum(c.regret["ci_low"] > 0.0 for c in choices)
    lines += ["", f"Over the {len(choices)} targets: family pick {100 * mean('pick'):.1f}%, family-blind pick "
              f"{100 * mean('blind_pick'):.1f}%, oracle {100 * mean('oracle'):.1f}%, average candidate "
              f"{100 * mean('average'):.1f}%. The oracle beats the family pick beyond its interval (lead above zero) "
              f"for {behind} of {len(choices)} targets.", "",
              "![success of the choices](surrogates.png)", "",
              f"Settings: {json.dumps(settings)}. Command: `{command}`", ""]
    return "\n".join(lines)


def write_surrogate_report(choices: list[SurrogateChoice], outcomes: Outcomes, out: str | Path, *,
                           command: str = "", settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the analysis to ``out``; returns the paths by kind (``markdown``, ``json``, ``csv``, ``figure``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or {}
    rows = surrogate_rows(choices)
    cands = [r for c in choices for r in c.candidates]
    payload = {"eps": outcomes.eps, "runs": outcomes.runs, "models": outcomes.models, "family": outcomes.family,
               "settings": settings, "command": command, "targets": rows,
               "provenance": manifest(command, settings, {f"run{i}": Path(r) / "results.json"
                                                          for i, r in enumerate(outcomes.runs)})}
    paths = {"json": out / "results.json", "csv": out / "surrogates.csv", "candidates": out / "candidates.csv",
             "figure": out / "surrogates.png", "markdown": out / "report.md"}
    atomic_write_text(paths["json"], json.dumps(payload, indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["csv"], csv_text(rows))
    atomic_write_text(paths["candidates"], csv_text(cands))
    atomic_write_bytes(paths["figure"], _png(choices))
    atomic_write_text(paths["markdown"], report_markdown(choices, outcomes, settings, command))
    return paths
