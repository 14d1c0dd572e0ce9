"""The transfer study runner: records, run directory, determinism, resume after a kill, SGM cells.

Tiny, seeded, untrained models built here (a ResNet-20 and a linear softmax, saved as checkpoints with cards)
and 8 Fashion-MNIST test images keep every run to a second or two.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from advkit.evaluate.metrics import wilson_interval
from advkit.study.config import load_config
from advkit.study.runner import run_study
from advkit.study.runstate import RunConfigMismatchError, RunDir, RunExistsError, read_tensors

ROOT = Path(__file__).resolve().parents[1]


def make_tiny_zoo(folder: Path) -> dict[str, str]:
    """Two seeded, untrained checkpoints: ``tres`` (ResNet-20, residual) and ``tlin`` (linear softmax)."""
    from advkit.models import Classifier, get_arch, save_checkpoint

    out = {}
    for name, arch, seed in (("tres", "resnet20", 0), ("tlin", "linear", 1)):
        torch.manual_seed(seed)
        spec = get_arch(arch)
        model = Classifier(spec.build(1, 10, 28), (0.286,), (0.353,), (1, 28, 28), 10, name=name)
        path = folder / f"{name}.safetensors"
        save_checkpoint(model, path, {"arch": arch, "name": name, "input_shape": [1, 28, 28], "num_classes": 10,
                                      "mean": [0.286], "std": [0.353], "connections": spec.connections,
                                      "dataset": "fashion-mnist"})
        out[name] = str(path)
    return out


def tiny_config(zoo: dict[str, str], **over) -> dict:
    cfg = {"title": "tiny study", "dataset": "fashion-mnist", "sources": [zoo["tres"]],
           "targets": [zoo["tres"], zoo["tlin"]], "attacks": ["ifgsm", "mi"], "eps": ["16/255"], "steps": 3,
           "seeds": [0, 1], "sample": {"n": 8, "only_correct": False}, "batch_size": 4, "save_png": 2}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, fmnist_test):
    return make_tiny_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def tiny_run(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return run_study(tiny_config(tiny_zoo), out, command="pytest tiny")


def _strip(records: dict) -> dict:
    """Records without timings (the only thing allowed to differ between equal runs)."""
    r = json.loads(json.dumps(records, default=str))
    for c in r["cells"]:
        c.pop("seconds")
    return r


def test_records_and_files(tiny_run, tiny_zoo):
    run, rec = RunDir(tiny_run.run_dir), tiny_run.records
    for name in ("config.yaml", "config.json", "manifest.json", "results.json", "results/success.csv",
                 "results/summary.csv", "results/paired.csv", "results/clean.csv", "results/distortion.csv",
                 "state/sample.safetensors"):
        assert (run.root / name).is_file(), name
    assert load_config(yaml.safe_load((run.root / "config.yaml").read_text())).digest() == \
        load_config(tiny_config(tiny_zoo)).digest()
    cells = rec["cells"]
    assert len(cells) == 4  # 1 source x 2 attacks x 1 eps x 2 seeds
    # one row per cell x evaluated model (source + the other target) x (float, 8bit) x (all, clean-correct)
    assert len(rec["success"]) == 4 * 2 * 2 * 2
    for r in rec["success"]:
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(wilson_interval(r["k"], r["n"]))
        assert r["white_box"] == (r["target"] == "tres")
        assert r["n"] == 8 if r["over"] == "all" else r["n"] <= 8
    for s in rec["summary"]:
        per_seed = [r["rate"] for r in rec["success"] if all(r[k] == s[k] for k in
                                                              ("source", "attack", "eps", "target", "images", "over"))]
        if s["mean"] is not None:
            assert s["mean"] == pytest.approx(sum(x for x in per_seed if x is not None) /
                                              len([x for x in per_seed if x is not None]))
        assert s["seeds"] == 2
    # McNemar rows agree with the success counts they compare
    for p in rec["paired"]:
        def k(atk, p=p):
            return next(r["k"] for r in rec["success"] if r["attack"] == atk and r["seed"] == p["seed"]
                        and r["target"] == p["target"] and r["images"] == "float" and r["over"] == "all")
        assert (p["attack_k"], p["baseline_k"]) == (k(p["attack"]), k("ifgsm"))
        assert p["attack_k"] - p["baseline_k"] == p["only_attack"] - p["only_baseline"]
    assert {c["model"] for c in rec["clean"]} == {"tres", "tlin"}
    assert rec["sanity"]["ok"], rec["sanity"]["problems"]
    # the adversarial examples on disk respect the budget, float and 8-bit
    sample, _ = read_tensors(run.sample_file)
    for c in cells:
        t, meta = run.read_shard(c["id"], 0)
        x = sample["images"][sample["picks"][[0, 1].index(c["seed"])]].float() / 255
        assert t["x_adv"].shape == x.shape and t["pred"].shape == (2, 8)
        assert float((t["x_adv"] - x).abs().max()) <= 16 / 255 + 1e-6
        assert int((t["x_8bit"].int() - sample["images"][sample["picks"][[0, 1].index(c["seed"])]].int()).abs()
                   .max()) <= 16
        assert len(list((run.root / "png" / c["id"]).glob("*.png"))) == 2
    man = json.loads((run.root / "manifest.json").read_text())
    assert man["status"] == "finished" and man["command"] == "pytest tiny"
    for spec in tiny_zoo.values():
        card = json.loads(Path(spec).with_suffix(".json").read_text())
        assert man["models"][spec]["sha256"] == card["sha256"]
    assert len(man["data"]["indices_sha256"]) == 64 and man["data"]["pool"] == 8


def test_same_seeds_same_results(tiny_run, tiny_zoo, tmp_path):
    again = run_study(tiny_config(tiny_zoo), tmp_path / "again")
    assert _strip(again.records) == _strip(tiny_run.records)


def test_finished_run_is_not_overwritten(tiny_zoo, tmp_path):
    cfg = tiny_config(tiny_zoo, seeds=[0], attacks=["ifgsm"])
    run_study(cfg, tmp_path / "r")
    with pytest.raises(RunExistsError, match="force"):
        run_study(cfg, tmp_path / "r")
    res = run_study(cfg, tmp_path / "r", force=True)
    assert res.computed == 1 and res.reused == 0


def test_unfinished_run_of_another_experiment_is_refused(tiny_zoo, tmp_path):
    cfg = tiny_config(tiny_zoo, seeds=[0], attacks=["ifgsm", "mi"])

    def stop(stage, done, total, detail):
        if stage == "cells" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path / "r", progress=stop)
    with pytest.raises(RunConfigMismatchError, match="different experiment"):
        run_study({**cfg, "steps": 4}, tmp_path / "r")
    assert run_study(cfg, tmp_path / "r").reused == 1  # the same experiment resumes


def test_resume_after_interrupt_between_cells(tiny_run, tiny_zoo, tmp_path):
    calls = []

    def stop(stage, done, total, detail):
        calls.append((stage, done))
        if stage == "cells" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(tiny_config(tiny_zoo), tmp_path / "r", progress=stop)
    assert not (tmp_path / "r" / "results.json").exists()
    res = run_study(tiny_config(tiny_zoo), tmp_path / "r")
    assert (res.reused, res.computed) == (2, 2)
    assert _strip(res.records) == _strip(tiny_run.records)
    assert len(list((tmp_path / "r" / "cells").glob("*/shard-*.safetensors"))) == 4


KILLER = textwrap.dedent("""
    import json, os, signal, sys, torch
    torch.set_num_threads(1)
    import advkit.study.runstate as rs
    from advkit.study.runner import run_study
    cfg, out, mode, at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    writes = []
    real = rs.save_file
    def save_file(tensors, path, metadata=None):
        writes.append(path)
        if mode == "write" and len(writes) == at:   # die in the middle of writing a shard
            real(tensors, path, metadata=metadata)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(tensors, path, metadata=metadata)
    rs.save_file = save_file
    def progress(stage, done, total, detail):
        if mode == "between" and stage == "cells" and done == at:   # die between two shards
            os.kill(os.getpid(), signal.SIGKILL)
    run_study(cfg, out, progress=progress)
