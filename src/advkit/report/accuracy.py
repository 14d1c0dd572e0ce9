"""The clean-accuracy report of the zoo (the main job until the transfer study exists)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import advkit


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
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
    notes = {r["data_note"] for r in rows if r.get("data_note")}
    if notes:
        lines += ["", *[f"Note: {n}" for n in sorted(notes)]]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
