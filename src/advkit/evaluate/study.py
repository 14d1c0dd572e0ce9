"""The transfer study: craft on each source, count how many examples fool each target.

``run_study(config, out)`` crafts once per cell (source, attack, eps, gamma, seed) on the same images and
evaluates every target on them, then writes tidy records (see :mod:`advkit.evaluate.aggregate`) into a
resumable run directory (see :mod:`advkit.evaluate.runstate`). The work is cut into shards of whole batches,
run in order here or fanned out over a Ray cluster (:mod:`advkit.evaluate.ray_backend`) with the same results.

Images: the split is scanned in a seeded order; with ``sample.only_correct`` only images that every model (sources
and targets) classifies correctly are kept, until ``sample.pool`` are found; each seed attacks ``sample.n`` of
them. Clean accuracy of every model is measured over all images scanned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advkit
from advkit._files import atomic_write_text
from advkit.attacks import parse, standalone
from advkit.evaluate.aggregate import aggregate, write_records
from advkit.evaluate.cells import ShardTask, batch_seed, load_models, resolve_device, run_shard, task_key
from advkit.evaluate.config import AttackSpec, StudyConfig, load_config, parse_alpha, parse_fraction
from advkit.evaluate.metrics import predict
from advkit.evaluate.runstate import RunDir, atomic_save_tensors, cell_id, read_tensors

log = logging.getLogger(__name__)

__all__ = ["Cell", "ProgressFn", "StudyResult", "plan_cells", "run_study", "seed_picks", "select_sample"]

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, detail)``; stages: ``"sample"``, ``"cells"``, ``"results"``."""


@dataclass(frozen=True)
class Cell:
    """One (source, attack, eps, gamma, seed) of the study and the attack settings it resolves to."""

    id: str
    source: str
    attack: AttackSpec
    eps: str
    gamma: float | None
    seed: int
    kwargs: dict[str, Any] = field(default_factory=dict)


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


def _connections(model: nn.Module, spec: str) -> str:
    card = getattr(model, "card", {}) or {}
    if card.get("connections") in ("residual", "dense", "none"):
        return str(card["connections"])
    low = spec.lower()
    if "dense" in low:
        return "dense"
    if re.search(r"res|senet|se_|mobilenet_v2|efficientnet", low):
        return "residual"
    return "none"


def _display_names(models: dict[str, nn.Module]) -> dict[str, str]:
    """Short names for reports (the model's own name); a name shared by two specs falls back to the spec."""
    names = {spec: str(getattr(m, "name", "") or spec) for spec, m in models.items()}
    return {spec: n if list(names.values()).count(n) == 1 else spec for spec, n in names.items()}


def attack_kwargs(cfg: StudyConfig, attack: AttackSpec, eps: str, gamma: float | None) -> dict[str, Any]:
    """The keyword arguments of :func:`advkit.attacks.create` for one cell (settings override the study's)."""
    kw: dict[str, Any] = {"eps": cfg.eps_value(eps)}
    if attack.name not in standalone():
        base = parse(attack.name)[0]
        kw["steps"] = 1 if base == "fgsm" else cfg.steps
        if cfg.alpha is not None and base != "fgsm":
            kw["alpha"] = cfg.alpha_value(eps)
        if gamma is not None:
            kw["gamma"] = gamma
    for k, v in attack.settings.items():
        if k == "gamma":
            continue  # resolved by plan_cells (``auto`` becomes the source's number)
        if k == "alpha" and isinstance(v, str):
            kw[k] = parse_alpha(v, "alpha", eps)
        else:
            kw[k] = parse_fraction(v, k) if k == "eps" and isinstance(v, str) else v
    return kw


def plan_cells(cfg: StudyConfig, connections: dict[str, str],
               auto: Callable[[str], float] | None = None) -> list[Cell]:
    """Every cell of the study, source-major (so each source's model is used for a run of cells).

    Args:
        cfg: the study.
        connections: each source's connection kind (``residual``, ``dense``, ``none``).
        auto: the concrete decay of ``gamma: auto`` for a source (default: the authors' 0.5 for dense sources,
            else 0.2); cells always record a number.
    """
    def resolve(src: str, g: Any) -> float:
        if g != "auto":
            return float(g)
        if auto is not None:
            return float(auto(src))
        return 0.5 if connections.get(src) == "dense" else 0.2

    cells = []
    for src in cfg.sources:
        for a in cfg.attacks:
            if not a.uses_gamma:
                gammas: tuple[float | None, ...] = (None,)
            elif "gamma" in a.settings:
                gammas = (resolve(src, a.settings["gamma"]),)
            else:
                gammas = tuple(dict.fromkeys(resolve(src, g) for g in cfg.gammas_for(src, connections.get(src))))
            for eps in cfg.eps:
                for g in gammas:
                    for seed in cfg.seeds:
                        cells.append(Cell(cell_id(src, a.label, eps, g, seed), src, a, eps, g, seed,
                                          attack_kwargs(cfg, a, eps, g)))
    return cells


