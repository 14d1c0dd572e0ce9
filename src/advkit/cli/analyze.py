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
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from advkit.cli.common import bars, console, invocation
from advkit.cli.reproduce import set_settings

__all__ = ["analyze", "register", "split_arguments"]

ALIASES = {"target": "targets"}  # old flags whose setting has another name (repeatable)


def split_arguments(args: list[str], settings: type) -> tuple[list[str], dict[str, Any]]:
    """``args`` (the words after NAME) as the input folders and the settings given as old-style flags
    (``--k-max 5``, ``--eps=16/255``, ``--target lenet`` repeated).

    Raises:
        ValueError: a flag without a value.
    """
    hints = typing.get_type_hints(settings)
    inputs: list[str] = []
    flags: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word, i = args[i], i + 1
        if not word.startswith("--"):
            inputs.append(word)
            continue
        flag, eq, value = word[2:].partition("=")
        negative = flag.startswith("no-") and flag[3:].replace("-", "_") in hints
        key = ALIASES.get(flag, (flag[3:] if negative else flag).replace("-", "_"))
        if hints.get(key) is bool and not eq:
            flags[key] = not negative
            continue
        if not eq:
            if i >= len(args) or args[i].startswith("--"):
                raise ValueError(f"--{flag} needs a value (or use --set {key}=VALUE)")
            value, i = args[i], i + 1
        if flag in ALIASES:
            flags.setdefault(key, []).append(value)
        else:
            flags[key] = value
    return inputs, flags


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
    folders, flags = split_arguments(words, analysis.settings)
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
