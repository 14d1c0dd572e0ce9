"""The web study's server under load (issue 28): simulated participants answering at once.

    python benchmarks/bench_humans_load.py --participants 50 --answers 20             # builds a small JSMA run
    python benchmarks/bench_humans_load.py --run runs/jsma --participants 50 --answers 20 --out results.md

The study (``advkit humans serve``) asks Papernot et al.'s questions ("The Limitations of Deep Learning in
Adversarial Settings", EuroS&P 2016). Each simulated participant has its own cookie jar and walks the contract's
routes with httpx: GET / (the CSRF token), POST /consent, then GET /item / POST /answer pairs with random answers;
every fifth one also resubmits its first answer (a double submit). The server is uvicorn serving
``create_app(RUN)`` on 127.0.0.1, in its own process by default (``--in-process``: a thread of this one, sharing
its GIL with the clients, as the tests do). Printed: POST /answer latency percentiles, throughput, and the SQLite
check (rows written == answers acknowledged, no duplicates, no error status). ``RUN/humans.sqlite`` is created
afresh in a copy of the run, so the run given is never touched.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.humans_server import answer_rows, free_port, make_jsma_run, run_load, serve, spawn_server  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", type=int, default=50)
    p.add_argument("--answers", type=int, default=20, help="answers per participant")
    p.add_argument("--run", type=Path, help="a finished JSMA run (default: build one with 4 samples x 9 targets)")
    p.add_argument("--items", type=int, default=30, help="items per participant (>= --answers)")
    p.add_argument("--attention", type=int, default=3, help="attention checks per participant")
    p.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    p.add_argument("--out", type=Path, help="append the table (markdown) to this file")
    a = p.parse_args(argv)
    if a.items < a.answers:
        p.error(f"--items ({a.items}) must be at least --answers ({a.answers})")
    work = Path(tempfile.mkdtemp(prefix="bench_humans_"))
    load = os.getloadavg()
    try:
        run = work / "run"
        if a.run:
            shutil.copytree(a.run, run, ignore=shutil.ignore_patterns("humans.sqlite*"))
        else:
            t0 = time.perf_counter()
            make_jsma_run(run)
            print(f"built a JSMA run (fashion-mnist lenet, 4 samples x 9 targets) in {time.perf_counter() - t0:.1f} s")
        if a.in_process:
            from advkit.humans.app import create_app

            with serve(create_app(run, items_per_participant=a.items, attention_checks=a.attention)) as base:
                result = run_load(base, a.participants, a.answers)
        else:
            port = free_port()
            proc = spawn_server(run, port, items=a.items, attention=a.attention)
            try:
                result = run_load(f"http://127.0.0.1:{port}", a.participants, a.answers)
            finally:
                proc.terminate()
                proc.wait(10)
        rows = answer_rows(run / "humans.sqlite")
        keys = {(pid, item) for pid, item, *_ in rows}
        pct = result.percentiles()
        n = len(result.latencies)
        lines = [
            "| participants | answers each | POST /answer | p50 ms | p95 ms | p99 ms | max ms | answers/s | wall s "
            "| rows == acknowledged | duplicate rows | error statuses |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
            f"| {a.participants} | {a.answers} | {n} | {pct['p50']:.1f} | {pct['p95']:.1f} | {pct['p99']:.1f} "
            f"| {pct['max']:.1f} | {n / result.wall:.0f} | {result.wall:.1f} | {keys == result.acknowledged} "
            f"| {len(rows) - len(keys)} | {len(result.bad_status)} |",
        ]
        server = "a thread of the client process" if a.in_process else "its own process"
        note = (f"server: uvicorn on 127.0.0.1 in {server}; clients: one asyncio task and cookie jar per "
                f"participant (httpx); {result.repeats} double submits; {platform.machine()}, {os.cpu_count()} CPUs "
                f"visible (shared with other work: load average {load[0]:.1f} before the run), "
                f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        errors = ", ".join(f"{route}: HTTP {code}" for route, code in result.bad_status) or "none"
        print("\n".join(lines))
        print(note)
        print(f"error statuses: {errors}")
        if a.out:
            cmd = "OMP_NUM_THREADS=1 python benchmarks/bench_humans_load.py " + " ".join(argv or sys.argv[1:])
            head = "" if a.out.exists() else "# The web study under load (issue 28)\n"
            with a.out.open("a") as f:
                f.write(f"{head}\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\nCommand: `{cmd}`\n\n"
                        + "\n".join(lines) + f"\n\n{note}.\n\nError statuses: {errors}.\n")
        if result.bad_status or keys != result.acknowledged:
            raise SystemExit(f"FAILED: {len(result.bad_status)} error statuses, "
                             f"{len(result.acknowledged - keys)} acknowledged answers missing")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
