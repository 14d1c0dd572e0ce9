"""Faults in a transfer study (issue 23): a disk that fills up, two processes on one run directory, a Ray worker
killed mid-study. Each ends in a clear message or in the results an uninterrupted local run gives.

The resumed generator, UAP and query cells (bit-identical after a kill) are tested with the other kill tests in
``tests/test_transfer.py`` (``test_resume_of_randomised_cells_gives_identical_tensors``).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from typer.testing import CliRunner

import advkit.study.runstate as runstate
from advkit.cli import app
from advkit.study.runlock import LOCK_NAME, RunLockedError, run_lock
from advkit.study.runner import run_study
from advkit.study.runstate import DiskFullError, RunDir
from tests.test_transfer import ROOT, _strip, tiny_config, tiny_run, tiny_zoo  # noqa: F401  (fixtures)

# what safetensors 0.4-0.8 raise when the disk fills (checked on a full 64 KiB tmpfs): its own exception type,
# not an OSError, wrapping the OS error's text
FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _shards(out: Path) -> list[Path]:
    return sorted((out / "cells").glob("*/shard-*.safetensors"))


def _transfer(cfg_file: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["transfer", str(cfg_file), "--out", str(out), "--no-report", *extra])


@pytest.fixture()
def cfg_file(tiny_zoo, tmp_path):  # noqa: F811
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_zoo)))
    return path


def test_a_full_disk_is_a_message_and_the_run_resumes(cfg_file, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    """safetensors' own error on a full disk, while writing the third of four shards: exit 2 with a message that
    names the folder and its disk and says to free space and rerun; the two finished shards are intact, no
    temporary file or lock is left, and the rerun computes only the rest and gives the uninterrupted records."""
    real, calls = runstate.save_file, []

    def save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 4:  # the sample, two shards, then the disk is full
            raise SafetensorError(FULL)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(runstate, "save_file", save_file)
    out = tmp_path / "full"
    r = _transfer(cfg_file, out)
    assert r.exit_code == 2, r.output
    msg = _flat(r.output)
    assert "Traceback" not in r.output and "SafetensorError" not in r.output
    assert f"the disk that holds {out} is full (no space left on device; the file system mounted at /" in msg
    assert "free now) while writing " + str(out / "cells") in msg
    assert "Free space on it, then rerun the same command" in msg and "to resume" in msg
    done = _shards(out)
    assert len(done) == 2 and not list(out.rglob(".*.part")) and not (out / LOCK_NAME).exists()
    ref = RunDir(tiny_run.run_dir)
    for path in done:
        a, _ = runstate.read_tensors(path)
        b, _ = ref.read_shard(path.parent.name, 0)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    monkeypatch.setattr(runstate, "save_file", real)  # space freed
    again = _transfer(cfg_file, out)
    assert again.exit_code == 0, again.output
    assert "2 shard(s) computed, 2 reused" in again.output
    assert _strip(json.loads((out / "results.json").read_text())) == _strip(tiny_run.records)


def test_a_full_disk_while_writing_records_is_the_same_message(tiny_zoo, tmp_path, monkeypatch):  # noqa: F811
    """An OSError ENOSPC (a plain write, no file name) at the end of the run: the same message, every shard kept."""
    import advkit.study.runner as runner

    real = runner.atomic_write_text

    def atomic_write_text(path, text, mode=0o644):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text, mode)

    monkeypatch.setattr(runner, "atomic_write_text", atomic_write_text)
    out = tmp_path / "full"
    with pytest.raises(DiskFullError, match=r"the disk that holds .*full \(no space left on device; .*"
                                            r"Free space on it, then rerun the same command \(advkit x\) to resume"):
        run_study(tiny_config(tiny_zoo), out, command="advkit x")
    assert len(_shards(out)) == 4 and not (out / "results.json").exists()


def test_a_full_disk_in_advkit_attack_is_a_message(tmp_path, monkeypatch):
    """`advkit attack`: the same message, saying that this run was not kept."""
    real = runstate.save_file

    def save_file(tensors, path, metadata=None):
        raise SafetensorError(FULL)

    monkeypatch.setattr(runstate, "save_file", save_file)
    out = tmp_path / "a"
    r = CliRunner().invoke(app, ["attack", "ifgsm", "--model", "lenet", "--dataset", "fashion-mnist",
                                 "--limit", "8", "--eps", "0.1", "--out", str(out)])
    assert r.exit_code == 2, r.output
    msg = _flat(r.output)
    assert f"the disk that holds {out} is full" in msg and "this run was not kept" in msg, msg
    assert not list(out.rglob(".*.part")) and not (out / "results.json").exists()
    monkeypatch.setattr(runstate, "save_file", real)


def test_other_safetensors_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def save_file(tensors, path, metadata=None):
        raise SafetensorError("Error while serializing: something else")

    monkeypatch.setattr(runstate, "save_file", save_file)
    with pytest.raises(SafetensorError, match="something else"):
        runstate.atomic_save_tensors(tmp_path / "x.safetensors", {"a": torch.zeros(2)})


HOLDER = textwrap.dedent("""
    import json, sys, time, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from advkit.study.runner import run_study
    cfg, out, flag = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    def progress(stage, done, total, detail):   # hold the run (and its lock) until the test says go
        if stage == "cells" and done == 1:
            (flag / "ready").touch()
            t0 = time.monotonic()
            while not (flag / "go").exists() and time.monotonic() - t0 < 120:
                time.sleep(0.05)
    run_study(cfg, out, progress=progress, command="advkit transfer holder.yaml")
