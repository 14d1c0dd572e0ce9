"""The transfer-study commands, ``advkit transfer`` and ``advkit report`` (the work is :func:`advkit.study.run_study`
and :func:`advkit.report.run_report.write_report`).

    advkit transfer CONFIG.yaml --out DIR [--force] [--backend ray --address A] [--set KEY=VALUE ...]
    advkit report RUN_DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from advkit.cli.common import bars, command_line, console, describe_error, err, fail

__all__ = ["parse_overrides", "register_cli", "report_cmd", "transfer"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["sample.n=50", "eps=[8/255, 16/255]", "sources=resnet20,densenet_bc40"]`` -> a dict of overrides.

    Values are read as YAML (``yaml.safe_load``: numbers, lists, strings; never evaluated as code); a bare
    comma-separated value becomes a list. A key given twice is a ``ConfigError`` naming both, never "the last wins".
    """
    from advkit.study.config import read_yaml_value
    from advkit.study.errors import ConfigError

    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE (e.g. sample.n=50), got {item!r}")
        if key.strip() in given:
            raise ConfigError([f"--set {given[key.strip()]} and --set {item} both set {key.strip()}; give each "
                               f"setting once"])
        given[key.strip()] = item
        try:
            parsed = read_yaml_value(value, f"--set {item}") if value.strip() else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "not valid YAML"
            raise typer.BadParameter(f"--set {item!r}: the value is not valid YAML ({problem}); write lists as "
                                     f"[8/255, 16/255] and quote text with brackets") from None
        if isinstance(parsed, str) and "," in parsed:
            parsed = [p.strip() for p in parsed.split(",") if p.strip()]
        out[key.strip()] = parsed
    return out


def transfer(
    config: Annotated[Path, typer.Argument(help="Experiment file (YAML); see examples/*.yaml.")],
    out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds an unfinished run).")],
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
    backend: Annotated[str, typer.Option(help="local, or ray (one Ray task per shard).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --backend ray).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE, dotted keys "
                                                                   "allowed (sample.n=50, eps=[8/255]).")] = None,
    report: Annotated[bool, typer.Option(help="Write report.md / report.html at the end.")] = True,
    reuse: Annotated[list[Path] | None, typer.Option(help="Another run directory (repeatable) whose finished "
                                                          "shards and sample are copied instead of recomputed "
                                                          "when their settings match.")] = None,
) -> None:
    """Craft on each source, evaluate every target on the same images, write tidy records and a report."""
    from advkit.report.run_report import write_report
    from advkit.report.tables import budgets, text_matrix
    from advkit.study import ConfigError, load_config, run_study

    # caught here as well as by advkit's app: register_cli also adds these commands to other Typer apps
    try:
        cfg = load_config(config, parse_overrides(set_ or []))
    except (ConfigError, FileNotFoundError) as e:
        fail(describe_error(e) or str(e))
    with bars() as bar:
        try:
            res = run_study(cfg, out, force=force, backend=backend, address=address, progress=bar,
                            command=command_line(), reuse=list(reuse or []))
        except ValueError as e:
            fail(str(e))
    for eps, norm in budgets(res.records):  # one matrix per budget: eps and the norm it bounds
        console.print(text_matrix(res.records, eps, norm), soft_wrap=True, markup=False, highlight=False)
    if not res.records["sanity"]["ok"]:
        err.print("[bold red]sanity problems:[/] " + escape("; ".join(res.records["sanity"]["problems"])))
    console.print(f"{res.computed} shard(s) computed, {res.reused} reused; results in {res.run_dir}")
    if report:
        paths = write_report(res.run_dir)
        console.print(f"report: {paths['html']}")


def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")]) -> None:
    """Write report.md and the self-contained report.html of a finished run."""
    from advkit.report.run_report import write_report

    try:
        paths = write_report(run_dir)
    except (FileNotFoundError, ValueError) as e:
        fail(describe_error(e) or str(e))
    console.print(f"report: {paths['markdown']}\nreport: {paths['html']}")


def register_cli(app: typer.Typer) -> typer.Typer:
    """Add ``transfer``, ``report`` and ``reproduce`` (:mod:`advkit.cli.reproduce`) to ``app``.

    Returns:
        ``app``.
    """
    from advkit.cli.reproduce import register

    app.command()(transfer)
    app.command("report")(report_cmd)
    register(app)
    return app
