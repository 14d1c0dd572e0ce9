"""``advkit reproduce``: the papers' reproductions on this machine's data (the work is in :mod:`advkit.reproduce`).

    advkit reproduce --list
    advkit reproduce NAME [--quick] [--set KEY=VALUE ...] --out DIR [--force]

Every registered reproduction (:mod:`advkit.reproduce.registry`) runs through this one command. A setting is given
with ``--set KEY=VALUE`` (the value read as YAML: ``--set seeds=0,1,2``, ``--set eps=16/255``, ``--set
targets={mnist: [lenet, maxout]}``), or, as before this command was unified, as ``--KEY VALUE`` (``--samples 100``,
``--eps 0.2``, ``--dry-run``, ``--no-robust-targets``; ``--split S`` and ``--target DATASET=MODEL,...`` are
repeatable). Errors (a bad setting, a refused folder) reach the app's handler: ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import shlex
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from advkit.cli.common import bars, console, invocation

__all__ = ["flag_settings", "parse_flags", "register", "reproduce", "set_settings"]

# old flags whose setting has another name
ALIASES = {"split": "splits", "target": "targets"}


def _is_flag(kind: Any) -> bool:
    return kind is bool or (typing.get_origin(kind) in (typing.Union, types.UnionType)
                            and set(typing.get_args(kind)) == {bool, type(None)})


def flag_settings(args: list[str], settings: type, base: Any) -> dict[str, Any]:
    """The settings given as flags (``--samples 3``, ``--dry-run``, ``--no-resize``, ``--split S`` repeated,
    ``--target DATASET=MODEL,...`` repeated) among the extra arguments ``args`` of a reproduction.

    Raises:
        ValueError: an argument that is not a flag, a flag without a value, or a malformed ``--target``.
    """
    words, out = parse_flags(args, settings, ALIASES, base=base)
    if words:
        raise ValueError(f"unexpected argument {words[0]!r}: give settings as --set KEY=VALUE (or --KEY VALUE)")
    return out


def parse_flags(args: list[str], settings: type, aliases: Mapping[str, str], *,
                base: Any = None) -> tuple[list[str], dict[str, Any]]:
    """Split ``args`` into plain words (an analysis's input folders) and settings given as flags: ``--KEY VALUE``,
    ``--KEY=VALUE``, ``--FLAG`` / ``--no-FLAG`` for a yes/no setting, and the ``aliases`` (an old flag -> its
    setting, repeatable: each use adds a value). ``--target DATASET=MODEL,...`` fills a per-dataset ``targets``
    mapping, starting from ``base``'s.

    Raises:
        ValueError: a flag without a value, or a malformed ``--target DATASET=MODEL``.
    """
    hints = typing.get_type_hints(settings)
    words: list[str] = []
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word, i = args[i], i + 1
        if not word.startswith("--"):
            words.append(word)
            continue
        flag, eq, value = word[2:].partition("=")
        negative = flag.startswith("no-") and flag[3:].replace("-", "_") in hints
        name = flag[3:] if negative else flag
        key = aliases.get(name, name.replace("-", "_"))
        if key in hints and _is_flag(hints[key]) and not eq:
            out[key] = not negative
            continue
        if not eq:
            if i >= len(args) or args[i].startswith("--"):
                raise ValueError(f"--{flag} needs a value (or use --set {key}=VALUE)")
            value, i = args[i], i + 1
        if name == "target" and isinstance(getattr(base, "targets", None), Mapping):
            dataset, sep, models = value.partition("=")
            if not sep or not dataset.strip() or not models.strip():
                raise ValueError(f"--target must be DATASET=MODEL[,MODEL...], e.g. mnist=lenet,maxout; got {value!r}")
            out.setdefault("targets", dict(base.targets))[dataset.strip()] = models
        elif name in aliases:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return words, out


def set_settings(items: list[str]) -> dict[str, Any]:
    """``["seeds=0,1,2", "eps=16/255", "targets={mnist: [lenet]}"]`` -> ``{"seeds": [0, 1, 2], ...}``: each value
    read as YAML (:func:`advkit.study.config.read_yaml_value`: plain data, never code); a key given twice is an
    error naming both."""
    import yaml

    from advkit.study.config import read_yaml_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set samples=100), got {item!r}")
        if key in out:
            raise ValueError(f"--set {key} is given twice; give each setting once")
        try:
            out[key] = read_yaml_value(value, f"--set {item}") if value else None
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e}); "
                             f"write lists as [a, b] or a,b and quote text with brackets") from None
    return out


def _list() -> None:
    from advkit.reproduce.registry import REPRODUCTIONS, settings_table

    for name in sorted(REPRODUCTIONS):
        r = REPRODUCTIONS[name]
        console.print(f"{name}: {r.description}", markup=False, highlight=False)
        for key, default, quick in settings_table(r):
            extra = f" (--quick: {quick})" if quick else ""
            console.print(f"    {key} = {default}{extra}", markup=False, highlight=False)


def reproduce(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The reproduction (see --list).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (resumed when it holds an unfinished run of the "
                                                  "same reproduction and settings).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The smoke-sized variant (its settings: --list).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A setting: KEY=VALUE, the value read as YAML "
                                                                 "(repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in --out (a finished run, another run, other "
                                                         "files).")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions and their settings.")] = False,
) -> None:
    """Reproduce a paper's evaluation on this machine's data: `advkit reproduce --list` shows them."""
    from advkit.reproduce import get

    if list_:
        _list()
        return
    if name is None:
        raise ValueError("name a reproduction: advkit reproduce NAME --out DIR (advkit reproduce --list shows them)")
    repro = get(name)
    base = repro.make_settings(quick)
    changes = {**flag_settings(list(ctx.args), repro.settings, base), **set_settings(set_ or [])}
    settings = repro.make_settings(quick, changes)
    if out is None:
        checked = repro.check(settings, None) if repro.check is not None else None
        if checked is None:
            raise ValueError(f"--out: give a run directory for {name}")
        outcome = checked
    else:
        with bars() as bar:
            command = " ".join([invocation(ctx), *(shlex.quote(a) for a in ctx.args)])
            outcome = repro.run(out, settings, force=force, progress=bar, command=command)
    for line in outcome.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if "html" in outcome.files:
        console.print(f"report: {outcome.files['html']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``reproduce`` to ``app``: one command for every registered reproduction; the settings given as old-style
    flags arrive as extra arguments."""
    app.command("reproduce", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(reproduce)
