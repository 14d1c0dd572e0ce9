"""The run directory of a transfer study and its resumable state (after auto-attack's ``state.py``).

Layout of ``out``::

    config.yaml, config.json   the resolved experiment (what was run, after overrides)
    manifest.json              provenance: advkit / torch versions, command, weights and data hashes, status
    state/plan.json            the config digest and the planned cells (a resumed run must match the digest)
    state/sample.safetensors   the selected images (uint8), labels, indices, clean predictions of every model
    cells/CELL/shard-NNN.safetensors
                               one finished shard of a cell: adversarial examples (float32 and 8-bit), each
                               model's predictions on them, distortions, and the attack's report as metadata
    results/*.csv, results.json  tidy records (results.json is written last: its presence marks a finished run)
    png/CELL/*.png             8-bit PNGs of a few examples per cell
    figures/*.png, report.md, report.html

Every file is written to a temporary name in its folder and renamed into place, so a run killed at any moment
leaves either the whole file or none of it; on resume, finished shards are kept, leftovers (``*.part``) are
removed, and a shard file that does not read back is recomputed. A disk that fills up mid-run therefore loses
nothing: :func:`disk_full_as_error` turns the error into a :class:`DiskFullError` that names the disk and says to
free space and rerun the same command, which resumes. While a study writes the directory it holds its lock
(:mod:`advkit.study.runlock`, ``.advkit.lock``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from advkit._files import atomic_path, atomic_write_text, check_writable_dir
from advkit.study.errors import RunConfigMismatchError, RunExistsError, missing_report
from advkit.study.runkind import describe_run
from advkit.study.runlock import LOCK_NAME
from advkit.study.schema import StudyConfig

log = logging.getLogger(__name__)

__all__ = ["DiskFullError", "RunConfigMismatchError", "RunDir", "RunExistsError", "atomic_save_tensors",
           "disk_full_as_error", "read_tensors"]

# the errors of a full disk (or an exhausted quota), and how safetensors words them (it wraps the OS error in a
# SafetensorError: "Error while serializing: I/O error: No space left on device (os error 28)")
_DISK_FULL = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}


class DiskFullError(ValueError):
    """The disk that holds an output folder is full; the message names it and says how to go on."""


OWNED = ("config.yaml", "config.json", "manifest.json", "state", "cells", "results", "results.json", "png",
         "figures", "report.md", "report.html")


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Write a safetensors file atomically, with ``meta`` as JSON under the metadata key ``"advkit"``."""
    metadata = {"advkit": json.dumps(meta or {}, default=str)}
    with atomic_path(path) as tmp:
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:  # the OS error it wraps, with the file's name
            code = next((c for c, text in _DISK_FULL.items() if text in str(e) or f"os error {c})" in str(e)), None)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(path)) from e


def _mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    p = path.resolve()
    while not p.exists() or (not os.path.ismount(p) and p.parent != p):
        p = p.parent
    return p


@contextlib.contextmanager
def disk_full_as_error(folder: str | Path, command: str = "", resumable: bool = True) -> Iterator[None]:
    """Turn a full disk (``ENOSPC``, ``EDQUOT``, or safetensors' error wrapping one) met in the block into a
    :class:`DiskFullError` that names ``folder``, its disk and its free space, and says how to go on.

    Args:
        folder: the output folder being written.
        command: the command to rerun (named in the message when given).
        resumable: whether a rerun resumes (a study) or starts again (a single attack run).
    """
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        folder = Path(folder)
        mount = _mount_point(folder)
        try:
            free = f"{_size(shutil.disk_usage(mount).free)} free now"
        except OSError:
            free = "free space unknown"
        what = f" while writing {e.filename}" if e.filename else ""
        rerun = f"rerun the same command ({command})" if command else "rerun the same command"
        then = (f"{rerun} to resume: every finished shard is kept and only the rest is computed (or move {folder} "
                f"to a larger disk and resume there)" if resumable else f"{rerun}; this run was not kept")
        raise DiskFullError(f"the disk that holds {folder} is full ({_DISK_FULL[e.errno].lower()}; the file system "
                            f"mounted at {mount}, {free}){what}. Free space on it, then {then}") from e


def _size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at 1 or more: ``"16 KiB"``, ``"3.2 GiB"``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    k = 0
    x = float(n)
    while x >= 1024 and k < len(units) - 1:
        x, k = x / 1024, k + 1
    return f"{x:.0f} {units[k]}" if x >= 100 or k == 0 else f"{x:.1f} {units[k]}"


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`atomic_save_tensors`: ``(tensors, meta)``."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("advkit", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return tensors, meta


