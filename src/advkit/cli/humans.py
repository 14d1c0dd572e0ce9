"""``advkit humans serve RUN_DIR``: the JSMA paper's human perception study as a local web study (the work is in
:mod:`advkit.humans`; it needs ``pip install 'advkit[humans]'``).

    advkit humans serve RUN_DIR [--host 127.0.0.1] [--port 8765] [--token T] [--items 40] [--attention 3] [--seed 0]

Errors (not a JSMA run, a study made with other settings, a public host without --token, a missing extra) reach the
app's handler: ``error: ...`` and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import console

__all__ = ["app", "serve"]

app = typer.Typer(help="The JSMA paper's human perception study, run with people in a browser.", no_args_is_help=True)


@app.command("serve")
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A finished `advkit reproduce jsma` run folder.")],
    host: Annotated[str, typer.Option(help="Interface to listen on; other than 127.0.0.1 / localhost / ::1 needs "
                                           "--token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[str | None, typer.Option(help="Secret for /export (and required off loopback).",
                                              show_default=False)] = None,
    items: Annotated[int, typer.Option("--items", help="Items per participant (attention checks and ~20% clean "
                                                       "controls included).")] = 40,
    attention: Annotated[int, typer.Option("--attention", help="Attention checks per participant.")] = 3,
    seed: Annotated[int, typer.Option(help="Seeds the item choice and each participant's order.")] = 0,
) -> None:
    """Serve a web study over a JSMA run's adversarial examples; answers go to RUN_DIR/humans.sqlite."""
    from advkit.humans import EXTRA_HINT

    try:
        from advkit.humans.app import serve as serve_study
    except ModuleNotFoundError as e:  # the message names the extra (advkit.humans.missing_extra) or gets it here
        raise ValueError(str(e) if EXTRA_HINT in str(e) else f"{e}: {EXTRA_HINT}") from e

    def announce(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    serve_study(run_dir, host=host, port=port, token=token, items_per_participant=items, attention_checks=attention,
                seed=seed, announce=announce)