def seed_picks(cfg: StudyConfig) -> torch.Tensor:
    """Which pool positions each seed attacks, ``(S, n)``: all of them in order when ``pool == n``, else ``n``
    drawn without replacement by a generator seeded from ``(sample.seed, seed)``."""
    s = cfg.sample
    picks = []
    for seed in cfg.seeds:
        if s.pool == s.n:
            picks.append(torch.arange(s.n))
        else:
            g = torch.Generator().manual_seed(batch_seed(s.seed, 1_000_003 + seed))
            picks.append(torch.randperm(s.pool, generator=g)[: s.n])
    return torch.stack(picks).long()


def select_sample(cfg: StudyConfig, models: dict[str, nn.Module], device: str,
                  progress: ProgressFn | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Choose the images: scan the split in ``sample.order`` and keep ``sample.pool`` eligible ones.

    Returns:
        ``(tensors, meta)``: ``images`` uint8 ``(P, C, H, W)``, ``y``, ``index`` (into the split), ``clean_pred``
        ``(M, P)`` (models in ``meta["models"]`` order), ``picks`` ``(S, n)`` (positions in the pool per seed);
        meta: ``examined`` and ``correct`` per model over every scanned image, data source and note.

    Raises:
        ValueError: fewer eligible images than ``sample.pool``.
    """
    from advkit.data import load as load_data

    s = cfg.sample
    ds = load_data(cfg.dataset, s.split, subset=s.order, seed=s.seed, data_dir=cfg.data_dir, **cfg.data_options)
    names = list(models)
    chunk = max(256, s.pool)
    keep: list[torch.Tensor] = []
    preds: list[torch.Tensor] = []
    found = examined = 0
    correct = dict.fromkeys(names, 0)
    total = len(ds)
    for start in range(0, total, chunk):
        x = ds.images[start:start + chunk].float().div_(255.0)
        y = ds.y[start:start + chunk]
        p = torch.stack([predict(models[m], x, device=device) for m in names])
        ok = (p == y).all(0) if s.only_correct else torch.ones_like(y, dtype=torch.bool)
        local = ok.nonzero().flatten()[: s.pool - found]
        if not s.only_correct:  # the pool is exactly the first `pool` images scanned
            p, y = p[:, : len(local)], y[: len(local)]
        for i, m in enumerate(names):
            correct[m] += int((p[i] == y).sum())
        examined += len(y)
        keep.append(local + start)
        preds.append(p[:, local])
        found += len(local)
        if progress is not None:
            progress("sample", found, s.pool, f"{found}/{s.pool} images ({examined} scanned)")
        if found >= s.pool:
            break
    if found < s.pool:
        why = " that every model classifies correctly" if s.only_correct else ""
        raise ValueError(f"sample.pool: only {found} images{why} in {cfg.dataset} {s.split} ({total} scanned); "
                         f"lower sample.n / sample.pool or set sample.only_correct: false")
    pos = torch.cat(keep)
    index = ds.indices[pos] if ds.indices is not None else pos
    tensors = {"images": ds.images[pos].contiguous(), "y": ds.y[pos].contiguous(), "index": index.long(),
               "clean_pred": torch.cat(preds, 1).long(), "picks": seed_picks(cfg)}
    meta = {"models": names, "examined": examined, "correct": correct, "dataset": cfg.dataset, "split": s.split,
            "source": ds.source, "note": ds.note, "classes": list(ds.classes), "seeds": list(cfg.seeds)}
    return tensors, meta


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
                      "connections": _connections(m, spec), "test_accuracy": card.get("test_accuracy"),
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


def _tasks(cfg: StudyConfig, cells: list[Cell], sample: dict[str, torch.Tensor], device: str) -> list[ShardTask]:
    n = cfg.sample.n
    size = cfg.shard_size or n
    seeds = list(cfg.seeds)
    out = []
    for c in cells:
        pick = sample["picks"][seeds.index(c.seed)]
        models = (c.source, *[t for t in cfg.targets if t != c.source])
        for j, start in enumerate(range(0, n, size)):
            sel = pick[start:start + size]
            keep = None if cfg.save_tensors else max(cfg.save_png - start, 0)
            out.append(ShardTask(cell=c.id, shard=j, source=c.source, attack=c.attack.name, label=c.attack.label,
                                 attack_kwargs=dict(c.kwargs), seed=c.seed, first_batch=start // cfg.batch_size,
                                 batch_size=cfg.batch_size, images=sample["images"][sel].clone(),
                                 y=sample["y"][sel].clone(), models=models, dataset=cfg.dataset, device=device,
                                 keep=keep))
    return out


def _sample_key(cfg: StudyConfig) -> str:
    """What decides the sample: a run whose sample has the same key chose the same images."""
    from dataclasses import asdict

    key = [cfg.dataset, cfg.data_dir, cfg.data_options, asdict(cfg.sample), list(dict.fromkeys(
        (*cfg.sources, *cfg.targets))), cfg.device]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


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

    seeds = list(cfg.seeds)
    for c in cells:
        folder = run.root / "png" / c.id
        if folder.is_dir():
            continue
        t, _ = run.read_shard(c.id, 0)
        k = min(cfg.save_png, t["x_8bit"].shape[0])
        pick = sample["picks"][seeds.index(c.seed)][:k]
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
            see :func:`advkit.evaluate.cells.task_key`).

    Returns:
        A :class:`StudyResult`.

    Raises:
        ConfigError: the experiment is invalid (every problem, by field).
        RunExistsError: ``out`` holds a finished run and ``force`` is false.
        RunConfigMismatchError: ``out`` holds an unfinished run of another experiment and ``force`` is false.
        ValueError: a model or dataset cannot be loaded, or too few eligible images.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    cfg = load_config(config, overrides) if overrides or not isinstance(config, StudyConfig) else config
    run = RunDir.prepare(out, cfg, force=force)
    device = resolve_device(cfg.device)
    models = load_models(list(dict.fromkeys((*cfg.sources, *cfg.targets))), cfg.dataset, device)
    skey = _sample_key(cfg)
    reuse_dirs = [RunDir(r) for r in (reuse or []) if Path(r).resolve() != run.root.resolve()]
    if not run.sample_file.is_file():
        for other in reuse_dirs:
            if other.sample_file.is_file() and read_tensors(other.sample_file)[1].get("key") == skey:
                run.adopt(other.sample_file, run.sample_file)
                log.info("sample reused from %s", other.root)
                break
    if run.sample_file.is_file():
        sample, smeta = read_tensors(run.sample_file)
        if list(smeta.get("seeds", [])) != list(cfg.seeds):  # adopted from a run with other seeds
            sample["picks"], smeta["seeds"] = seed_picks(cfg), list(cfg.seeds)
            atomic_save_tensors(run.sample_file, sample, smeta)
    else:
        sample, smeta = select_sample(cfg, models, device, progress)
        smeta["key"] = skey
        atomic_save_tensors(run.sample_file, sample, smeta)
    smeta = {**smeta, "names": _display_names(models)}
    from advkit.attacks.engine import resolve_gamma

    cells = plan_cells(cfg, {s: _connections(models[s], s) for s in cfg.sources},
                       auto=lambda src: float(resolve_gamma("auto", models[src]) or 0.2))
    atomic_write_text(run.state / "cells.json", json.dumps(
        [{"id": c.id, "source": c.source, "attack": c.attack.label, "eps": c.eps, "gamma": c.gamma, "seed": c.seed}
         for c in cells], indent=1) + "\n")
    _manifest(cfg, run, models, sample, smeta, command, backend, "running", {})
    tasks = _tasks(cfg, cells, sample, cfg.device if backend == "ray" else device)
    pending = [t for t in tasks if not run.has_shard(t.cell, t.shard)]
    if reuse_dirs:
        pending = [t for t in pending if not _adopt_shard(run, reuse_dirs, t, device)]
    reused = len(tasks) - len(pending)
    if reused:
        log.info("%d of %d shards already finished; computing %d", reused, len(tasks), len(pending))
    done = reused
    if progress is not None:
        progress("cells", done, len(tasks), "resumed" if reused else "")

    def finished(task: ShardTask, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        nonlocal done
        run.write_shard(task.cell, task.shard, tensors, meta)
        done += 1
        if progress is not None:
            progress("cells", done, len(tasks), f"{task.source} {task.label} seed {task.seed}")

    if backend == "ray":
        from advkit.evaluate.ray_backend import run_tasks_ray

        run_tasks_ray(pending, finished, address=address)
    else:
        for t in pending:
            finished(t, *run_shard(t, models))
    records = aggregate(cfg, run, cells, sample, smeta, progress)
    if cfg.save_png:
        _write_pngs(cfg, run, cells, sample)
    write_records(run, records)
    _manifest(cfg, run, models, sample, smeta, command, backend, "finished",
              {"shards_computed": len(pending), "shards_reused": reused})
    atomic_write_text(run.results_json, json.dumps(records, indent=1, default=str) + "\n")
    log.info("study finished: %s", run.root)
    return StudyResult(run.root, records, len(pending), reused)
