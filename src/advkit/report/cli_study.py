"""The transfer-study commands, added to the ``advkit`` typer app by :func:`register_cli`.

    advkit transfer CONFIG.yaml --out DIR [--force] [--backend ray --address A] [--set KEY=VALUE ...]
    advkit report RUN_DIR
    advkit reproduce sgm [--quick] --out DIR [--force] [--backend ray --address A]
    advkit reproduce sgm-imagenet --dry-run [--data-dir ROOT] [--out DIR]

This module is command-line code: it prints (rich) and renders progress bars; the work is done by
:func:`advkit.evaluate.study.run_study`, :func:`advkit.report.run_report.write_report` and the reproduction
drivers.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["parse_overrides", "register_cli"]

def make_console(stderr: bool = False) -> Console:
    """A rich console; when the output is piped (no terminal, no $COLUMNS) tables get 160 columns instead of
    rich's 80, so model names and numbers are never cut to ``resnet…`` in a log or a ``grep``."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=160 if piped else None)


console = make_console()
err = make_console(stderr=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["sample.n=50", "eps=[8/255, 16/255]", "sources=resnet20,densenet_bc40"]`` -> a dict of overrides.

    Values are read as YAML (``yaml.safe_load``: numbers, lists, strings; never evaluated as code); a bare
    comma-separated value becomes a list.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE (e.g. sample.n=50), got {item!r}")
        parsed = yaml.safe_load(value) if value.strip() else None
        if isinstance(parsed, str) and "," in parsed:
            parsed = [p.strip() for p in parsed.split(",") if p.strip()]
        out[key.strip()] = parsed
    return out


def _command() -> str:
    return "advkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


class _Bars:
    """Rich progress bars, one per stage, driven by the study's ``progress(stage, done, total, detail)``."""

    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, detail: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.p.add_task(stage, total=total)
        self.p.update(self.tasks[stage], completed=done, total=total, description=f"{stage} {detail}"[:70])


def _bars() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def register_cli(app: typer.Typer, reproduce_app: typer.Typer | None = None) -> typer.Typer:
    """Add ``transfer``, ``report`` and ``reproduce sgm`` / ``reproduce sgm-imagenet`` to ``app``.

    Args:
        app: the ``advkit`` typer app.
        reproduce_app: an existing ``reproduce`` group to add the two commands to (e.g. one that also holds
            ``reproduce fgsm``); by default a new group is created and added to ``app`` as ``reproduce``.

    Returns:
        The ``reproduce`` group, so that other reproductions can be added to it.
    """
    if reproduce_app is None:
        reproduce_app = typer.Typer(help="Reproduce the papers' experiments on this machine's data.",
                                    no_args_is_help=True)
        app.add_typer(reproduce_app, name="reproduce")

    @app.command()
    def transfer(
        config: Annotated[Path, typer.Argument(help="Experiment file (YAML); see examples/*.yaml.")],
        out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds an unfinished run).")],
        force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
        backend: Annotated[str, typer.Option(help="local, or ray (one Ray task per shard).")] = "local",
        address: Annotated[str | None, typer.Option(help="Ray cluster address (with --backend ray).")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE, dotted keys "
                                                                       "allowed (sample.n=50, eps=[8/255]).")] = None,
        report: Annotated[bool, typer.Option(help="Write report.md / report.html at the end.")] = True,
    ) -> None:
        """Craft on each source, evaluate every target on the same images, write tidy records and a report."""
        from advkit.evaluate.config import ConfigError, load_config
        from advkit.evaluate.study import run_study
        from advkit.report.run_report import write_report
        from advkit.report.tables import text_matrix

        try:
            cfg = load_config(config, parse_overrides(set_ or []))
        except (ConfigError, FileNotFoundError) as e:
            _fail(str(e))
        with _bars() as bar:
            try:
                res = run_study(cfg, out, force=force, backend=backend, address=address, progress=_Bars(bar),
                                command=_command())
            except ValueError as e:
                _fail(str(e))
        for eps in res.records["meta"]["eps"]:
            console.print(text_matrix(res.records, eps), soft_wrap=True, markup=False, highlight=False)
        if not res.records["sanity"]["ok"]:
            err.print("[bold red]sanity problems:[/] " + "; ".join(res.records["sanity"]["problems"]))
        console.print(f"{res.computed} shard(s) computed, {res.reused} reused; results in {res.run_dir}")
        if report:
            paths = write_report(res.run_dir)
            console.print(f"report: {paths['html']}")

    @app.command("report")
    def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")]) -> None:
        """Write report.md and the self-contained report.html of a finished run."""
        from advkit.report.run_report import write_report

        try:
            paths = write_report(run_dir)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        console.print(f"report: {paths['markdown']}\nreport: {paths['html']}")

    @reproduce_app.command("sgm")
    def reproduce_sgm_cmd(
        out: Annotated[Path, typer.Option(help="Output folder (three runs and a combined report).")],
        quick: Annotated[bool, typer.Option(help="Smoke-sized: one source, a few targets, 100 images, 1 seed "
                                                 "(about 3 minutes on 2 CPU cores).")] = False,
        force: Annotated[bool, typer.Option(help="Overwrite finished runs in --out.")] = False,
        backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
        address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    ) -> None:
        """Wu et al. 2020 (SGM) on the Fashion-MNIST zoo: attack table, gamma sweep, eps sweep."""
        from advkit.report.reproduce_sgm import reproduce_sgm

        with _bars() as bar:
            try:
                r = reproduce_sgm(out, quick, force=force, backend=backend, address=address, progress=_Bars(bar),
                                  command=_command())
            except ValueError as e:
                _fail(str(e))
        console.print(r.matrix, soft_wrap=True, markup=False, highlight=False)
        console.print(f"finished in {r.seconds:.0f} s; report: {r.report['html']}")

    @reproduce_app.command("sgm-imagenet")
    def reproduce_sgm_imagenet_cmd(
        dry_run: Annotated[bool, typer.Option(help="Only validate and list what is missing.")] = True,
        data_dir: Annotated[Path | None, typer.Option(help="ImageNet root (ROOT/val).")] = None,
        out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
        force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
        backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
        address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    ) -> None:
        """The authors' ImageNet protocol (5,000 val images, eps 16/255, 10 steps); --dry-run checks the setup."""
        from advkit.report.reproduce_imagenet import reproduce_sgm_imagenet

        try:
            r = reproduce_sgm_imagenet(dry_run, data_dir, out, force=force, backend=backend, address=address,
                                       command=_command())
        except ValueError as e:
            _fail(str(e))
        for c in r["checks"]:
            mark = "[green]ok[/]" if c["ok"] else "[red]missing[/]"
            console.print(f"{mark:>18}  {c['item']}: {c['detail']}")
        console.print("ready to run" if r["ready"] else f"{len(r['missing'])} item(s) missing; nothing was run")

    return reproduce_app
