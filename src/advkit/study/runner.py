"""The transfer study: craft on each source, count how many examples fool each target.

``run_study(config, out)`` chooses the images (:mod:`advkit.study.sample`), resolves the experiment once into
fully specified cells (source, attack with every argument, eps, gamma, seed; :mod:`advkit.study.plan`), which
alone say what a cell computes, crafts once per cell on the same images and evaluates every target on them
(:mod:`advkit.study.cells`), then writes tidy records (:mod:`advkit.study.aggregate`) into a resumable run
directory (:mod:`advkit.study.runstate`). The work is cut into shards of whole batches, run in order here or
fanned out over a Ray cluster (:mod:`advkit.study.ray_backend`) with the same results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advkit
from advkit._files import atomic_write_text
from advkit.attacks import resolve_gamma
from advkit.evaluate.checks import check_model
from advkit.progress import ProgressFn, report
from advkit.study.aggregate import aggregate, write_records
from advkit.study.cells import ShardTask, load_models, resolve_device, run_shard, task_key
from advkit.study.config import StudyConfig, load_config
from advkit.study.defended import defence_label, reseed_for
from advkit.study.ensembles import holdout_label, holdout_sources
from advkit.study.plan import Cell, connection_kind, display_names, plan_cells
from advkit.study.runlock import run_lock
from advkit.study.runstate import RunDir, atomic_save_tensors, disk_full_as_error, read_tensors
from advkit.study.sample import sample_key, seed_picks, select_sample, study_targets

log = logging.getLogger(__name__)

__all__ = ["ProgressFn", "StudyResult", "run_study"]


@dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes:
        run_dir: the run directory.
        records: the tidy records written to ``results.json`` (tables by name).
        computed: shards computed in this call.
        reused: shards found finished from an earlier, interrupted call.
    """

    run_dir: Path
    records: dict[str, Any]
    computed: int
    reused: int


def _manifest(cfg: StudyConfig, run: RunDir, models: dict[str, nn.Module], sample: dict[str, torch.Tensor],
              smeta: dict[str, Any], command: str, backend: str, status: str, shards: dict[str, int]) -> None:
    old = json.loads(run.manifest.read_text()) if run.manifest.is_file() else {}
    sessions = list(old.get("sessions", []))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if status == "running" or not sessions:
        sessions.append({"started": now, "command": command, "backend": backend})
    else:
        sessions[-1].update({"finished": now, **shards})
    mods = {}
    for spec, m in models.items():
        card = getattr(m, "card", {}) or {}
        mods[spec] = {"name": getattr(m, "name", spec), "arch": card.get("arch"), "sha256": card.get("sha256"),
                      "weights": card.get("weights"), "dataset": card.get("dataset"),
                      "connections": connection_kind(m), "test_accuracy": card.get("test_accuracy"),
                      "command": card.get("command")}
    manifest = {
        "status": status, "advkit_version": advkit.__version__, "torch_version": torch.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(), "command": command,
        "config_digest": cfg.digest(), "models": mods,
        "data": {"dataset": cfg.dataset, "split": smeta["split"], "source": smeta["source"], "note": smeta["note"],
                 "pool": int(sample["y"].numel()), "scanned": smeta["examined"],
                 "indices_sha256": hashlib.sha256(sample["index"].numpy().tobytes()).hexdigest(),
                 "images_sha256": hashlib.sha256(sample["images"].numpy().tobytes()).hexdigest()},
        "sessions": sessions,
    }
    atomic_write_text(run.manifest, json.dumps(manifest, indent=2, default=str) + "\n")


def _check_models(models: dict[str, nn.Module], sample: dict[str, torch.Tensor], device: str
                  ) -> dict[str, list[dict[str, Any]]]:
    """:func:`advkit.evaluate.check_model` on every model with the sample's first 32 images (each failure is also
    an ``AdvkitSanityWarning``); the records go into ``results.json``'s sanity checks and the report."""
    x = sample["images"][:32].float().div(255.0).to(device)
    y = sample["y"][:32].long()
    out = {}
    for spec, m in models.items():
        reseed_for(m, 0, spec, -1)  # a random defence: the same draws whatever ran before
        out[spec] = [c.as_dict() for c in check_model(m, x, y, name=spec)]
    return out


