"""The Ray backend: the same results as the local backend for the same seeds, and a clear error without Ray."""

from __future__ import annotations

import sys

import pytest
import torch

from advkit.study.runner import run_study
from advkit.study.runstate import RunDir
from tests.test_transfer import _strip, tiny_config, tiny_run, tiny_zoo  # noqa: F401  (fixtures)


def test_missing_ray_is_a_clear_error(monkeypatch, tiny_zoo, tmp_path):  # noqa: F811
    from advkit.study.ray_backend import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ValueError, match=r"pip install 'advkit\[ray\]'"):
        import_ray()
    with pytest.raises(ValueError, match="advkit\\[ray\\]"):
        run_study(tiny_config(tiny_zoo, seeds=[0], attacks=["ifgsm"]), tmp_path / "r", backend="ray")
    with pytest.raises(ValueError, match="backend"):
        run_study(tiny_config(tiny_zoo), tmp_path / "r2", backend="dask")


def test_ray_backend_matches_local(tiny_run, tiny_zoo, tmp_path):  # noqa: F811
    """A local Ray instance (one CPU), each cell cut in two shards: the same examples and records as the local run.

    About 12 s here (Ray's start-up and one worker); not marked slow, as it stays under 20 s."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, num_gpus=0)
    try:
        res = run_study(tiny_config(tiny_zoo, shard_size=4), tmp_path / "ray", backend="ray")
    finally:
        ray.shutdown()
    assert res.computed == 8
    assert _strip(res.records)["success"] == _strip(tiny_run.records)["success"]
    assert _strip(res.records)["paired"] == _strip(tiny_run.records)["paired"]
    local, remote = RunDir(tiny_run.run_dir), RunDir(res.run_dir)
    for c in tiny_run.records["cells"]:
        a, _ = local.read_cell(c["id"], 1)
        b, metas = remote.read_cell(c["id"], 2)
        assert torch.equal(a["x_adv"], b["x_adv"]) and torch.equal(a["pred_8bit"], b["pred_8bit"])
        assert all(m.get("worker_pid") for m in metas)  # computed in Ray workers
