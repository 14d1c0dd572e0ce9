"""The Ray backend of the transfer study: one Ray task per shard of a cell (source, attack, eps, gamma, seed).

Ray is optional (``pip install 'advkit[ray]'``) and imported only here, lazily. Each task receives its shard's
images (no dataset is needed on the workers) and the model specs; a worker loads each model once and keeps it for
the next tasks it runs. On a cluster with GPUs each task asks for ``gpus_per_task`` GPUs (default one) and the
models run there. The driver writes every finished shard into the run directory as it arrives, so an interrupted
Ray run resumes like a local one. Tasks call the same :func:`advkit.study.cells.run_shard` as the local
backend, so for the same seeds the results are identical (on the same kind of device). A shard whose worker
process or node dies is run again (``max_retries``), with the same result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from advkit.study.cells import ShardTask, load_models, resolve_device, run_shard

log = logging.getLogger(__name__)

__all__ = ["WorkerLostError", "import_ray", "run_tasks_ray"]

_WORKER_MODELS: dict[str, Any] = {}


class WorkerLostError(ValueError):
    """Shards whose Ray worker kept dying (retries spent); the finished shards are kept."""


def import_ray() -> Any:
    """Import Ray, or raise a ``ValueError`` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ValueError(f"the Ray backend needs the optional package 'ray' ({e}); install it with "
                         f"`pip install 'advkit[ray]'` (or `pip install ray`), or use backend='local'") from e
    return ray


def _work(task: ShardTask, threads: int | None) -> tuple[ShardTask, dict[str, torch.Tensor], dict[str, Any]]:
    """The body of a Ray task (module level, so workers import it from advkit rather than unpickling code)."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(task.device)
    models = load_models(task.models, task.dataset, device, _WORKER_MODELS)
    tensors, meta = run_shard(task, models)
    meta["worker_pid"] = os.getpid()
    return task, tensors, meta


def run_tasks_ray(tasks: list[ShardTask], on_done: Callable[[ShardTask, dict[str, torch.Tensor], dict[str, Any]],
                                                             None],
                  address: str | None = None, gpus_per_task: float | None = None, cpus_per_task: float = 1.0,
                  max_in_flight: int = 64, max_retries: int = 3) -> None:
    """Run ``tasks`` as Ray tasks and call ``on_done(task, tensors, meta)`` in the driver as each one finishes.

    Args:
        tasks: the shards to compute.
        on_done: called in this process for every finished task (in completion order).
        address: the cluster to connect to (``"auto"``, ``"ray://host:10001"``); ``None``: the Ray instance
            already started in this process, or a new local one.
        gpus_per_task: GPUs each task asks for; ``None``: 1 when the cluster has GPUs, else 0.
        cpus_per_task: CPUs each task asks for (torch in the task uses that many threads).
        max_in_flight: how many tasks are submitted ahead of the results collected.
        max_retries: how many times Ray runs a shard again when its worker process or node dies (a shard's result
            does not depend on where or how often it runs).

    Raises:
        WorkerLostError: a shard's worker died more than ``max_retries`` times; the shards that finished, including
            those still running then, were passed to ``on_done`` first, so a rerun resumes after them.
    """
    if not tasks:
        return
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    elif address is not None:
        log.info("Ray already initialised in this process; ignoring address=%s", address)
    if gpus_per_task is None:
        gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    # a worker or node that dies (killed, out of memory) is a system failure: Ray runs the shard again; an error
    # raised by the attack itself is not retried and reaches the caller as it is
    remote = ray.remote(_work).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries)
    threads = max(1, int(cpus_per_task))
    queue = list(tasks)
    running: dict[Any, ShardTask] = {}
    lost: list[tuple[ShardTask, Exception]] = []
    log.info("submitting %d shard(s) to Ray (%s GPU(s) per task)", len(tasks), gpus_per_task)
    while queue or running:
        while queue and not lost and len(running) < max_in_flight:
            task = queue.pop(0)
            running[remote.remote(task, threads)] = task
        if not running:
            break
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            task = running.pop(ref)
            try:
                _, tensors, meta = ray.get(ref)
            except ray.exceptions.RayTaskError:
                raise
            except ray.exceptions.RayError as e:  # retries spent: keep what still finishes, submit nothing more
                log.error("shard %s/%d lost: %s", task.cell, task.shard, e)
                lost.append((task, e))
                continue
            on_done(task, tensors, meta)
    if lost:
        first, why = lost[0]
        raise WorkerLostError(
            f"{len(lost)} shard(s) failed: the Ray worker computing each died on all {max_retries + 1} tries (first: "
            f"{first.cell} shard {first.shard}: {type(why).__name__}: {(str(why).splitlines() or [''])[0]}); "
            f"out of memory is the usual cause (give the workers more, or lower batch_size). The finished shards "
            f"are kept: rerun the same command to compute the rest")
