"""One shape for every reproduction: a registered name, its settings, a quick variant, and one run-folder rule.

A reproduction is one file that defines a frozen settings dataclass (defaults, and checks in ``__post_init__``
that raise ``ValueError`` naming the setting and the fix), a ``work`` function, and registers both::

    @dataclass(frozen=True)
    class ToySettings:
        n: int = 100

    def work(out: Path, s: ToySettings, run: RunContext) -> Outcome:
        ...  # write the run's files under out; report progress through run.progress
        return Outcome(Document("Toy").add(Para(f"{s.n} images")), lines=["done"])

    register(Reproduction("toy", "What it reproduces, in one line.", ToySettings, {"n": 10}, work))

:meth:`Reproduction.run` applies the one rule for the run folder ``out``: an absent or empty folder starts a run;
a folder holding an unfinished run of the same reproduction with the same settings resumes it (the work skips
what it finished); anything else (a finished run, another reproduction's, other settings, files advkit did not
write) is refused with an error naming ``--force``. ``force=True`` starts over: it removes what an earlier run of
a reproduction wrote (except the ``keep`` caches it names, which the work reuses only where they match), and
writes beside files advkit did not write, never deleting them. The folder gets ``reproduction.json`` (what ran,
the settings, the versions, the command, the status) and ``report.md`` / ``report.html`` from the work's
:class:`~advkit.report.html.Document`. Progress goes through :data:`advkit.progress.ProgressFn` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import shutil
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

from advkit._files import atomic_write_text, check_writable_dir
from advkit.progress import ProgressFn
from advkit.report.html import Document
from advkit.report.provenance import manifest
from advkit.study.errors import RunExistsError

__all__ = ["MANIFEST", "lookup", "REPRODUCTIONS", "Outcome", "Registered", "Reproduction", "RunContext", "register",
           "settings_dict", "settings_table"]

MANIFEST = "reproduction.json"
REPORTS = ("report.md", "report.html")


@dataclass(frozen=True)
class RunContext:
    """What a reproduction's work is given besides its folder and settings.

    Attributes:
        progress: the progress callback (``None``: nobody listens).
        command: the command line, recorded in the files.
        force: the run was asked to start over; discard finished products instead of reusing them.
    """

    progress: ProgressFn | None = None
    command: str = ""
    force: bool = False


@dataclass
class Outcome:
    """What a run (or a check) returns.

    Attributes:
        report: the report, written as ``report.md`` and ``report.html``; ``None`` when the work wrote them itself
            (or, for a check, when there is none).
        lines: the headline, a few plain-text lines the CLI prints.
        result: the reproduction's own result object (a dict or a dataclass), for Python callers.
        files: the run's report files once written (``{"markdown": path, "html": path}``).
    """

    report: Document | None
    lines: list[str] = field(default_factory=list)
    result: Any = None
    files: dict[str, Path] = field(default_factory=dict)


Work = Callable[[Path, Any, RunContext], Outcome]


@dataclass(frozen=True)
class Registered:
    """The shape a reproduction and an analysis share: a name, checked settings with defaults, a quick variant, and
    the one run-folder rule (see the module docstring); ``kind`` and ``manifest_name`` say what runs.

    Attributes:
        name: the name ``advkit reproduce NAME`` (or ``advkit analyze NAME``) takes.
        description: one line: the paper and what is measured.
        settings: a frozen dataclass type; its defaults are the full run.
        quick: the settings ``--quick`` changes (a smoke-sized run).
    """

    kind: ClassVar[str] = "reproduction"
    manifest_name: ClassVar[str] = MANIFEST
    list_command: ClassVar[str] = "advkit reproduce --list"

    name: str
    description: str
    settings: type
    quick: Mapping[str, Any] = field(default_factory=dict)

    def make_settings(self, quick: bool = False, changes: Mapping[str, Any] | None = None) -> Any:
        """The settings: the defaults, the quick variant's changes when ``quick``, then ``changes`` (values may be
        text or YAML-read values; each is converted to its setting's type).

        Raises:
            ValueError: an unknown setting (the message lists the valid ones), a value of the wrong type, or a
                value the settings' own checks refuse.
        """
        names = [f.name for f in dataclasses.fields(self.settings)]
        hints = typing.get_type_hints(self.settings)
        merged = {**(dict(self.quick) if quick else {}), **dict(changes or {})}
        unknown = [k for k in merged if k not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{self.name}: unknown setting(s) {', '.join(map(repr, unknown))}{hint}; the settings "
                             f"are: {', '.join(names)} (see `{self.list_command}`)")
        values = {k: _convert(v, hints[k], k) for k, v in merged.items()}
        return self.settings(**values)

    def _execute(self, out: Path, wanted: dict[str, Any], work: Callable[[RunContext], Outcome], *, force: bool,
                 progress: ProgressFn | None, command: str, keep: tuple[str, ...] = (),
                 runtime: tuple[str, ...] = ()) -> Outcome:
        """Run ``work`` into ``out`` under the folder rule. ``wanted`` is what the manifest records (``{kind: name,
        "settings": ...}``, optionally ``"input_runs"``) and what a resumed run must match; ``keep`` and ``runtime`` as
        in :class:`Reproduction`."""
        check_writable_dir(out)
        self._open(out, wanted, force, keep, runtime)
        created, fresh = not out.exists(), not out.exists() or not any(out.iterdir())
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self._write(out, wanted, command, "running", None)
        try:
            outcome = work(RunContext(progress, command, force))
        except BaseException:
            if fresh and [p.name for p in out.iterdir()] == [self.manifest_name]:  # nothing done: leave nothing
                (out / self.manifest_name).unlink()
                if created:
                    out.rmdir()
            raise
        md, page = out / REPORTS[0], out / REPORTS[1]
        if outcome.report is not None:
            atomic_write_text(md, outcome.report.markdown())
            atomic_write_text(page, outcome.report.html())
        if md.is_file() and page.is_file():
            outcome.files = {"markdown": md, "html": page}
        self._write(out, wanted, command, "finished", time.perf_counter() - t0)
        return outcome

    def _open(self, out: Path, wanted: dict[str, Any], force: bool, keep: tuple[str, ...],
              runtime: tuple[str, ...]) -> None:
        """Apply the folder rule; with ``force``, clear what an earlier run of this kind wrote."""
        if not out.is_dir() or not any(out.iterdir()):
            return
        kept = _read_manifest(out / self.manifest_name)
        if force:
            if kept is not None:
                for p in out.iterdir():
                    if p.name not in keep:
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
            return
        how = "pass --force (force=True) to start over, or choose another --out"
        if kept is None:
            raise RunExistsError(f"{out} is not empty and holds no advkit {self.kind} ({self.manifest_name} is "
                                 f"missing); {how} (--force writes beside its files and deletes none of them)")
        if kept.get(self.kind) != self.name:
            raise RunExistsError(f"{out} holds a run of the {self.kind} {kept.get(self.kind)!r}, not "
                                 f"{self.name!r}; {how}")
        old, new = kept.get("settings") or {}, wanted["settings"]
        differ = sorted(k for k in {*old, *new} if old.get(k) != new.get(k) and k not in runtime)
        if "input_runs" in wanted and kept.get("input_runs") != wanted["input_runs"]:
            differ.append("input_runs")
        if differ:
            raise RunExistsError(f"{out} holds a {self.name} run with other settings ({', '.join(differ)} differ); "
                                 f"rerun with its settings to resume it, or {how}")
        if kept.get("status") == "finished":
            raise RunExistsError(f"{out} already holds a finished {self.name} run with these settings (report: "
                                 f"{out / REPORTS[1]}); {how}")

    def _write(self, out: Path, wanted: dict[str, Any], command: str, status: str, seconds: float | None) -> None:
        body = {**manifest(command), **wanted, "description": self.description, "status": status,
                "seconds": seconds}
        atomic_write_text(out / self.manifest_name, json.dumps(body, indent=2, default=str) + "\n")


@dataclass(frozen=True)
class Reproduction(Registered):
    """A registered reproduction (the fields of :class:`Registered`, then these).

    Attributes:
        work: ``work(out, settings, context) -> Outcome``; writes the run's files (not the report) under ``out``.
        keep: names in the run folder that ``force`` keeps (caches the work checks before reusing).
        runtime: settings that say how to run, not what (a backend): not compared when a run is resumed.
        check: optional ``check(settings, out_or_None) -> Outcome | None``: an Outcome when the settings ask only
            to check the set-up (nothing is run, no folder rule applies); ``None`` to go on with the run.
    """

    work: Work | None = None
    keep: tuple[str, ...] = ()
    runtime: tuple[str, ...] = ()
    check: Callable[[Any, Path | None], Outcome | None] | None = None

    def run(self, out: str | Path, settings: Any = None, *, force: bool = False, progress: ProgressFn | None = None,
            command: str = "") -> Outcome:
        """Run the reproduction into ``out`` under the one run-folder rule (see the module docstring).

        Raises:
            RunExistsError: ``out`` holds a finished run, another run, or files advkit did not write, and
                ``force`` is false.
            ValueError: bad settings, or what the work raises.
        """
        s = self.make_settings() if settings is None else settings
        if not isinstance(s, self.settings):
            raise ValueError(f"{self.name}: settings must be a {self.settings.__name__}, got {type(s).__name__}")
        out = Path(out)
        if self.check is not None and (checked := self.check(s, out)) is not None:
            return checked
        work = self.work
        if work is None:
            raise ValueError(f"{self.name} only checks its set-up; nothing to run")
        wanted = {"reproduction": self.name, "settings": settings_dict(s), "runtime": list(self.runtime)}
        return self._execute(out, wanted, lambda context: work(out, s, context), force=force, progress=progress,
                             command=command, keep=self.keep, runtime=self.runtime)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def settings_dict(s: Any) -> dict[str, Any]:
    """The settings as plain JSON data (tuples as lists, paths as text), as recorded in the manifest."""
    return json.loads(json.dumps(dataclasses.asdict(s), default=str))


def _label(name: str) -> str:
    return f"{name} (--set {name}=VALUE, or --{name.replace('_', '-')} VALUE)"


def _convert(value: Any, kind: Any, name: str) -> Any:
    """``value`` (text or a YAML-read value) as the type ``kind`` of the setting ``name``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(value, a, name)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{name}: got {value!r}")
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        return tuple(_convert(v.strip() if isinstance(v, str) else v, args[0], name) for v in items)
    if origin in (Mapping, dict, typing.Mapping) or kind is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{_label(name)} must be a mapping such as {{mnist: [lenet, maxout]}}, got {value!r}")
        return {str(k): _convert(v, args[1], name) if args else v for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return str(value).lower() in ("true", "yes", "1", "on")
        raise ValueError(f"{_label(name)} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{_label(name)} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{_label(name)} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(Fraction(str(value).replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{_label(name)} must be a number or a fraction like 16/255, got {value!r}") from None
    if kind is Path:
        return Path(str(value))
    if kind is str:
        return str(value)
    return value


REPRODUCTIONS: dict[str, Reproduction] = {}


def register(reproduction: Reproduction) -> Reproduction:
    """Add ``reproduction`` to :data:`REPRODUCTIONS`.

    Raises:
        ValueError: the name is taken, or ``settings`` is not a dataclass whose defaults pass its own checks.
    """
    if reproduction.name in REPRODUCTIONS:
        raise ValueError(f"a reproduction named {reproduction.name!r} is already registered")
    if not dataclasses.is_dataclass(reproduction.settings):
        raise ValueError(f"{reproduction.name}: settings must be a dataclass type")
    reproduction.make_settings()
    reproduction.make_settings(quick=True)
    REPRODUCTIONS[reproduction.name] = reproduction
    return reproduction


def settings_table(reproduction: Registered) -> list[tuple[str, str, str]]:
    """``(name, default, quick value or "")`` for each setting of ``reproduction``."""
    full, quick = reproduction.make_settings(), reproduction.make_settings(quick=True)
    rows = []
    for f in dataclasses.fields(reproduction.settings):
        a, b = getattr(full, f.name), getattr(quick, f.name)
        rows.append((f.name, _show(a), "" if a == b else _show(b)))
    return rows


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) if v else "()"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}={','.join(map(str, m))}" for k, m in v.items()) or "{}"
    return str(v)


R = typing.TypeVar("R", bound=Registered)


def lookup(registered: Mapping[str, R], name: str) -> R:
    """The reproduction or analysis registered as ``name`` in ``registered``.

    Raises:
        ValueError: no such name (the message lists the registered ones and the command that describes them).
    """
    if name not in registered:
        first = next(iter(registered.values()), None)
        kind, listing = (first.kind, first.list_command) if first is not None else ("name", "--list")
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registered))} "
                         f"(`{listing}` describes them)")
    return registered[name]