class RunDir:
    """The files of one study run; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # paths ----------------------------------------------------------------------------------------------------
    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def sample_file(self) -> Path:
        return self.state / "sample.safetensors"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def shard_path(self, cell: str, shard: int) -> Path:
        return self.root / "cells" / cell / f"shard-{shard:03d}.safetensors"

    @property
    def finished(self) -> bool:
        """Whether the run completed (``results.json`` exists)."""
        return self.results_json.is_file()

    def records(self) -> dict[str, Any]:
        """The finished run's ``results.json`` (for analyses of a run).

        Raises:
            ValueError: the run is not finished, or the file is not a transfer run's results.
        """
        what = describe_run(self.root)  # does not exist, a file, an unfinished run, a JSMA run...
        if not self.finished:
            fix = (f"finish it with `advkit transfer CONFIG --out {self.root}`" if "unfinished transfer" in what
                   else "give the --out folder of a finished `advkit transfer` run")
            raise ValueError(f"{what}, not a finished transfer run; {fix}")
        records = json.loads(self.results_json.read_text())
        if not isinstance(records, dict) or "cells" not in records:
            raise ValueError(f"{what}, not a transfer run (its results.json has no 'cells'); give the --out folder "
                             f"of a finished `advkit transfer` run")
        return records

    def config_digest(self) -> str | None:
        """The digest of the experiment this directory was started with, or ``None``."""
        plan = self.state / "plan.json"
        return json.loads(plan.read_text()).get("digest") if plan.is_file() else None

    # life cycle -----------------------------------------------------------------------------------------------
    @classmethod
    def check(cls, root: str | Path, config: StudyConfig, force: bool = False) -> RunDir:
        """What :meth:`prepare` refuses, found without writing anything: a file where the folder should be, a
        folder that cannot be written, a finished run (without ``force``), an unfinished run of another
        experiment (without ``force``)."""
        run = cls(root)
        check_writable_dir(run.root)
        if force:
            return run
        if run.finished:
            if not (run.root / "report.md").is_file():
                raise RunExistsError(missing_report(run.root))
            raise RunExistsError(f"{run.root} already holds a finished run (results.json); pass force=True "
                                 f"(--force) to overwrite it, or choose another output directory")
        old, digest = run.config_digest(), config.digest()
        if old is not None:
            if old != digest:
                raise RunConfigMismatchError(
                    f"{run.root} holds an unfinished run of a different experiment (config digest {str(old)[:12]} "
                    f"vs {digest[:12]}); resume it with its own config ({run.root / 'config.yaml'}), pass "
                    f"force=True (--force) to start over, or choose another output directory")
        return run

    @classmethod
    def prepare(cls, root: str | Path, config: StudyConfig, force: bool = False) -> RunDir:
        """Open ``root`` for ``config``: start a new run, or resume an unfinished run of the same experiment.

        Raises:
            RunExistsError: ``root`` holds a finished run and ``force`` is false.
            RunConfigMismatchError: ``root`` holds an unfinished run of a different experiment and ``force`` is
                false.
        """
        run = cls.check(root, config, force)
        plan = run.state / "plan.json"
        digest = config.digest()
        if force:
            run.clear()
        elif plan.is_file():
            log.info("resuming the run in %s", run.root)
        elif (run.root.is_dir() and any(p.name != LOCK_NAME for p in run.root.iterdir())
              and not any((run.root / n).exists() for n in OWNED)):
            log.warning("%s is not empty; the run's files are written beside what is there", run.root)
        run.root.mkdir(parents=True, exist_ok=True)
        run.remove_leftovers()
        d = config.to_dict()
        atomic_write_text(run.root / "config.json", json.dumps(d, indent=2, default=str) + "\n")
        atomic_write_text(run.root / "config.yaml", yaml.safe_dump(d, sort_keys=False))
        atomic_write_text(plan, json.dumps({"digest": digest}, indent=2) + "\n")
        return run

    def clear(self) -> None:
        """Remove every file and folder a run writes (and nothing else) from the directory."""
        for name in OWNED:
            p = self.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def remove_leftovers(self) -> int:
        """Delete temporary ``*.part`` files left by a killed run; returns how many."""
        n = 0
        for p in sorted(self.root.rglob(".*.part"), reverse=True):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
            n += 1
        if n:
            log.info("removed %d unfinished temporary file(s) in %s", n, self.root)
        return n

    # shards ---------------------------------------------------------------------------------------------------
    def has_shard(self, cell: str, shard: int) -> bool:
        """Whether the shard is finished: its file exists and reads back (a corrupt one is deleted)."""
        p = self.shard_path(cell, shard)
        if not p.is_file():
            return False
        try:
            with safe_open(str(p), framework="pt") as f:
                ok = "advkit" in (f.metadata() or {}) and "pred" in f.keys()  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types on a damaged file
            log.warning("%s does not read back (%s); it will be recomputed", p, e)
            ok = False
        if not ok:
            p.unlink(missing_ok=True)
        return ok

    def write_shard(self, cell: str, shard: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        """Write a finished shard atomically."""
        p = self.shard_path(cell, shard)
        atomic_save_tensors(p, tensors, meta)
        return p

    def shard_meta(self, cell: str, shard: int) -> dict[str, Any] | None:
        """The metadata of a finished shard without reading its tensors, or ``None``."""
        p = self.shard_path(cell, shard)
        try:
            with safe_open(str(p), framework="pt") as f:
                return dict(json.loads((f.metadata() or {}).get("advkit", "{}")))
        except Exception:  # missing or damaged
            return None

    def adopt(self, source: Path, target: Path) -> None:
        """Copy a finished file from another run into this one, atomically."""
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)

    def read_shard(self, cell: str, shard: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read a finished shard: ``(tensors, meta)``."""
        return read_tensors(self.shard_path(cell, shard))

    def read_cell(self, cell: str, shards: int) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """Concatenate a cell's shards along the image axis: ``(tensors, [meta per shard])``."""
        parts = [self.read_shard(cell, s) for s in range(shards)]
        tensors = {k: torch.cat([p[0][k] for p in parts], dim=-1 if k.startswith("pred") else 0) for k in parts[0][0]}
        return tensors, [p[1] for p in parts]
