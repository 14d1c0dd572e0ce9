"""``advkit attacks list``: the registered parts, macros and standalone attacks, read off the registry."""

from __future__ import annotations

from dataclasses import MISSING, fields

import typer
from rich.table import Table

from advkit.cli.common import console

app = typer.Typer(help="Attacks: the registered parts of the engine and the standalone attacks.",
                  no_args_is_help=True)


def _fmt(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@app.command("list")
def attacks_list() -> None:
    """List every registered part (with its hook, paper and settings' defaults), macro and standalone attack."""
    from advkit import attacks
    from advkit.attacks.grammar import settings_of

    t = Table("name", "kind", "paper", "settings (defaults)")
    t.columns[0].no_wrap = True
    for token, cls in attacks.parts().items():
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in cls().settings().items()) or "-"
        t.add_row(token, f"part: {cls.hook}", cls.paper, settings)
    for name, tokens in attacks.macros().items():
        t.add_row(name, "name", "", "= " + "+".join(tokens))
    for name, solo in sorted(attacks.standalone().items()):
        doc = (solo.__doc__ or "").strip().splitlines()[0] if solo.__doc__ else ""
        kind = solo.kind
        if issubclass(solo, attacks.QueryAttack):
            kind += ": " + ("scores" if solo.oracle_output == "scores" else "top-1 label")
        keep = set(settings_of(solo))
        settings = ", ".join(f"{f.name}={_fmt(f.default)}" for f in fields(solo)
                             if f.name in keep and f.default is not MISSING)
        t.add_row(name, kind, doc[:60], settings or "-")
    console.print(t)
    console.print("Combine parts with '+': sgm+mi+di, vmi+di+ti, admix+mi, sgm+linbp, mi+ila (one base at most).")
    console.print("Query attacks reach the target only through a counting oracle (scores or top-1 label); "
                  "advkit attack square --max-queries 1000 --start sgm+mi --surrogate resnet20 starts one from a "
                  "transfer example.")