""")


def test_a_second_process_on_the_same_out_is_refused_at_once(tiny_zoo, cfg_file, tiny_run, tmp_path):  # noqa: F811
    """While one process runs a study in --out, `advkit transfer` on the same --out exits 2 at once, computing
    nothing, and says who holds the folder (pid, host, start, command); the first run finishes undisturbed."""
    out, flag = tmp_path / "shared", tmp_path / "flag"
    flag.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(tiny_config(tiny_zoo)), str(out), str(flag)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not (flag / "ready").exists():
            assert holder.poll() is None, holder.communicate()[1]
            assert time.monotonic() - t0 < 120, "the holder never started"
            time.sleep(0.05)
        before = _shards(out)
        r = _transfer(cfg_file, out)
        assert r.exit_code == 2, r.output
        msg = _flat(r.output)
        assert f"{out} is in use by another advkit process (pid {holder.pid} on {socket.gethostname()}, started 20" \
               in msg, msg
        assert "advkit transfer holder.yaml" in msg and "choose another --out" in msg
        assert _shards(out) == before  # the refused process computed and wrote nothing
        forced = _transfer(cfg_file, out, "--force")  # not even --force takes a folder in use
        assert forced.exit_code == 2 and "is in use by" in forced.output
    finally:
        (flag / "go").touch()
        _, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert _strip(json.loads((out / "results.json").read_text())) == _strip(tiny_run.records)
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_released_on_errors_and_a_refused_run_leaves_nothing(tiny_zoo, tmp_path):  # noqa: F811
    """An interrupted run releases the lock (the same process, or another, resumes at once); a run refused after
    the lock was taken (a model that does not load) leaves no folder behind; a lock file left by a killed run is
    taken over."""
    out = tmp_path / "r"

    def stop(stage, done, total, detail):
        if stage == "cells" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(tiny_config(tiny_zoo), out, progress=stop)
    assert not (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text("left by a killed run")  # unlocked: its process is gone
    assert run_study(tiny_config(tiny_zoo), out).reused == 1
    assert not (out / LOCK_NAME).exists()

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    new = tmp_path / "new" / "deeper"
    with pytest.raises(ValueError):
        run_study(tiny_config(tiny_zoo, targets=[tiny_zoo["tres"], str(broken)]), new)
    assert not (tmp_path / "new").exists()

    with run_lock(out, "advkit transfer a.yaml"), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        run_study(tiny_config(tiny_zoo), out, force=True)


def _ray_workers_running_a_shard() -> list[int]:
    """Pids of Ray worker processes executing a study task (Ray titles them ``ray::_work`` meanwhile)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().startswith(b"ray::_work"):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


class _Killer:
    """A thread that SIGKILLs the first Ray worker process it sees computing a shard."""

    def __init__(self) -> None:
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.killed:
            for pid in _ray_workers_running_a_shard():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
                break
            time.sleep(0.005)

    def __enter__(self) -> _Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes in /proc")
def test_a_ray_worker_killed_mid_study_changes_nothing(tiny_run, tiny_zoo, tmp_path, monkeypatch):  # noqa: F811
    """A two-node local Ray cluster (one CPU each); one worker process is SIGKILLed while it computes a shard. Ray
    runs the shard again and the study ends with the local backend's examples and records. Without retries left,
    the study stops with a message, keeps every other shard, and the same call resumes.

    20 to 40 s here (two Ray nodes start; 2 shared cores), hence slow."""
    ray = pytest.importorskip("ray")
    from functools import partial

    from ray.cluster_utils import Cluster

    import advkit.study.ray_backend as ray_backend

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=0)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        with _Killer() as killer:
            res = run_study(tiny_config(tiny_zoo, shard_size=4), tmp_path / "ray", backend="ray")
        assert killer.killed, "no worker was killed: the test tested nothing"

        slow = tiny_config(tiny_zoo, shard_size=4, steps=20)  # shards long enough to be caught on warm workers
        real = ray_backend.run_tasks_ray
        monkeypatch.setattr(ray_backend, "run_tasks_ray", partial(real, max_retries=0))
        lost = r"1 shard\(s\) failed: the Ray worker computing each died on all 1 tries .* rerun the same command"
        with _Killer() as killer, pytest.raises(ray_backend.WorkerLostError, match=lost):
            run_study(slow, tmp_path / "lost", backend="ray")
        assert killer.killed
        assert len(_shards(tmp_path / "lost")) == 7  # every other shard finished and was kept
        monkeypatch.setattr(ray_backend, "run_tasks_ray", real)
        again = run_study(slow, tmp_path / "lost", backend="ray")
        assert (again.reused, again.computed) == (7, 1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert res.computed == 8
    for table in ("success", "paired"):
        assert _strip(res.records)[table] == _strip(tiny_run.records)[table]
    local, remote = RunDir(tiny_run.run_dir), RunDir(res.run_dir)
    for c in tiny_run.records["cells"]:
        a, _ = local.read_cell(c["id"], 1)
        b, metas = remote.read_cell(c["id"], 2)
        for key in ("x_adv", "x_8bit", "pred", "pred_8bit", "l2"):
            assert torch.equal(a[key], b[key]), (c["id"], key)
        assert all(m.get("worker_pid") for m in metas)


def test_a_folder_holding_only_a_stale_lock_is_called_empty(tmp_path):
    # a run killed before its first shard leaves only the lock file (the OS released the lock itself)
    from advkit.study.runkind import describe_run
    from advkit.study.runlock import LOCK_NAME

    (tmp_path / LOCK_NAME).write_text("pid 1\n")
    assert describe_run(tmp_path) == f"{tmp_path} is an empty folder"
    (tmp_path / "other.txt").write_text("x")
    assert "without results.json" in describe_run(tmp_path)
