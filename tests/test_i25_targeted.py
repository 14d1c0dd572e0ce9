"""Issue 25, targeted transfer in a study: ``targeted: random | least_likely | CLASS`` in the experiment file.

Targets are resolved once with the sample (the same for every source and attack where the mode says so), the
records count targeted success (prediction == target) with the untargeted fooling rate beside it, the McNemar
tests compare targeted success, and an untargeted experiment keeps its digest, cells and records.
"""

from __future__ import annotations

import pytest
import torch

from advkit.report.run_report import write_report
from advkit.report.tables import matrix_table, text_matrix
from advkit.study.config import ConfigError, load_config
from advkit.study.plan import plan_cells
from advkit.study.runner import run_study
from advkit.study.runstate import RunDir, read_tensors
from tests.test_transfer import make_tiny_zoo, tiny_config


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, fmnist_test):
    return make_tiny_zoo(tmp_path_factory.mktemp("i25_zoo"))


def _config(zoo: dict[str, str], **over) -> dict:
    """Two sources (both also targets), two attacks, two seeds, eight images."""
    return tiny_config(zoo, sources=[zoo["tres"], zoo["tlin"]], steps=5, **over)


@pytest.fixture(scope="module")
def random_run(zoo, tmp_path_factory):
    return run_study(_config(zoo, targeted="random"), tmp_path_factory.mktemp("i25") / "random",
                     command="pytest targeted")


def _shard_targets(run: RunDir, cells: list[dict]) -> dict[tuple[str, str, int], torch.Tensor]:
    return {(c["source"], c["attack"], c["seed"]): run.read_cell(c["id"], 1)[0]["target"] for c in cells}


def test_random_targets_never_the_label_and_shared_by_every_source_and_attack(random_run):
    rec, run = random_run.records, RunDir(random_run.run_dir)
    sample, _ = read_tensors(run.sample_file)
    aims = _shard_targets(run, rec["cells"])
    assert len(aims) == 8  # 2 sources x 2 attacks x 2 seeds
    for (_, _, seed), aim in aims.items():
        y = sample["y"][sample["picks"][rec["meta"]["seeds"].index(seed)]]
        assert aim.shape == y.shape and bool((aim != y).all())
        assert bool((aim >= 0).all()) and bool((aim < 10).all())
    for seed in rec["meta"]["seeds"]:
        same_seed = [a for (_, _, s), a in aims.items() if s == seed]
        assert all(torch.equal(a, same_seed[0]) for a in same_seed)  # every source and attack
    assert not torch.equal(aims[("tres", "ifgsm", 0)], aims[("tres", "ifgsm", 1)])  # seeded per seed


def test_targeted_success_is_the_share_labelled_with_the_target_with_the_fooling_rate_beside(random_run):
    rec, run = random_run.records, RunDir(random_run.run_dir)
    sample, _ = read_tensors(run.sample_file)
    assert rec["meta"]["targeted"] == "random" and "targeted success" in rec["meta"]["success_definition"]
    rows = {(r["source"], r["attack"], r["seed"], r["target"], r["images"]): r for r in rec["success"]
            if r["over"] == "all"}
    order = list(rec["meta"]["models"])
    for c in rec["cells"]:
        t, metas = run.read_cell(c["id"], 1)
        y = sample["y"][sample["picks"][rec["meta"]["seeds"].index(c["seed"])]]
        for j, spec in enumerate(metas[0]["models"]):
            name = order[[rec["meta"]["models"][m] for m in order].index(spec)]
            for images, pred in (("float", t["pred"][j]), ("8bit", t["pred_8bit"][j])):
                r = rows[(c["source"], c["attack"], c["seed"], name, images)]
                assert r["measure"] == "targeted"
                assert r["k"] == int((pred == t["target"]).sum()) and r["n"] == 8
                assert r["fooled_k"] == int((pred != y).sum())
                assert r["fooled_rate"] == pytest.approx(r["fooled_k"] / 8)
                assert r["ci_low"] <= r["rate"] <= r["ci_high"]  # the Wilson interval of the targeted success
    # the white-box attack reaches its target on most images (the success is not the fooling rate renamed)
    wb = [r for r in rec["summary"] if r["white_box"] and r["images"] == "float" and r["over"] == "all"]
    assert all("fooled_mean" in r for r in wb) and max(r["mean"] for r in wb) > 0.5
    # McNemar compares targeted success: its counts are the targeted k of attack and baseline
    p = next(r for r in rec["paired"] if r["seed"] == 0 and not r["white_box"])
    assert p["measure"] == "targeted"
    assert p["attack_k"] == rows[(p["source"], p["attack"], 0, p["target"], "float")]["k"]
    assert p["baseline_k"] == rows[(p["source"], p["baseline"], 0, p["target"], "float")]["k"]