""")


@pytest.mark.parametrize("mode", ["between", "write"])
def test_resume_after_kill(tiny_run, tiny_zoo, tmp_path, mode):
    """SIGKILL a real run (between shards, or halfway through writing one), then resume: nothing lost, nothing
    duplicated, the same records as an uninterrupted run."""
    out = tmp_path / "killed"
    # the sample file is the first save_file call, shards are calls 2..5: die while writing the third shard
    at = 2 if mode == "between" else 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(tiny_config(tiny_zoo)), str(out), mode, str(at)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    shards = sorted((out / "cells").glob("*/shard-*.safetensors"))
    assert len(shards) == 2
    if mode == "write":
        assert list(out.rglob(".*.part")), "the half-written temporary file should be left behind"
    res = run_study(tiny_config(tiny_zoo), out)
    assert (res.reused, res.computed) == (2, 2)
    assert not list(out.rglob(".*.part"))
    assert len(list((out / "cells").glob("*/shard-*.safetensors"))) == 4
    assert _strip(res.records) == _strip(tiny_run.records)


RANDOM_KILLER = textwrap.dedent("""
    import json, os, signal, sys, torch
    torch.set_num_threads(1)
    from advkit.study.runner import run_study
    cfg, out, at, burn = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.rand(burn)   # use the global random state first, differently in each process
    torch.manual_seed(burn)
    def progress(stage, done, total, detail):
        if stage == "cells" and done == at:
            os.kill(os.getpid(), signal.SIGKILL)
    run_study(cfg, out, progress=progress)
