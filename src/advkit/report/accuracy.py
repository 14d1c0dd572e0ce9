"""The clean-accuracy report of the zoo (the main job until the transfer study exists)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import advkit
from advkit._files import atomic_write_text

__all__ = ["atomic_write_text", "write_accuracy_report"]


def write_accuracy_report(rows: list[dict[str, Any]], out: Path, command: str = "") -> Path:
    """Write ``results.json``, ``results.csv`` and ``report.md`` for clean-accuracy rows into ``out``.

    Each row has ``model``, ``arch``, ``dataset``, ``split``, ``n``, ``correct``, ``accuracy``, ``ci_low``,
    ``ci_high`` (95% Wilson interval), ``card_accuracy`` and ``data_note``. Returns the report's path.
    """
    out = Path(out)
    meta = {"advkit_version": advkit.__version__, "command": command}
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))  # robust and defended rows add columns
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    lines = ["# Clean accuracy of the model zoo", "",
             f"advkit {advkit.__version__}; command: `{command}`", "",
             "| model | arch | accuracy | 95% Wilson interval | images | card says |",
             "| --- | --- | ---: | --- | ---: | ---: |"]
    for r in rows:
        card = f"{100 * r['card_accuracy']:.2f}%" if r.get("card_accuracy") is not None else "-"
        lines.append(f"| {r['model']} | {r['arch']} | {100 * r['accuracy']:.2f}% | "
                     f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}] | {r['n']} | {card} |")
    robust = [r for r in rows if r.get("robust_accuracy") is not None]
    if robust:
        lines += ["", "## Robust accuracy (AutoAttack)", "",
                  "| model | version | norm | eps | robust accuracy | 95% Wilson interval | failed checks |",
                  "| --- | --- | --- | ---: | ---: | --- | --- |"]
        for r in robust:
            lines.append(f"| {r['model']} | {r['robust_version']} | {r['robust_norm']} | {r['robust_eps']:g} | "
                         f"{100 * r['robust_accuracy']:.2f}% | [{100 * r['robust_ci_low']:.2f}, "
                         f"{100 * r['robust_ci_high']:.2f}] | {', '.join(r['failed_checks']) or 'none'} |")
        for r in robust:
            d = r.get("defence")
            if d:
                lines += ["", f"{r['model']}: through its own gradients {100 * d['plain']['robust_accuracy']:.2f}%, "
                          f"under {d['how']} {100 * d['adaptive']['robust_accuracy']:.2f}%; the table gives the "
                          f"worst case over both" + ("; its gradients are masked." if d["masked"] else ".")]
    picked = {r["data_selection"] for r in rows if r.get("data_selection") not in (None, "all")}
    if picked:
        lines += ["", *[f"Images: {p} of the split (advkit.data.load's limit)." for p in sorted(picked)]]
    notes = {r["data_note"] for r in rows if r.get("data_note")}
    if notes:
        lines += ["", *[f"Note: {n}" for n in sorted(notes)]]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
