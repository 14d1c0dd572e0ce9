"""What every command module shares: the rich consoles, exact fractions, the error exit, the recorded command
line and the study's progress bars. Only the CLI prints; the library logs."""

from __future__ import annotations

import errno
import os
import shlex
import sys
import time
from fractions import Fraction
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["Bars", "bars", "command_line", "console", "describe_error", "err", "fail", "invocation", "make_console",
           "parse_number", "warn"]


def make_console(stderr: bool = False) -> Console:
    """A rich console; when the output is piped (no terminal, no $COLUMNS) tables get 160 columns instead of
    rich's 80, so model names and numbers are never cut to ``resnet…`` in a log or a ``grep``."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=160 if piped else None)


console = make_console()
err = make_console(stderr=True)


def parse_number(text: str, what: str = "value") -> float:
    """Parse ``0.03``, ``16/255`` or ``8 / 255`` exactly with :class:`fractions.Fraction`."""
    try:
        return float(Fraction(text.replace(" ", "")))
    except (ValueError, ZeroDivisionError):
        raise typer.BadParameter(f"{what} must be a number or a fraction like 16/255, got {text!r}") from None


def fail(msg: str) -> NoReturn:
    """Print ``error: msg`` on stderr and exit with status 2. ``msg`` is plain text: brackets in it (``[16/255``,
    ``attacks[0]``) are printed as they are, never read as rich markup."""
    err.print(f"[bold red]error:[/] {escape(str(msg))}", highlight=False)
    raise typer.Exit(2)


def warn(msg: str) -> None:
    """Print ``warning: msg`` on stderr (plain text, as :func:`fail`)."""
    err.print(f"[bold yellow]warning:[/] {escape(str(msg))}", highlight=False)


def describe_error(e: BaseException) -> str | None:
    """The message for an error that a bad input raises (a wrong value, a missing, unreadable or unwritable file,
    a file that is not text); ``None`` for anything else, which is a bug in advkit and keeps its traceback."""
    name = getattr(e, "filename", None)
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8, or check that the path "
                f"names the intended file")
    if isinstance(e, IsADirectoryError):
        return f"{name} is a folder, not a file; give the path of the file itself"
    if isinstance(e, NotADirectoryError):
        return f"{name}: part of this path is a file, not a folder; choose another path"
    if isinstance(e, FileExistsError):  # raised by the OS (a filename, no message) or by advkit (a message)
        if name is None:
            return str(e) or "the output already exists; choose another --out or remove it"
        return f"{name} already exists and is not a run folder; choose another --out or remove it"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {name}" if name is not None else ""
        return (f"the disk is full{where}; free space on it (or choose an --out on a larger disk), then rerun the "
                f"same command: a study or training run resumes from what it finished")
    if isinstance(e, PermissionError):
        return f"permission denied: {name}; choose a folder you can write to (or read), e.g. under your home folder"
    if isinstance(e, FileNotFoundError) and name is not None and not str(e).startswith(str(name)):
        return f"{name} not found; check the path"
    if isinstance(e, OSError) and e.errno is not None and name is not None:
        return f"{name}: {e.strerror}"
    if isinstance(e, (ValueError, FileNotFoundError)):
        return str(e)
    return None


def invocation(ctx: typer.Context) -> str:
    """The command being run, rebuilt from its parsed parameters (recorded in cards and run manifests)."""
    parts = ["advkit", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        adversarial_off = ctx.params.get("adversarial_eps") is None and ctx.params.get("adversarial") is None
        pgd_only = param.name == "adversarial_random_init" and ctx.params.get("adversarial") != "pgd"
        if value is None or pgd_only or (adversarial_off and (param.name or "").startswith("adversarial_")):
            continue
        if param.param_type_name == "argument":
            parts += [shlex.quote(str(v)) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif getattr(param, "is_flag", False):
            if param.secondary_opts:
                parts.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                parts.append(param.opts[0])
        elif isinstance(value, (list, tuple)):  # a repeatable option
            for v in value:
                parts += [param.opts[0], shlex.quote(str(v))]
        else:
            parts += [param.opts[0], shlex.quote(str(value))]
    return " ".join(parts)


def command_line() -> str:
    """The command line as typed (``sys.argv``), for the manifests of study runs."""
    return "advkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class Bars:
    """Progress of a long command, driven by ``bar(stage, done, total, detail)`` (the study's progress callback):
    rich progress bars, one per stage, when stderr is a terminal; otherwise (a log file, a pipe, CI) one plain line
    per step, ``stage detail: done/total (elapsed)``, at most one per ``every`` seconds per stage plus the line
    that finishes it, so a background run's log shows it is alive. Used as a context manager.

    Args:
        transient: remove the bars from the terminal when done (a command that prints its own summary).
        every: the shortest time between two lines of one stage in a log, in seconds.
        terminal: force the bars (True) or the lines (False); default: whether stderr is a terminal.
    """

    def __init__(self, *, transient: bool = False, every: float = 5.0, terminal: bool | None = None) -> None:
        self.terminal = err.is_terminal if terminal is None else terminal
        self.every = every
        self.p: Progress | None = None
        if self.terminal:
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=transient)
        self.tasks: dict[str, Any] = {}
        self.last: dict[str, tuple[float, int]] = {}
        self.t0 = time.monotonic()

    def __enter__(self) -> Bars:
        if self.p is not None:
            self.p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p is not None:
            self.p.stop()

    def __call__(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        if self.p is not None:
            if stage not in self.tasks:
                self.tasks[stage] = self.p.add_task(stage, total=total)
            self.p.update(self.tasks[stage], completed=done, total=total, description=f"{stage} {detail}"[:70])
            return
        now = time.monotonic()
        last_t, last_done = self.last.get(stage, (-float("inf"), -1))
        finished = total is not None and done >= total
        if done == last_done or (now - last_t < self.every and not finished and last_done >= 0):
            return
        self.last[stage] = (now, done)
        of = f"/{total}" if total is not None else ""
        err.print(f"{stage}{' ' + detail if detail else ''}: {done}{of} ({now - self.t0:.0f} s)", markup=False,
                  highlight=False, soft_wrap=True)


def bars(*, transient: bool = False, every: float = 5.0) -> Bars:
    """The progress display of the long commands (see :class:`Bars`)."""
    return Bars(transient=transient, every=every)