""")

RANDOMISED = ["mi+di", "pgd", "vmi", "admix"]  # DI's resize/pad, PGD's random start, VMI's and Admix's samples
# every other kind of attack: a generator (convolutions only: the last bit depends on the input's memory layout), a
# UAP (a stored perturbation) and a query attack (random squares, its queries per image)
ARTEFACTS_AND_QUERIES = ["generator:fashion-mnist-resnet20", "uap:fashion-mnist-resnet20",
                         {"name": "square", "settings": {"max_queries": 30}}]


@pytest.mark.parametrize("attacks", [RANDOMISED, ARTEFACTS_AND_QUERIES], ids=["randomised", "generator-uap-query"])
def test_resume_of_randomised_cells_gives_identical_tensors(tiny_zoo, tmp_path, attacks):
    """Kill a study twice at different points (in processes whose global random state was used differently) and
    resume it: every shard's examples are bit-identical to an uninterrupted run's, for the randomised gradient
    attacks and for generator, UAP and query cells."""
    cfg = tiny_config(tiny_zoo, attacks=attacks, batch_size=2, shard_size=4, save_png=0)
    ref = run_study(cfg, tmp_path / "ref")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for at, burn in ((3, 7), (9, 1234)):
        proc = subprocess.run([sys.executable, "-c", RANDOM_KILLER, json.dumps(cfg), str(out), str(at), str(burn)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list((out / "cells").glob("*/shard-*.safetensors"))) == 9
    torch.rand(99)
    res = run_study(cfg, out)
    assert (res.reused, res.computed) == (9, len(attacks) * 2 * 2 - 9)  # 2 seeds x 2 shards per attack
    one, two = RunDir(ref.run_dir), RunDir(res.run_dir)
    for c in ref.records["cells"]:
        for shard in range(2):
            a, _ = one.read_shard(c["id"], shard)
            b, _ = two.read_shard(c["id"], shard)
            assert a.keys() == b.keys()
            for key in a:  # x_adv, x_8bit, pred, l2, l0, ... and a query cell's queries
                assert torch.equal(a[key], b[key]), (c["id"], shard, key)
    assert _strip(res.records) == _strip(ref.records)


def test_damaged_shard_is_recomputed(tiny_run, tiny_zoo, tmp_path):
    cfg = tiny_config(tiny_zoo)

    def stop(stage, done, total, detail):
        if stage == "cells" and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path / "r", progress=stop)
    victim = sorted((tmp_path / "r" / "cells").glob("*/shard-*.safetensors"))[0]
    victim.write_bytes(b"not a safetensors file")
    res = run_study(cfg, tmp_path / "r")
    assert (res.reused, res.computed) == (2, 2)
    assert _strip(res.records) == _strip(tiny_run.records)


def test_shards_do_not_change_results(tiny_run, tiny_zoo, tmp_path):
    """Cutting cells into shards (as the Ray backend does) gives the same examples and records."""
    res = run_study(tiny_config(tiny_zoo, shard_size=4), tmp_path / "sharded")
    assert res.computed == 8
    assert _strip(res.records)["success"] == _strip(tiny_run.records)["success"]
    one = RunDir(tiny_run.run_dir)
    two = RunDir(res.run_dir)
    for c in tiny_run.records["cells"]:
        a, _ = one.read_cell(c["id"], 1)
        b, _ = two.read_cell(c["id"], 2)
        assert torch.equal(a["x_adv"], b["x_adv"]) and torch.equal(a["pred"], b["pred"])


def test_pool_larger_than_n_gives_each_seed_its_own_images(tiny_zoo, tmp_path):
    res = run_study(tiny_config(tiny_zoo, attacks=["ifgsm"], sample={"n": 4, "pool": 8, "only_correct": False}),
                    tmp_path / "r")
    sample, _ = read_tensors(RunDir(res.run_dir).sample_file)
    assert sample["picks"].shape == (2, 4)
    assert not torch.equal(sample["picks"][0], sample["picks"][1])
    assert len(res.records["cells"]) == 2


def test_only_correct_sample_uses_images_every_model_gets_right(fmnist_test, tmp_path):
    cfg = {"sources": ["linear"], "targets": ["mlp", "lenet"], "attacks": ["fgsm"], "eps": ["8/255"],
           "seeds": [0], "sample": {"n": 12, "seed": 1}, "batch_size": 12, "save_png": 0}
    res = run_study(cfg, tmp_path / "r")
    sample, meta = read_tensors(RunDir(res.run_dir).sample_file)
    assert (sample["clean_pred"] == sample["y"]).all()
    assert meta["examined"] >= 12
    clean = {r["model"]: r for r in res.records["clean"]}
    assert clean["lenet"]["n"] == meta["examined"] and 0.5 < clean["lenet"]["rate"] <= 1.0
    rows = [r for r in res.records["success"] if r["images"] == "float"]
    by = {(r["target"], r["over"]): r["k"] for r in rows}
    assert all(by[(t, "all")] == by[(t, "clean-correct")] for t in ("linear", "mlp", "lenet"))
    assert not (res.run_dir / "png").exists()


@pytest.mark.skipif(not hasattr(__import__("advkit.backprop", fromlist=["x"]), "skip_gradient"),
                    reason="advkit.backprop.skip_gradient is not there yet")
def test_sgm_cells_sweep_gamma_and_report_hooks(tiny_zoo, tmp_path):
    cfg = tiny_config(tiny_zoo, attacks=["ifgsm", "sgm"], gamma=[0.2, 0.5], seeds=[0])
    res = run_study(cfg, tmp_path / "r")
    cells = res.records["cells"]
    assert sorted((c["attack"], c["gamma"]) for c in cells) == [("ifgsm", None), ("sgm", 0.2), ("sgm", 0.5)]
    sgm = res.records["sanity"]["sgm"]
    assert len(sgm) == 2 and all(s["hooks_fired"] > 0 and s["connections"] == 9 for s in sgm)
    assert res.records["sanity"]["ok"]
    paired = {(p["attack"], p["gamma"]) for p in res.records["paired"]}
    assert paired == {("sgm", 0.2), ("sgm", 0.5)}
    assert all(math.isfinite(p["p_exact"]) for p in res.records["paired"])


def test_finished_cells_of_another_run_are_reused(tiny_run, tiny_zoo, tmp_path):
    """A run that shares cells with a finished one (same attack settings, seed, images, models) copies them."""
    cfg = tiny_config(tiny_zoo, attacks=["ifgsm", "mi", "di"], seeds=[0])
    res = run_study(cfg, tmp_path / "r", reuse=[tiny_run.run_dir])
    assert (res.reused, res.computed) == (2, 1)  # ifgsm and mi at seed 0 come from tiny_run; di is new
    mine = {(r["attack"], r["target"], r["images"], r["over"]): r["k"] for r in res.records["success"]}
    theirs = {(r["attack"], r["target"], r["images"], r["over"]): r["k"] for r in tiny_run.records["success"]
              if r["seed"] == 0}
    assert all(mine[k] == v for k, v in theirs.items())
    other = run_study(tiny_config(tiny_zoo, attacks=["ifgsm"], seeds=[0], steps=4), tmp_path / "s",
                      reuse=[tiny_run.run_dir])
    assert other.reused == 0  # different steps: nothing to reuse


def test_relative_step_size_matches_the_absolute_one(tiny_zoo, tmp_path):
    a = run_study(tiny_config(tiny_zoo, attacks=["ifgsm"], seeds=[0], alpha="2/255"), tmp_path / "a")
    b = run_study(tiny_config(tiny_zoo, attacks=["ifgsm"], seeds=[0], alpha="eps/8"), tmp_path / "b",
                  reuse=[a.run_dir])
    assert b.reused == 1  # eps/8 at 16/255 is 2/255 exactly, so the cell is the same computation
    assert a.records["cells"][0]["config"]["alpha"] == 2 / 255


def test_range_pool_all_and_seed_draws_follow_the_benchmark_protocol(fmnist_test, tmp_path):
    """sample: {range, pool: all, order: first, draw: seed}: every eligible image of the range is the pool, each
    seed draws torch.randperm(pool, manual_seed(seed))[:n]; several baselines give paired rows for each."""
    import advkit.data
    import advkit.models
    from advkit.evaluate import predict

    cfg = {"sources": ["linear"], "targets": ["mlp", "lenet"], "attacks": ["noise", "fgsm", "ifgsm"],
           "eps": ["8/255"], "steps": 2, "seeds": [0, 1], "batch_size": 16, "save_png": 0,
           "sample": {"n": 6, "pool": "all", "range": [100, 160], "order": "first", "draw": "seed"},
           "baseline": ["ifgsm", "fgsm"]}
    res = run_study(cfg, tmp_path / "r")
    sample, meta = read_tensors(RunDir(res.run_dir).sample_file)
    test = advkit.data.load("fashion-mnist", "test", download_ok=False)
    x, y = test.x[100:160], test.y[100:160]
    ok = torch.ones(60, dtype=torch.bool)
    for m in ("linear", "mlp", "lenet"):
        ok &= predict(advkit.models.load(m, dataset="fashion-mnist"), x) == y
    assert torch.equal(sample["index"], torch.arange(100, 160)[ok]) and meta["examined"] == 60
    pool = int(ok.sum())
    assert torch.equal(sample["picks"][1], torch.randperm(pool, generator=torch.Generator().manual_seed(1))[:6])
    bases = {r["baseline"] for r in res.records["paired_mean"]}
    assert bases == {"ifgsm", "fgsm"} and res.records["meta"]["pool"] == pool
    noise = [r for r in res.records["cells"] if r["attack"] == "noise"]
    assert len(noise) == 2 and all(r["backward_passes"] == 0 for r in noise)


def test_query_attack_cells_record_their_queries(tiny_zoo, tmp_path):
    """A query attack in a study queries its source; its cells carry the per-image queries, and the report shows
    their cost."""
    cfg = tiny_config(tiny_zoo, attacks=["ifgsm", {"name": "square", "settings": {"max_queries": 30}}], seeds=[0])
    res = run_study(cfg, tmp_path / "q")
    cells = {c["attack"]: c for c in res.records["cells"]}
    assert cells["ifgsm"]["queries"] is None
    q = cells["square"]["queries"]
    assert q["budget"] == 30 and q["n"] == 8
    assert 0 < q["mean_queries_all"] <= 30 and q["success"]["k"] <= 8
    sq = next(c for c in res.records["cells"] if c["attack"] == "square")
    t, _ = RunDir(tmp_path / "q").read_cell(sq["id"], 1)
    assert t["queries"].dtype == torch.int64 and int(t["queries"].max()) <= 30
    assert int(t["queries"].double().mean().round()) == round(q["mean_queries_all"])
    from advkit.report.run_report import build_report

    text = build_report(tmp_path / "q").markdown()
    assert "Query cost (query attacks, on their source)" in text and "square" in text


def test_model_checks_are_in_the_records_and_the_report(tiny_run):
    from advkit.report.run_report import write_report

    checks = tiny_run.records["sanity"]["models"]
    assert len(checks) == 2
    for rows in checks.values():
        assert [c["name"] for c in rows] == ["eval_mode", "logits", "deterministic", "input_gradients",
                                             "saturation"]
    failed = [f"model {m}: {c['detail']}" for m, rows in checks.items() for c in rows if not c["ok"]]
    assert [p for p in tiny_run.records["sanity"]["problems"] if p.startswith("model ")] == failed
    md = Path(write_report(tiny_run.run_dir)["markdown"]).read_text()
    assert md.count("eval mode, logits, deterministic, input gradients, saturation") == 2


def test_the_transfer_command_reuses_another_runs_shards(tiny_zoo, tiny_run, tmp_path):
    """`advkit transfer --reuse DIR` copies the finished shards and the sample of a matching run."""
    import yaml
    from typer.testing import CliRunner

    from advkit.cli import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_zoo)))
    r = CliRunner().invoke(app, ["transfer", str(cfg), "--out", str(tmp_path / "b"), "--reuse", str(tiny_run.run_dir),
                                 "--no-report"])
    assert r.exit_code == 0, r.output
    assert "0 shard(s) computed, 4 reused" in r.output
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert _strip(again) == _strip(tiny_run.records)