def _tasks(cfg: StudyConfig, cells: list[Cell], sample: dict[str, torch.Tensor], device: str,
           targets: dict[str, torch.Tensor] | None = None) -> list[ShardTask]:
    """Each cell cut into shards of whole batches; what a shard computes comes from its cell (and, in a targeted
    study, its source's targets for its seed, ``targets[source][pick]``) alone, how the run is cut and stored
    (shard and batch sizes, what is kept) from the study."""
    targets = targets or {}
    n = cfg.sample.n
    size = cfg.shard_size or n
    out = []
    for c in cells:
        pick = sample["picks"][c.pick]
        for j, start in enumerate(range(0, n, size)):
            sel = pick[start:start + size]
            keep = None if cfg.save_tensors else max(cfg.save_png - start, 0)
            out.append(ShardTask(cell=c.id, shard=j, source=c.source, attack=c.attack.name, label=c.label,
                                 attack_kwargs=c.kwargs, seed=c.seed, first_batch=start // cfg.batch_size,
                                 batch_size=cfg.batch_size, images=sample["images"][sel].clone(),
                                 y=sample["y"][sel].clone(), models=c.models, dataset=cfg.dataset, device=device,
                                 keep=keep, target=targets[c.source][c.pick][start:start + size].clone()
                                 if c.targeted is not None else None))
    return out


def _adopt_shard(run: RunDir, others: list[RunDir], task: ShardTask, device: str) -> bool:
    """Copy the task's shard from another run that computed the same task on the same device; ``True`` if done."""
    key = None
    for other in others:
        meta = other.shard_meta(task.cell, task.shard)
        if meta is None:
            continue
        key = key or task_key(task)
        if meta.get("key") == key and str(meta.get("device", "")).split(":")[0] == device.split(":")[0]:
            run.adopt(other.shard_path(task.cell, task.shard), run.shard_path(task.cell, task.shard))
            log.debug("shard %s/%d reused from %s", task.cell, task.shard, other.root)
            return True
    return False


def _write_pngs(cfg: StudyConfig, run: RunDir, cells: list[Cell], sample: dict[str, torch.Tensor]) -> None:
    """Save the first ``save_png`` examples of each cell as 8-bit PNGs, ``INDEX_yLABEL_predPRED.png`` (the
    source's prediction on the 8-bit image); files already there are kept."""
    from advkit.evaluate.quantize import save_pngs

    for c in cells:
        folder = run.root / "png" / c.id
        if folder.is_dir():
            continue
        t, _ = run.read_shard(c.id, 0)
        k = min(cfg.save_png, t["x_8bit"].shape[0])
        pick = sample["picks"][c.pick][:k]
        names = [f"{int(i):05d}_y{int(y)}_pred{int(p)}.png" for i, y, p in
                 zip(sample["index"][pick], sample["y"][pick], t["pred_8bit"][0][:k], strict=True)]
        tmp = run.root / "png" / f".{c.id}.part"
        save_pngs(t["x_8bit"][:k].float() / 255.0, tmp, names)
        tmp.replace(folder)


