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
from typing import Annotated, NoReturn

import typer

from advkit.cli.common import bars, console, invocation
from advkit.cli.reproduce import parse_flags, set_settings

__all__ = ["analyze", "register"]

ALIASES = {"target": "targets"}  # old flags whose setting has another name (repeatable)
HUMANS_HELP = ("The answers of a human perception study (`advkit humans serve`): people vs clean controls vs the "
               "model vs the proxy, per class pair, bootstrap intervals over participants. Flags: --out DIR, "
               "--csv PATH, --min-attention 2/3 (share of attention checks right; 0.67 would need 3 of 3), "
               "--boot 2000, --seed 0, --reference train.")


def _humans(words: list[str], out: Path | None, command: str) -> None:
    """``advkit analyze humans RUN_DIR [--out DIR] [--csv PATH] [--min-attention 2/3] [--boot N]``."""
    import argparse
    from fractions import Fraction

    from advkit.humans.analysis import humans_study, write_answers_csv
    from advkit.humans.report import verdict, write_humans_report

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # a ValueError reaches the app's handler (exit status 2)
            raise ValueError(f"{message}: advkit analyze humans RUN_DIR [--out DIR] [--csv PATH] "
                             f"[--min-attention 2/3] [--boot N] [--seed S] [--reference SPLIT]")

    parser = Parser(prog="advkit analyze humans", add_help=False)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--min-attention", type=Fraction, default=Fraction(2, 3))
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="train")
    a = parser.parse_args(words)
    study = humans_study(a.run_dir, min_attention=a.min_attention, n_boot=a.boot, seed=a.seed,
                         reference=a.reference)
    files = write_humans_report(study, out or a.run_dir / "analysis" / "humans", command=command)
    if a.csv is not None:
        write_answers_csv(study.answers, a.csv)  # the answers the report counts, as read once
        console.print(f"answers: {a.csv}", markup=False, highlight=False, soft_wrap=True)
    console.print(verdict(study), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {files['html']}", markup=False, highlight=False, soft_wrap=True)


def _list() -> None:
    from advkit.reproduce.analyses import ANALYSES
    from advkit.reproduce.registry import settings_table

    for name in sorted(ANALYSES):
        a = ANALYSES[name]
        console.print(f"{name} {a.inputs}: {a.description}", markup=False, highlight=False, soft_wrap=True)
        for key, default, _ in settings_table(a):
            console.print(f"    {key} = {default}", markup=False, highlight=False)
    console.print(f"humans RUN_DIR: {HUMANS_HELP}", markup=False, highlight=False, soft_wrap=True)


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
    words = [*(inputs or []), *ctx.args]
    command = " ".join([invocation(ctx), *(shlex.quote(a) for a in words)])
    if name == "humans":  # its own flags (--csv, --min-attention, --boot); reads humans.sqlite
        _humans(words, out, command)
        return
    analysis = get_analysis(name)
    folders, flags = parse_flags(words, analysis.settings, ALIASES)
    settings = analysis.make_settings(changes={**flags, **set_settings(set_ or [])})
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
