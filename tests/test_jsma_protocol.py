"""The JSMA paper's larger protocol (several sets, pooled, resumable) and the perception proxy."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import advkit.data as data
import advkit.reproduce.jsma_sets as sets_module
from advkit.analysis.perception import nearest_distance, perception_study
from advkit.evaluate.metrics import wilson_interval
from advkit.report.perception_report import write_perception_report
from advkit.reproduce.jsma_sets import _trained_on, run_jsma_sets, set_slug

SPLITS = ["test[:40]", "test[40:80]"]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, fmnist_test):
    out = tmp_path_factory.mktemp("jsma") / "pooled"
    return run_jsma_sets(out, SPLITS, dataset="fashion-mnist", model="lenet", samples=3)


def test_set_slugs():
    assert set_slug("train[:10000]") == "train_0-10000"
    assert set_slug("train[50000:]") == "train_50000-end"
    assert set_slug("test") == "test"


def test_each_set_has_its_folder_and_the_whole_pools_them(pooled):
    assert [s["folder"] for s in pooled.sets] == ["test_0-40", "test_40-80"]
    rows = []
    for s in pooled.sets:
        with (pooled.path / s["folder"] / "records.csv").open() as f:
            got = list(csv.DictReader(f))
        assert len(got) == 3 * 9 == s["n_attacks"]
        rows += got
    # record indices are rows of the whole test split, inside each set's range
    assert all(int(r["index"]) < 40 for r in rows[:27]) and all(40 <= int(r["index"]) < 80 for r in rows[27:])
    ok = [r["success"] == "True" for r in rows]
    w = pooled.whole
    assert w["n_attacks"] == 54 and w["success_rate"] == pytest.approx(sum(ok) / 54)
    share = [float(r["share"]) for r, o in zip(rows, ok, strict=True) if o]
    assert w["distortion_successful"] == pytest.approx(sum(share) / len(share))
    assert w["success_ci95"][0] <= w["success_rate"] <= w["success_ci95"][1]
    md = (pooled.path / "report.md").read_text()
    assert "| **whole** |" in md and "97.10%" in md and "4.44%" in md


def test_examples_are_kept_as_8_bit_pixels(pooled):
    t = load_file(str(pooled.path / "test_0-40" / "adversarial.safetensors"))
    assert t["x_adv"].dtype == torch.uint8 and t["x_adv"].shape == (27, 1, 28, 28)
    clean = data.load("fashion-mnist", "test", download_ok=False)
    with (pooled.path / "test_0-40" / "records.csv").open() as f:
        recs = list(csv.DictReader(f))
    assert t["index"].tolist() == [int(r["index"]) for r in recs]
    changed = (t["x_adv"] != torch.round(clean.x[t["index"]] * 255).to(torch.uint8)).flatten(1).sum(1)
    assert changed.tolist() == [int(r["modified"]) for r in recs]


def test_a_finished_set_is_read_back_not_attacked_again(pooled, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    done = pooled.path / "test_0-40"
    (out / "test_0-40").mkdir(parents=True)
    for f in done.iterdir():
        (out / "test_0-40" / f.name).write_bytes(f.read_bytes())
    calls = []
    real = sets_module.run_jsma
    monkeypatch.setattr(sets_module, "run_jsma", lambda sub, *a, **k: (calls.append(sub.name), real(sub, *a, **k)))
    r = run_jsma_sets(out, SPLITS, dataset="fashion-mnist", model="lenet", samples=3)
    assert calls == ["test_40-80"]
    assert r.whole == {**pooled.whole, "command": r.whole["command"], "provenance": r.whole["provenance"]}
    got, was = r.whole["provenance"]["inputs"], pooled.whole["provenance"]["inputs"]
    assert got["test_0-40"]["sha256"] == was["test_0-40"]["sha256"]  # the set read back, byte for byte
    with pytest.raises(FileExistsError, match="finished pooled run"):
        run_jsma_sets(out, SPLITS, dataset="fashion-mnist", model="lenet", samples=3)


def test_one_set_or_repeated_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="two or more distinct sets"):
        run_jsma_sets(tmp_path / "x", ["test"], dataset="fashion-mnist", model="lenet")
    with pytest.raises(ValueError, match="two or more distinct sets"):
        run_jsma_sets(tmp_path / "x", ["test", "test"], dataset="fashion-mnist", model="lenet")
    assert not (tmp_path / "x").exists()


def test_seen_in_training_follows_the_card():
    card = {"train_split": "train[:50000]", "dataset_note": None}
    assert _trained_on(card, "train[:10000]", [0, 9999]) is True
    assert _trained_on(card, "train[50000:]", [50000, 59999]) is False
    assert _trained_on(card, "test", [0]) is False
    assert _trained_on({}, "train[50000:]", [50000]) is True  # a model trained on the whole split


def test_nearest_distance_matches_brute_force_and_skips_copies():
    g = torch.Generator().manual_seed(0)
    q, r = torch.rand(7, 1, 4, 4, generator=g), torch.rand(11, 1, 4, 4, generator=g)
    r[3] = q[2]  # an exact copy is skipped
    d = nearest_distance(q, r, chunk=3)
    brute = np.sqrt(((q.flatten(1)[:, None] - r.flatten(1)[None]) ** 2).sum(-1).numpy())
    brute[2, 3] = np.inf
    assert np.allclose(d.numpy(), brute.min(1), atol=1e-5)


def _fake_run(folder, x_adv, index, source, target):
    folder.mkdir(parents=True)
    summary = {"dataset": "fashion-mnist", "split": "test"}
    (folder / "results.json").write_text(json.dumps({"summary": summary, "extra": {}}))
    save_file({"x_adv": torch.round(x_adv * 255).to(torch.uint8), "index": torch.tensor(index),
               "target": torch.tensor(target)}, str(folder / "adversarial.safetensors"))
    with (folder / "records.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["index", "source", "target", "success", "share"])
        w.writeheader()
        for i, s, t in zip(index, source, target, strict=True):
            w.writerow({"index": i, "source": s, "target": t, "success": True, "share": 0.01})


def test_perception_calls_an_image_the_target_only_when_it_is_nearer_the_target_class(tmp_path):
    ref = data.load("fashion-mnist", "train[:2000]", download_ok=False)
    test = data.load("fashion-mnist", "test[:20]", download_ok=False)
    i0, i1 = 0, int(np.flatnonzero(test.y.numpy() != test.y[0].item())[0])
    s0, s1 = int(test.y[i0]), int(test.y[i1])
    t0 = (s0 + 1) % 10
    lookalike = ref.x[ref.y == t0][5].clone()
    lookalike[0, 0, 0] = 1.0 - lookalike[0, 0, 0]  # a training image of the target class, one pixel changed
    # row 0: turned into (nearly) a target-class training image; row 1: the clean image itself
    _fake_run(tmp_path / "run", torch.stack([lookalike, test.x[i1]]), [i0, i1], [s0, s1], [t0, (s1 + 1) % 10])
    p = perception_study(tmp_path / "run", "train[:2000]")
    assert p.d_target[0] == pytest.approx(1.0 * abs(1 - 2 * float(ref.x[ref.y == t0][5][0, 0, 0])), abs=1e-3)
    assert p.nearer_target[s0, t0] == 1.0 and p.nearer_target[s1, (s1 + 1) % 10] == 0.0
    assert p.summary["share_nearer_target"] == 0.5 and p.count.sum() == 2
    paths = write_perception_report(p, tmp_path / "out", extremes=1)
    assert all(path.is_file() for path in paths.values())
    assert "50.00%" in paths["markdown"].read_text()


def test_perception_on_a_real_pooled_run(pooled):
    p = perception_study(pooled.path, "train[:3000]")
    n_ok = round(pooled.whole["success_rate"] * pooled.whole["n_attacks"])
    assert p.count.sum() == n_ok and np.isfinite(p.d_source).all() and np.isfinite(p.d_target).all()
    assert 0.0 <= p.summary["share_nearer_target"] <= 1.0
    assert (p.d_source > 0).all() and p.summary["splits"] == SPLITS


def test_the_defence_study_retrains_on_the_examples_and_resumes(tmp_path, fmnist_test, monkeypatch):
    import advkit.reproduce.jsma_defence as defence
    from advkit.train import Recipe, train

    clean = tmp_path / "lin.safetensors"
    train("linear", "fashion-mnist", recipe=Recipe(epochs=2, lr=0.05, schedule="constant", augment=False),
          train_split="train[:2000]", out=clean)
    out = tmp_path / "defence"
    r = defence.run_jsma_defence(out, model=str(clean), dataset="fashion-mnist", craft_images=30, eval_samples=3)
    assert set(r["models"]) == {"clean", "jsma", "fgsm", "advgan"}
    assert r["models"]["advgan"]["pgd"]["n"] == 3  # PGD robust accuracy on the evaluation images, per network
    assert "| advgan (linear_advgan_trained) |" in (out / "report.md").read_text()
    for kind in ("jsma", "fgsm"):
        card = json.loads((out / f"linear_{kind}_augmented.json").read_text())
        assert card["train_size"] == 2000 + r["training_sets"][kind]["successful"]
        assert f"{kind.upper()} examples crafted against lin" in card["dataset_note"]
        t = load_file(str(out / f"{kind}_train_examples.safetensors"))
        assert t["x_adv"].dtype == torch.uint8 and t["x_adv"].shape[0] == 30
    assert r["training_sets"]["jsma"]["successful"] > 0
    for m in r["models"].values():
        k = round(m["success_rate"] * 27)
        assert m["n_attacks"] == 27 and m["success_rate"] == pytest.approx(k / 27)
        assert m["success_ci95"] == pytest.approx(list(wilson_interval(k, 27)))
    assert r["models"]["clean"]["success_rate"] > 0.5  # JSMA fools the clean linear model on most targets
    assert "| clean (linear) |" in (out / "report.md").read_text()

    def refuse(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(defence, "_craft", refuse)
    monkeypatch.setattr(defence, "train_model", refuse)
    monkeypatch.setattr(defence, "_evaluate", refuse)
    again = defence.run_jsma_defence(out, model=str(clean), dataset="fashion-mnist", craft_images=30, eval_samples=3)
    assert again["models"] == r["models"]


def test_an_attacked_training_rows_own_original_is_not_its_nearest_neighbour(tmp_path):
    """On the paper's training set the reference holds each example's own clean original; it must be skipped."""
    ref = data.load("fashion-mnist", "train[:300]", download_ok=False)
    i = 7
    s, t = int(ref.y[i]), (int(ref.y[i]) + 1) % 10
    x_adv = ref.x[i].clone()
    x_adv[0, 0, :3] = 1.0 - x_adv[0, 0, :3]  # three pixels off its own original
    _fake_run(tmp_path / "run", x_adv[None], [i], [s], [t])
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    summary["summary"]["split"] = "train"
    (tmp_path / "run" / "results.json").write_text(json.dumps(summary))
    p = perception_study(tmp_path / "run", "train[:300]")
    others = ref.x[(ref.y == s) & (torch.arange(300) != i)]
    expected = torch.cdist(x_adv.flatten()[None], others.flatten(1)).min().item()
    assert p.d_source[0] == pytest.approx(expected, rel=1e-4) and p.d_source[0] > 1.0


def test_an_interrupted_set_resumes_at_its_first_missing_piece(tmp_path, fmnist_test, monkeypatch):
    """Pieces of 9 attacks are kept as they finish; after an interruption a rerun attacks only the missing ones,
    writes the study an uninterrupted run (in the same pieces) writes, and then drops the pieces. Pieces of another
    attack are refused."""
    import advkit.reproduce.jsma_resume as resume_module
    from advkit.reproduce.jsma import run_jsma

    monkeypatch.setattr(resume_module, "PIECE", 9)
    out = tmp_path / "set"
    real = resume_module.attack_batched
    attacked = []

    def interrupt_after_two(*a, **k):
        if len(attacked) == 2:
            raise KeyboardInterrupt
        attacked.append(a[2].shape[0])
        return real(*a, **k)

    monkeypatch.setattr(resume_module, "attack_batched", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_jsma(out, "fashion-mnist", "lenet", 3, split="test[:40]")
    pieces = resume_module.partial_folder(out)
    assert not out.exists() and sorted(p.name for p in pieces.glob("piece_*")) == ["piece_00000.safetensors",
                                                                                   "piece_00001.safetensors"]
    with pytest.raises(ValueError, match="holds the pieces of another JSMA run.*attack"):
        run_jsma(out, "fashion-mnist", "lenet", 3, split="test[:40]", theta=-1.0)
    attacked.clear()
    monkeypatch.setattr(resume_module, "attack_batched", lambda *a, **k: (attacked.append(a[2].shape[0]),
                                                                          real(*a, **k))[1])
    said = []
    run_jsma(out, "fashion-mnist", "lenet", 3, split="test[:40]", progress=lambda *a: said.append(a[3]))
    assert attacked == [9] and any("2 of 3 pieces" in s for s in said)
    assert not pieces.exists()
    whole = run_jsma(tmp_path / "uninterrupted", "fashion-mnist", "lenet", 3, split="test[:40]").path
    assert (out / "records.csv").read_text() == (whole / "records.csv").read_text()
    assert torch.equal(load_file(str(out / "adversarial.safetensors"))["x_adv"],
                       load_file(str(whole / "adversarial.safetensors"))["x_adv"])
