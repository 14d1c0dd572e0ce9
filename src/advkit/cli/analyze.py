"""``advkit analyze``: analyses of finished runs (the work is in :mod:`advkit.analysis`, the registered analyses in
:mod:`advkit.reproduce.analyses`).

    advkit analyze --list
    advkit analyze NAME INPUT... [--set KEY=VALUE ...] [--out DIR] [--force]

Every registered analysis runs through this one command, with the reproductions' run-folder rule: a finished run or
files advkit did not write in the output folder are refused, naming ``--force``. A setting is given with ``--set
KEY=VALUE`` (the value read as YAML) or, as before the analyses were registered, as ``--KEY VALUE`` (``--k-max 5``,
``--knowledge layers``, ``--reference 'train[:50000]'``; ``--target T`` is repeatable). Errors reach the app's
handler: ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import bars, console, invocation
from advkit.cli.reproduce import parse_flags, set_settings

__all__ = ["analyze", "register"]

ALIASES = {"target": "targets"}  # old flags whose setting has another name (repeatable)


def _list() -> None:
    from advkit.reproduce.analyses import ANALYSES
    from advkit.reproduce.registry import settings_table

    for name in sorted(ANALYSES):
        a = ANALYSES[name]
        console.print(f"{name} {a.inputs}: {a.description}", markup=False, highlight=False, soft_wrap=True)
        for key, default, _ in settings_table(a):
            console.print(f"    {key} = {default}", markup=False, highlight=False)


def analyze(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The analysis (see --list).", show_default=False)] = None,
    inputs: Annotated[list[str] | None, typer.Argument(help="The finished run folders it reads.",
                                                       show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN_DIR/analysis/NAME; surrogates "
                                                  "needs one).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A setting: KEY=VALUE, the value read as YAML "
                                                                 "(repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in --out (a finished run, another run, other "
                                                         "files).")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the analyses and their settings.")] = False,
) -> None:
    """Analyse finished runs (perturbation clusters, surrogate choice, perception proxy): `advkit analyze --list`
    shows them."""
    from advkit.reproduce.analyses import get_analysis

    if list_:
        _list()
        return
    if name is None:
        raise ValueError("name an analysis: advkit analyze NAME RUN_DIR... (advkit analyze --list shows them)")
    analysis = get_analysis(name)
    words = [*(inputs or []), *ctx.args]
    folders, flags = parse_flags(words, analysis.settings, ALIASES)
    settings = analysis.make_settings(changes={**flags, **set_settings(set_ or [])})
    command = " ".join([invocation(ctx), *(shlex.quote(a) for a in words)])
    with bars() as bar:
        outcome = analysis.run(folders, out, settings, force=force, progress=bar, command=command)
    for line in outcome.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if "markdown" in outcome.files:
        console.print(f"report: {outcome.files['markdown']}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``analyze`` to ``app``: one command for every registered analysis; old-style flags arrive with the
    inputs."""
    app.command("analyze", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(analyze)