def run_study(config: StudyConfig | str | Path | dict[str, Any], out: str | Path, *, force: bool = False,
              overrides: dict[str, Any] | None = None, backend: str = "local", address: str | None = None,
              progress: ProgressFn | None = None, command: str = "",
              reuse: list[str | Path] | None = None) -> StudyResult:
    """Run (or resume) a transfer study into the run directory ``out``.

    Args:
        config: a :class:`StudyConfig`, a YAML path or a dict (validated by :func:`load_config`).
        out: the run directory.
        force: overwrite a finished run (or an unfinished run of another experiment) in ``out``.
        overrides: settings replacing the config's (dotted keys allowed: ``{"sample.n": 50}``).
        backend: ``"local"`` (shards in order, in this process) or ``"ray"`` (one Ray task per shard).
        address: the Ray cluster's address (``None``: a running local instance or a new one).
        progress: called as ``progress(stage, done, total, detail)``.
        command: the command line, recorded in the manifest.
        reuse: other run directories whose finished shards (and sample) are copied instead of recomputed when
            they were computed from exactly the same task (same attack settings, seed, images, models and device;
            see :func:`advkit.study.cells.task_key`).

    Returns:
        A :class:`StudyResult`.

    Raises:
        ConfigError: the experiment is invalid (every problem, by field).
        RunExistsError: ``out`` holds a finished run and ``force`` is false.
        RunConfigMismatchError: ``out`` holds an unfinished run of another experiment and ``force`` is false.
        RunLockedError: another process is running a study in ``out`` (it holds the directory's lock).
        DiskFullError: the disk that holds ``out`` filled up; what was finished is kept, and the same call resumes.
        ValueError: a model or dataset cannot be loaded, or too few eligible images.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    cfg = load_config(config, overrides) if overrides or not isinstance(config, StudyConfig) else config
    # everything that can be refused is checked before the run directory is written: the directory itself, the
    # models, the plan (SGM on a source without skip connections) and, for a new run, the sample
    RunDir.check(out, cfg, force=force)
    # one process per run directory; checked again under the lock (another process may have finished it meanwhile)
    with run_lock(out, command), disk_full_as_error(out, command):
        return _run_locked(cfg, out, force=force, backend=backend, address=address, progress=progress,
                           command=command, reuse=reuse)


def _sample(cfg: StudyConfig, run: RunDir, models: dict[str, nn.Module], device: str, *, force: bool,
            reuse_dirs: list[RunDir], progress: ProgressFn | None
            ) -> tuple[RunDir, dict[str, torch.Tensor], dict[str, Any]]:
    """The run's images: drawn afresh, adopted from a reused run of the same sample key, or read back (a resumed
    run). The (slow) draw happens before the run directory is prepared, so a refused run writes nothing; the
    prepared directory is returned with the sample."""
    skey = sample_key(cfg)
    fresh: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if force or not run.sample_file.is_file():
        adoptable = any(o.sample_file.is_file() and read_tensors(o.sample_file)[1].get("key") == skey
                        for o in reuse_dirs)
        if not adoptable:
            fresh = select_sample(cfg, models, device, progress)
    run = RunDir.prepare(run.root, cfg, force=force)
    if fresh is not None:
        sample, smeta = fresh
        smeta["key"] = skey
        atomic_save_tensors(run.sample_file, sample, smeta)
        return run, sample, smeta
    if not run.sample_file.is_file():
        for other in reuse_dirs:
            if other.sample_file.is_file() and read_tensors(other.sample_file)[1].get("key") == skey:
                run.adopt(other.sample_file, run.sample_file)
                log.info("sample reused from %s", other.root)
                break
    sample, smeta = read_tensors(run.sample_file)
    if list(smeta.get("seeds", [])) != list(cfg.seeds):  # adopted from a run with other seeds
        sample["picks"], smeta["seeds"] = seed_picks(cfg, int(sample["y"].numel())), list(cfg.seeds)
        atomic_save_tensors(run.sample_file, sample, smeta)
    return run, sample, smeta


def _targets(cfg: StudyConfig, run: RunDir, sample: dict[str, torch.Tensor], smeta: dict[str, Any],
             models: dict[str, nn.Module], device: str) -> dict[str, torch.Tensor]:
    """A targeted study's classes per source, ``{source: (S, n)}`` (:func:`advkit.study.sample.study_targets`),
    resolved once and kept in ``state/targets.safetensors``, so a resumed run aims at the same classes."""
    if cfg.targeted is None:
        return {}
    path = run.state / "targets.safetensors"
    if path.is_file():
        saved, meta = read_tensors(path)
        if meta.get("sources") == list(cfg.sources) and meta.get("seeds") == list(cfg.seeds):
            return {src: saved[f"t{i}"] for i, src in enumerate(cfg.sources)}
    targets = study_targets(cfg, sample, smeta.get("classes") or [], models, device)
    atomic_save_tensors(path, {f"t{i}": targets[src].clone() for i, src in enumerate(cfg.sources)},
                        {"sources": list(cfg.sources), "seeds": list(cfg.seeds), "targeted": cfg.targeted})
    return targets


def _names(cfg: StudyConfig, models: dict[str, nn.Module]) -> dict[str, str]:
    """The models' names in the records: their own (:func:`display_names`), a defended model's
    ``lenet + jpeg (q=75)`` (:func:`~advkit.study.defended.defence_label`), a hold-out study's sources
    ``hold-out ensemble (all but X)``."""
    names = display_names(models)
    own = dict(names)
    for spec in names:  # a defended model: "lenet + jpeg (q=75)", its inner model by that model's own name
        resolved = (getattr(models[spec], "card", None) or {}).get("defence", {}).get("settings")
        label = defence_label(spec, own, resolved)
        if label is not None and label not in names.values():  # names stay unique
            names[spec] = label
    if cfg.holdout:
        for src, target in holdout_sources(cfg.targets).items():
            names[src] = holdout_label(names[target])
    return names


def _run_locked(cfg: StudyConfig, out: str | Path, *, force: bool, backend: str, address: str | None,
                progress: ProgressFn | None, command: str, reuse: list[str | Path] | None) -> StudyResult:
    """:func:`run_study` once the run directory's lock is held."""
    run = RunDir.check(out, cfg, force=force)
    device = resolve_device(cfg.device)
    models = load_models(list(dict.fromkeys((*cfg.sources, *cfg.targets))), cfg.dataset, device)
    cells = plan_cells(cfg, {s: connection_kind(models[s]) for s in cfg.sources},
                       auto=lambda src: float(resolve_gamma("auto", models[src]) or 0.2))
    reuse_dirs = [RunDir(r) for r in (reuse or []) if Path(r).resolve() != run.root.resolve()]
    run, sample, smeta = _sample(cfg, run, models, device, force=force, reuse_dirs=reuse_dirs, progress=progress)
    smeta = {**smeta, "names": _names(cfg, models), "model_checks": _check_models(models, sample, device)}
    atomic_write_text(run.state / "cells.json", json.dumps(
        [{"id": c.id, "source": c.source, "attack": c.label, "eps": c.eps, "gamma": c.gamma, "seed": c.seed}
         for c in cells], indent=1) + "\n")
    _manifest(cfg, run, models, sample, smeta, command, backend, "running", {})
    targets = _targets(cfg, run, sample, smeta, models, device)
    tasks = _tasks(cfg, cells, sample, cfg.device if backend == "ray" else device, targets)
    pending = [t for t in tasks if not run.has_shard(t.cell, t.shard)]
    if reuse_dirs:
        pending = [t for t in pending if not _adopt_shard(run, reuse_dirs, t, device)]
    reused = len(tasks) - len(pending)
    if reused:
        log.info("%d of %d shards already finished; computing %d", reused, len(tasks), len(pending))
    done = reused
    report(progress, "cells", done, len(tasks), "resumed" if reused else "")

    def finished(task: ShardTask, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        nonlocal done
        run.write_shard(task.cell, task.shard, tensors, meta)
        done += 1
        report(progress, "cells", done, len(tasks), f"{task.source} {task.label} seed {task.seed}")

    if backend == "ray":
        from advkit.study.ray_backend import run_tasks_ray

        run_tasks_ray(pending, finished, address=address)
    else:
        for t in pending:
            finished(t, *run_shard(t, models))
    records = aggregate(cfg, run, cells, sample, smeta, progress, targets)
    if cfg.save_png:
        _write_pngs(cfg, run, cells, sample)
    write_records(run, records)
    _manifest(cfg, run, models, sample, smeta, command, backend, "finished",
              {"shards_computed": len(pending), "shards_reused": reused})
    atomic_write_text(run.results_json, json.dumps(records, indent=1, default=str) + "\n")
    log.info("study finished: %s", run.root)
    return StudyResult(run.root, records, len(pending), reused)
