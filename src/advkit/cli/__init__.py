"""The ``advkit`` command: thin modules that parse and print, and call the library.

Units: every eps / step size is in pixel units of images scaled to [0, 1]; fractions such as ``16/255`` are
accepted (parsed exactly with ``fractions.Fraction``, never ``eval``).

One module per command group: :mod:`~advkit.cli.data`, :mod:`~advkit.cli.models` (``models``, ``sgm``),
:mod:`~advkit.cli.attacks`,
:mod:`~advkit.cli.train`, :mod:`~advkit.cli.generator` (``train-generator``), :mod:`~advkit.cli.evaluate`,
:mod:`~advkit.cli.attack`, :mod:`~advkit.cli.study`
(``transfer``, ``report``), :mod:`~advkit.cli.reproduce`; shared helpers in :mod:`~advkit.cli.common`.
"""

from __future__ import annotations

import typer

from advkit.cli import attacks, data, models
from advkit.cli.attack import attack
from advkit.cli.common import console, err, invocation, make_console, parse_number
from advkit.cli.evaluate import evaluate
from advkit.cli.generator import train_generator, train_uap
from advkit.cli.study import register_cli
from advkit.cli.train import train

__all__ = ["app", "console", "err", "invocation", "main", "make_console", "parse_number"]

app = typer.Typer(help="advkit: craft adversarial examples and measure how they transfer between models.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(attacks.app, name="attacks")
app.add_typer(models.sgm_app, name="sgm")
app.command()(train)
app.command("train-generator")(train_generator)
app.command("train-uap")(train_uap)
app.command()(evaluate)
app.command()(attack)
register_cli(app)  # transfer, report, and the reproduce group


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
