"""The README's table of attack names stays in step with the registry (issues 25 and 26: "in the README's tables")."""

from __future__ import annotations

import re
from pathlib import Path

import advkit.attacks as A
from advkit.attacks.core.losses import LOSSES

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_names() -> set[str]:
    text = README.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    return {name for line in table for name in re.findall(r"`([a-z_0-9-]+)`", line.split("|")[2])}


def test_every_registered_attack_part_and_loss_is_in_the_readme_table() -> None:
    listed = _table_names()
    internal = {t for m in A.macros().values() for t in m if t not in A.parts() or t.startswith("gra_")}
    expected = (set(A.parts()) - internal) | set(A.macros()) | set(A.standalone()) | set(LOSSES)
    assert expected - listed == set(), f"registered but not in README's table: {sorted(expected - listed)}"
    unknown = listed - expected
    assert unknown == set(), f"README's table names what is not registered: {sorted(unknown)}"