def test_tables_and_report_say_targeted_success(random_run):
    rec = random_run.records
    assert "Targeted success" in matrix_table(rec, "16/255").caption
    assert text_matrix(rec, "16/255").startswith("targeted transfer success (%)")
    text = write_report(random_run.run_dir)["markdown"].read_text()
    assert "targeted success (%)" in text.lower() and "fooling rate" in text


def test_a_resumed_targeted_run_aims_at_the_same_classes(zoo, random_run, tmp_path):
    out = tmp_path / "again"
    first = run_study(_config(zoo, targeted="random"), out, command="pytest again")
    run = RunDir(first.run_dir)
    cell = first.records["cells"][-1]["id"]
    run.shard_path(cell, 0).unlink()  # interrupted before its last shard
    (out / "report.md").unlink(missing_ok=True)
    (out / "results.json").unlink()
    again = run_study(_config(zoo, targeted="random"), out, command="pytest resume")
    assert again.computed == 1
    assert torch.equal(RunDir(again.run_dir).read_cell(cell, 1)[0]["target"],
                       RunDir(random_run.run_dir).read_cell(cell, 1)[0]["target"])


def test_least_likely_is_each_sources_own_lowest_scored_class(zoo, tmp_path):
    res = run_study(_config(zoo, targeted="least_likely", attacks=["ifgsm"], seeds=[0]), tmp_path / "ll",
                    command="pytest ll")
    run = RunDir(res.run_dir)
    sample, _ = read_tensors(run.sample_file)
    x = sample["images"][sample["picks"][0]].float() / 255
    from advkit.models import load

    for c in res.records["cells"]:
        spec = res.records["meta"]["models"][c["source"]]
        with torch.no_grad():
            order = load(spec, dataset="fashion-mnist")(x).argsort(1)
        y = sample["y"][sample["picks"][0]]
        expected = torch.where(order[:, 0] == y, order[:, 1], order[:, 0])
        assert torch.equal(run.read_cell(c["id"], 1)[0]["target"], expected)
    assert res.records["meta"]["targeted"] == "least_likely"


@pytest.mark.parametrize("cls", [3, "Dress"])
def test_a_class_target_aims_every_image_at_it_and_leaves_its_images_out(zoo, tmp_path, cls):
    cfg = load_config(_config(zoo, targeted=cls, attacks=["ifgsm"], seeds=[0]))
    assert cfg.targeted == 3  # a name of a fixed-class dataset is stored as its index
    res = run_study(cfg, tmp_path / "cls", command="pytest cls")
    run = RunDir(res.run_dir)
    sample, _ = read_tensors(run.sample_file)
    assert bool((sample["y"] != 3).all())  # no image of the target class is attacked
    for c in res.records["cells"]:
        assert bool((run.read_cell(c["id"], 1)[0]["target"] == 3).all())
    assert "left out of the sample" in res.records["meta"]["targeted_note"]


def test_bad_targeted_values_are_refused_naming_the_key(zoo, tmp_path):
    for value, words in (("most_likely", "neither random, least_likely nor a class"),
                         (10, "class 10 is not a class"), (True, "expected random"),
                         ("Dog", "'Dog' is neither random, least_likely nor a class of fashion-mnist")):
        with pytest.raises(ConfigError) as e:
            load_config(_config(zoo, targeted=value))
        assert any(p.startswith("targeted: ") and words in p for p in e.value.problems), e.value.problems


def test_an_artefact_attack_cannot_be_targeted(zoo, tmp_path):
    from advkit.models.universal import save_universal

    uap = tmp_path / "u.safetensors"
    save_universal(torch.zeros(1, 28, 28), uap, {"source": {"name": "tres"}, "eps": 0.1, "norm": "linf",
                                                 "command": "test"})
    ok = load_config(_config(zoo, attacks=["ifgsm", f"uap:{uap}"]))  # untargeted: fine
    assert ok.targeted is None
    with pytest.raises(ConfigError) as e:
        load_config(_config(zoo, attacks=["ifgsm", f"uap:{uap}"], targeted="random"))
    assert any("attacks[1].name" in p and "cannot be targeted" in p for p in e.value.problems), e.value.problems


def test_untargeted_configs_keep_their_digest_cells_and_records(zoo):
    cfg = load_config(_config(zoo))
    assert cfg.targeted is None and "targeted" not in cfg.to_dict()
    assert all(c.targeted is None for c in plan_cells(cfg, {s: "none" for s in cfg.sources}))
    targeted = load_config(_config(zoo, targeted="random"))
    assert targeted.digest() != cfg.digest() and load_config(targeted.to_dict()) == targeted


def test_a_targeted_only_loss_needs_a_targeted_study(zoo):
    attacks = ["ifgsm", {"name": "mi", "settings": {"loss": "potrip"}}]
    with pytest.raises(ConfigError) as e:
        load_config(_config(zoo, attacks=attacks))
    assert any(p.startswith("attacks[1].settings.loss: 'potrip'") and "targeted: random" in p
               for p in e.value.problems), e.value.problems
    assert load_config(_config(zoo, attacks=attacks, targeted="random")).targeted == "random"
