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

import os
import warnings
from typing import Any

import typer
from typer.core import TyperGroup

from advkit.cli import analyze, attacks, data, humans, models
from advkit.cli.attack import attack
from advkit.cli.common import console, describe_error, err, fail, invocation, make_console, parse_number, warn
from advkit.cli.evaluate import evaluate
from advkit.cli.generator import train_generator, train_uap
from advkit.cli.study import register_cli
from advkit.cli.train import train

__all__ = ["app", "console", "err", "invocation", "main", "make_console", "parse_number"]


def _click_exception() -> type[Exception]:
    """The base class of the usage errors typer raises (a bad option, a missing argument): ``click.ClickException``
    under typer < 0.28, which depends on click, and typer's bundled copy of it under typer >= 0.28, which does not.
    Found from ``typer.BadParameter``'s ancestry so that advkit never imports click itself."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    raise RuntimeError(f"typer {getattr(typer, '__version__', '?')}: typer.BadParameter does not derive from a "
                       f"ClickException; advkit's error handler needs updating for this typer version")


# Raised by typer (or click) on purpose: an exit with a status, Ctrl-C at a prompt, a usage error it prints itself.
_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, _click_exception())


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Library warnings (a train/test leak, a failed model sanity check) as ``warning: ...`` lines on stderr."""
    if issubclass(category, UserWarning):
        warn(str(message))


class _Commands(TyperGroup):
    """The top-level group: every error a bad input raises in any command (a wrong value, a file that is missing,
    unreadable, unwritable or not text) ends as ``error: ...`` with exit status 2 and no traceback; Ctrl-C ends
    with status 130 and says how to go on. ``ADVKIT_TRACEBACK=1`` shows the traceback of the former."""

    def invoke(self, ctx: Any) -> Any:  # click's Context, or typer's bundled copy of it (typer >= 0.28)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            err.print("interrupted. A study or training run keeps what it finished: rerun the same command to "
                      "resume it.", markup=False, highlight=False)
            raise typer.Exit(130) from None
        except Exception as e:
            msg = describe_error(e)
            if msg is None or os.environ.get("ADVKIT_TRACEBACK"):
                raise
            fail(msg)


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False,
                  help="advkit: craft adversarial examples and measure how they transfer between models.")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(attacks.app, name="attacks")
app.add_typer(models.sgm_app, name="sgm")
app.add_typer(humans.app, name="humans")
analyze.register(app)  # one command for every registered analysis
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
