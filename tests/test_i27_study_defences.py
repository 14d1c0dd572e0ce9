"""Issue 27, defended targets in transfer studies: the experiment file's ``defence:`` form, seeded random
defences (per-image draws that do not depend on batching or resuming), and the report's defended columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advkit import defences, models
from advkit.study.config import ConfigError, load_config
from advkit.study.defended import defence_label, draw_seed, order_targets, study_predict
from advkit.study.plan import cell_id


def _raw(**over) -> dict:
    raw = {"dataset": "fashion-mnist", "sources": ["lenet"], "targets": ["lenet"], "attacks": ["fgsm"],
           "eps": [0.1], "sample": {"n": 4}}
    raw.update(over)
    return raw


# -- the mapping form


def test_the_mapping_and_the_string_name_one_model_and_one_cell():
    spellings = [{"model": "lenet", "defence": {"name": "jpeg", "quality": 50, "bpda": True}},
                 "defended:jpeg[bpda=true,quality=50]:lenet", "defended:jpeg[quality=50,bpda=true]:lenet"]
    specs = [load_config(_raw(sources=[s], targets=["lenet"])).sources[0] for s in spellings]
    assert specs == ["defended:jpeg[quality=50,bpda=true]:lenet"] * 3
    assert len({cell_id(s, "fgsm", "0.1", None, 0) for s in specs}) == 1
    cfg = load_config(_raw(targets=[{"model": "lenet", "defence": "jpeg"},
                                    {"model": "lenet", "defence": {"name": "bit_depth", "bits": 3}},
                                    {"model": {"ensemble": ["lenet", "mlp"]}, "defence": "median"}]))
    assert cfg.targets == ("defended:jpeg:lenet", "defended:bit_depth[bits=3]:lenet",
                           "defended:median:ensemble:lenet+mlp")
    # a setting at its fixed default is dropped: quality 75 is plain jpeg
    assert load_config(_raw(targets=[{"model": "lenet", "defence": {"name": "jpeg", "quality": 75}}])
                       ).targets == ("defended:jpeg:lenet",)
    m = models.load(cfg.targets[2], dataset="fashion-mnist")  # the spec is what advkit.models.load takes
    assert isinstance(m, defences.Defended) and m.transform.settings["size"] == 2


def test_every_bad_defence_entry_is_reported_at_file_load():
    with pytest.raises(ConfigError) as err:
        load_config(_raw(targets=[
            {"model": "lenet", "defence": "gauss"},
            {"model": "lenet", "defence": {"name": "jpeg", "qualty": 50}},
            {"model": "lenet", "defence": {"name": "jpeg", "quality": 0}},
            {"model": "lenet", "defence": {"name": "bit_depth", "bits": "five"}},
            {"defence": "jpeg"},
            {"model": "lenet", "defence": "jpeg", "seed": 1},
            "defended:median[size=x]:lenet"]))
    text = str(err.value)
    assert "targets[0].defence: unknown defence 'gauss'; known: jpeg, bit_depth, median, random_resize_pad" in text
    assert "targets[1].defence: jpeg has no setting 'qualty'; its settings: quality, bpda" in text
    assert "targets[2].defence.quality: jpeg: quality must be an integer in [1, 100], got 0" in text
    assert "targets[3].defence.bits: bit_depth: bits must be an integer in [1, 8], got 'five'" in text
    assert "targets[4].model: missing" in text
    assert "targets[5]: unknown key(s) ['seed'] (allowed: model, defence)" in text
    assert "targets[6]:" in text and "not true/false or a number" in text


def test_labels_and_order_put_each_defence_after_its_model():
    assert defence_label("defended:jpeg:lenet") == "lenet + jpeg (q=75)"
    assert defence_label("defended:jpeg[quality=50,bpda=true]:lenet") == "lenet + jpeg (q=50, BPDA)"
    assert (defence_label("defended:bit_depth:lenet", resolved={"bits": 5, "bpda": False})
            == "lenet + bit_depth (bits=5)")
    assert defence_label("lenet") is None
    names = {"lenet + jpeg (q=75)": "defended:jpeg:lenet", "mlp": "mlp", "lenet": "lenet",
             "lenet + median (size=2)": "defended:median:lenet", "mlp + jpeg (q=75)": "defended:jpeg:mlp"}
    assert order_targets(list(names), names) == ["mlp", "mlp + jpeg (q=75)", "lenet", "lenet + jpeg (q=75)",
                                                 "lenet + median (size=2)"]


# -- random defences: per-image draws from (seed, spec, image index)


def _tiny_random() -> defences.Defended:
    torch.manual_seed(0)  # 28 pixels: resized to 28..30 and padded to 31 (8 pixels would leave nothing to draw)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 5))
    return defences.wrap(models.wrap(net, mean=[0.5], std=[0.25], input_shape=(1, 28, 28), num_classes=5,
                                     name="tiny").freeze(), "random_resize_pad")


def test_study_predict_draws_per_image_whatever_the_batching():
    m, spec = _tiny_random(), "defended:random_resize_pad:tiny"
    x = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    direct = []
    for i in range(9):  # by hand: image i transformed with the draw seeded from (seed, spec, 10 + i)
        m.transform.reseed(draw_seed(3, spec, 10 + i))
        direct.append(m(x[i:i + 1]))
    want = torch.cat(direct)
    got = [study_predict(m, spec, x, seed=3, first=10, batch_size=b, logits=True) for b in (9, 4, 1)]
    m(x)  # draws from the transform's own generator in between change nothing
    got.append(study_predict(m, spec, x, seed=3, first=10, batch_size=2, logits=True))
    for g in got:
        torch.testing.assert_close(g, want, rtol=0, atol=1e-6)
    shifted = study_predict(m, spec, x[4:], seed=3, first=14, logits=True)  # a later batch: the same images' draws
    torch.testing.assert_close(shifted, want[4:], rtol=0, atol=1e-6)


# -- through the study runner


@pytest.fixture(scope="module")
def fmnist_sample():
    from advkit import data

    try:
        data.load("fashion-mnist", "test", limit=8, subset="first", download_ok=False)
    except data.DataNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


def _preds(run_dir: Path, cell: str) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    from advkit.study.runstate import read_tensors

    shards = sorted((run_dir / "cells" / cell).glob("shard-*.safetensors"))
    parts = [read_tensors(p) for p in shards]
    return (torch.cat([t["pred"] for t, _ in parts], 1), parts[0][1]["models"],
            torch.cat([t["x_adv"] for t, _ in parts]))


def test_a_random_target_predicts_the_same_with_any_batch_size_or_resume(tmp_path, fmnist_sample, monkeypatch):
    from advkit.study import cells
    from advkit.study.runner import run_study
    from advkit.study.runstate import RunDir

    rrp = "defended:random_resize_pad:lenet"
    logits: dict[str, list[tuple[int, torch.Tensor]]] = {"a": [], "b": []}
    real, run = cells.study_predict, ["a"]

    def spy(model, spec, x, **kw):  # the random target's logits on the float examples (its first call per shard)
        z = real(model, spec, x, **{**kw, "logits": True})
        if spec == rrp and all(f != kw["first"] for f, _ in logits[run[0]]):
            logits[run[0]].append((kw["first"], z))
        return z.argmax(1)

    monkeypatch.setattr(cells, "study_predict", spy)
    base = _raw(targets=["lenet", rrp], eps=[0.2], sample={"n": 6, "order": "first", "only_correct": False},
                save_png=0, seeds=[0])
    a = run_study({**base, "batch_size": 2, "shard_size": 2}, tmp_path / "a", command="pytest")
    run[0] = "b"
    run_study({**base, "batch_size": 5}, tmp_path / "b", command="pytest")
    za, zb = (torch.cat([z for _, z in sorted(logits[k], key=lambda t: t[0])]) for k in "ab")
    assert len(logits["a"]) == 3 and len(logits["b"]) == 1  # three shards of two images; one of six
    torch.testing.assert_close(za, zb, rtol=0, atol=1e-5)
    cell = a.records["cells"][0]["id"]
    pa, names, x_adv = _preds(tmp_path / "a", cell)
    m = models.load(rrp, dataset="fashion-mnist")
    direct = []
    for i in range(6):  # image i of the cell, its own draw from (cell seed 0, spec, i)
        m.transform.reseed(draw_seed(0, rrp, i))
        with torch.no_grad():
            direct.append(m(x_adv[i:i + 1]))
    torch.testing.assert_close(za, torch.cat(direct), rtol=0, atol=1e-5)
    (tmp_path / "a" / "cells" / cell / "shard-001.safetensors").unlink()  # interrupted: resume recomputes it
    RunDir(tmp_path / "a").results_json.unlink()
    run[0] = "a"
    assert run_study({**base, "batch_size": 2, "shard_size": 2}, tmp_path / "a", command="pytest").reused == 2
    pb, _, _ = _preds(tmp_path / "b", cell)
    row = names.index(rrp)
    assert torch.equal(_preds(tmp_path / "a", cell)[0][row], pb[row]) and torch.equal(pa[row], pb[row])


def test_the_report_lists_defended_targets_next_to_lenet_with_direct_numbers(tmp_path, fmnist_sample):
    from advkit.report.defence_table import defence_table
    from advkit.report.tables import matrix, matrix_table
    from advkit.study.runner import run_study

    targets = ["defended:jpeg:lenet", "mlp", "lenet", "defended:bit_depth:lenet"]
    res = run_study(_raw(sources=["lenet", "mlp"], targets=targets, eps=[0.2], seeds=[0], save_png=0,
                         sample={"n": 8, "order": "first", "only_correct": False}), tmp_path / "r", command="pytest")
    recs = res.records
    eps = recs["summary"][0]["eps"]
    table = matrix_table(recs, eps)
    jpeg, bits = "lenet + jpeg (q=75)", "lenet + bit_depth (bits=5)"
    assert table.headers[1:-1] == ["white-box", "mlp", "lenet", jpeg, bits]
    _, _, cells = matrix(recs, eps)
    mlp_cell = next(c["id"] for c in recs["cells"] if c["source"] == "mlp")
    _, _, x_adv = _preds(tmp_path / "r", mlp_cell)
    y = _labels(tmp_path / "r")
    lenet = models.load("lenet", dataset="fashion-mnist")
    rates = {}
    for name, m in (("lenet", lenet), (jpeg, defences.wrap(lenet, "jpeg")), (bits, defences.wrap(lenet, "bit_depth"))):
        with torch.no_grad():
            rates[name] = float((m(x_adv).argmax(1) != y).float().mean())
        key = next(k for k in cells if k[0][0] == "mlp" and k[1] == name)
        assert cells[key]["mean"] == pytest.approx(rates[name], abs=1e-9)
    drops = defence_table(recs, eps)
    assert drops is not None and drops.headers[1:] == [f"{jpeg} (vs lenet)", f"{bits} (vs lenet)"]
    mlp_row = next(r for r in drops.rows if r[0].startswith("mlp"))
    assert mlp_row[1:] == [f"{100 * (rates['lenet'] - rates[d]):+.1f}" for d in (jpeg, bits)]
    assert next(r for r in drops.rows if r[0].startswith("lenet"))[1:] == ["-", "-"]  # lenet is that row's source


def _labels(run_dir: Path) -> torch.Tensor:
    """Seed 0's labels: the sample's, at the seed's picks."""
    from advkit.study.runstate import RunDir, read_tensors

    t, _ = read_tensors(RunDir(run_dir).sample_file)
    return t["y"][t["picks"][0]].long()


def test_attacking_through_a_random_source_resumes_identically(tmp_path, fmnist_sample):
    from advkit.study.runner import run_study
    from advkit.study.runstate import RunDir

    rrp = "defended:random_resize_pad:lenet"
    cfg = _raw(sources=[rrp], targets=["lenet"], attacks=["fgsm"], eps=[0.1], save_png=0, seeds=[0],
               sample={"n": 4, "order": "first", "only_correct": False}, batch_size=2, shard_size=2)
    cell = run_study(cfg, tmp_path / "r", command="pytest").records["cells"][0]["id"]
    shard = tmp_path / "r" / "cells" / cell / "shard-001.safetensors"
    before = _preds(tmp_path / "r", cell)[2]
    shard.unlink()  # interrupted: the resumed run attacks the second batch after other draws than the first run
    RunDir(tmp_path / "r").results_json.unlink()
    run_study(cfg, tmp_path / "r", command="pytest")
    assert torch.equal(_preds(tmp_path / "r", cell)[2], before)
