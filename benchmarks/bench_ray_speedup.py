"""Speed-up of the transfer study's Ray backend with 2 workers over 1, on a study of at least 16 shards.

The same study (Fashion-MNIST zoo: MI-FGSM and I-FGSM from resnet20, evaluated on resnet20, lenet and vgg11_bn;
2 seeds; ``--n`` images per seed cut into shards of ``--shard-size``) runs on a local Ray instance with 1 CPU, then
with 2 CPUs: each task asks for 1 CPU and sets ``torch.set_num_threads(1)`` (the backend's ``cpus_per_task=1``), so
1 CPU means one worker process and 2 CPUs two. The driver also uses one torch thread. The local backend (one process,
one thread) runs the same study as the reference, and every run must give the same records.

Two times per run: ``total`` (``run_study`` from call to return: the driver's sample selection and model checks,
the shards, the records) and ``shards`` (first shard submitted to last shard written, from the progress callback),
whose ratio is the speed-up of the part Ray spreads. Each worker loads the models once, inside its first task, so
that time is in ``shards``. Ray's own start (``ray.init``) is timed apart and left out of both.

Run it on a quiet machine with at least 3 cores (the driver plus two workers); it refuses fewer than 16 shards.
Results go to ``--results`` (``benchmarks/results/ray_speedup.{md,json}``), with the machine's cores and load.

    python benchmarks/bench_ray_speedup.py                                   # 16 shards of 64 images, ~minutes
    python benchmarks/bench_ray_speedup.py --n 8 --shard-size 2 --batch 2 --steps 1 --repeats 1 \\
        --results /tmp/ray_check   # a check that it runs (16 tiny shards)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import advkit
from advkit.study import run_study


def study_config(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark's experiment (2 attacks x 2 seeds x ``n / shard_size`` shards)."""
    return {
        "title": "Ray speed-up benchmark", "dataset": "fashion-mnist", "sources": ["resnet20"],
        "targets": ["resnet20", "lenet", "vgg11_bn"], "attacks": ["mi", "ifgsm"], "eps": ["16/255"],
        "steps": args.steps, "seeds": [0, 1],
        "sample": {"n": args.n, "pool": "all", "range": [5000, 10000], "draw": "seed", "only_correct": True},
        "batch_size": args.batch, "shard_size": args.shard_size, "save_png": 0, "device": "cpu",
    }


def shards_of(cfg: dict[str, Any]) -> int:
    per_cell = -(-cfg["sample"]["n"] // cfg["shard_size"])
    return len(cfg["attacks"]) * len(cfg["seeds"]) * per_cell


def timed_run(cfg: dict[str, Any], out: Path, backend: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the study into a fresh ``out``; its records and ``{"total": s, "shards": s}``."""
    shutil.rmtree(out, ignore_errors=True)
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int, detail: str) -> None:
        if stage == "cells":
            marks.setdefault("first", time.perf_counter())
            marks["last"] = time.perf_counter()

    t0 = time.perf_counter()
    res = run_study(cfg, out, backend=backend, progress=progress, command="python benchmarks/bench_ray_speedup.py")
    total = time.perf_counter() - t0
    assert res.computed == shards_of(cfg), (res.computed, shards_of(cfg))
    return res.records, {"total": total, "shards": marks["last"] - marks["first"]}


def strip(records: dict[str, Any]) -> dict[str, Any]:
    """Records without timings, for comparing runs."""
    r = json.loads(json.dumps(records, default=str))
    for c in r["cells"]:
        c.pop("seconds", None)
    return {k: r[k] for k in ("cells", "success", "paired") if k in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images per seed")
    ap.add_argument("--shard-size", type=int, default=64, help="images per shard (a multiple of --batch)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting; the median is reported")
    ap.add_argument("--min-shards", type=int, default=16)
    ap.add_argument("--results", default="benchmarks/results/ray_speedup", help="path prefix of the .md and .json")
    ap.add_argument("--work", default=None, help="folder for the run directories (default: a temporary one)")
    args = ap.parse_args()

    import ray

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the Ray workers started below
    cfg = study_config(args)
    if shards_of(cfg) < args.min_shards:
        ap.error(f"{shards_of(cfg)} shards; the benchmark needs at least {args.min_shards} (raise --n or lower "
                 f"--shard-size, or --min-shards for a check)")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_ray_"))
    load_before = os.getloadavg()
    times: dict[str, list[dict[str, float]]] = {"local": [], "ray-1": [], "ray-2": []}
    init_s: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        rec, t = timed_run(cfg, work / "local", "local")
        records["local"] = rec
        times["local"].append(t)
        print(f"local: total {t['total']:.1f}s, shards {t['shards']:.1f}s", flush=True)
        for k in (1, 2):
            t0 = time.perf_counter()
            ray.init(num_cpus=k, num_gpus=0, include_dashboard=False, log_to_driver=False)
            init_s[f"ray-{k}"] = time.perf_counter() - t0
            try:
                rec, t = timed_run(cfg, work / f"ray{k}", "ray")
            finally:
                ray.shutdown()
            records[f"ray-{k}"] = rec
            times[f"ray-{k}"].append(t)
            print(f"ray, {k} worker(s): total {t['total']:.1f}s, shards {t['shards']:.1f}s", flush=True)
    same = all(strip(records[k]) == strip(records["local"]) for k in ("ray-1", "ray-2"))
    med = {k: {p: statistics.median(t[p] for t in v) for p in ("total", "shards")} for k, v in times.items()}
    speed = {p: med["ray-1"][p] / med["ray-2"][p] for p in ("total", "shards")}
    result = {
        "config": cfg, "shards": shards_of(cfg), "repeats": args.repeats, "seconds_median": med, "seconds": times,
        "ray_init_seconds": init_s, "speedup_2_over_1": speed, "identical_records": same,
        "torch_threads_per_worker": 1, "cpu_count": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "ray": ray.__version__, "advkit": advkit.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    prefix = Path(args.results)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    rows = "\n".join(f"| {k} | {med[k]['total']:.1f} | {med[k]['shards']:.1f} |" for k in times)
    md = (f"# Ray backend: 2 workers over 1\n\n{shards_of(cfg)} shards ({cfg['attacks']} from resnet20 on "
          f"{cfg['targets']}, {args.steps} steps, {args.n} images per seed x 2 seeds, shards of {args.shard_size}, "
          f"batches of {args.batch}); one torch thread per worker and in the driver; median of {args.repeats} "
          f"run(s); {os.cpu_count()} cores, load average {load_before[0]:.2f} before and "
          f"{result['load_average_after'][0]:.2f} after; torch {torch.__version__}, ray {ray.__version__}.\n\n"
          f"| backend | total (s) | shards (s) |\n|---|---|---|\n{rows}\n\n"
          f"Speed-up of 2 workers over 1: **{speed['shards']:.2f}x** on the shards, {speed['total']:.2f}x in total "
          f"(the driver's sample selection and records do not spread). Ray's start, not counted: "
          f"{', '.join(f'{k} {v:.1f} s' for k, v in init_s.items())}. Records identical to the local backend's: "
          f"{'yes' if same else 'NO'}.\n")
    Path(f"{prefix}.md").write_text(md)
    print(md)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
