"""Issue 23, models and artefacts: imported names stay inside --out, doubtful imports are announced, generator and
UAP cards cannot be edited behind their hash, training refuses models that do not fit its data (and non-finite
settings) before any work, and the wrong kind of file or run folder is named for what it is."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.cli import app
from advkit.models import get_arch
from advkit.models.checkpoint import CheckpointError, write_with_card
from advkit.models.generator import GENERATOR_DIR, load_generator, read_generator_card
from advkit.models.universal import UNIVERSAL_DIR, load_universal

runner = CliRunner()
WEIGHTS = GENERATOR_DIR.parent
FMNIST_LENET = WEIGHTS / "fashion-mnist" / "lenet.safetensors"  # 90.73% on the test split with mean/std
MNIST_LENET = WEIGHTS / "mnist" / "lenet.safetensors"
GEN = GENERATOR_DIR / "mnist-lenet.safetensors"     # eps 0.3
UAP = UNIVERSAL_DIR / "fashion-mnist-lenet.safetensors"  # eps 0.1, linf


def flat(text: str) -> str:
    return " ".join(text.split())


def copy_artefact(src: Path, folder: Path, name: str = "a") -> Path:
    dst = folder / f"{name}.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def edit_card(path: Path, **fields: object) -> None:
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(fields)
    card_path.write_text(json.dumps(card, indent=2))


# ---------------------------------------------------------------------------------------------- 1. import names
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "ABSOLUTE", "x\\y", ""])
def test_an_import_name_is_a_file_name_and_nothing_is_written_elsewhere(tmp_path: Path, name: str) -> None:
    name = str(tmp_path / "elsewhere" / "x") if name == "ABSOLUTE" else name
    torch.save(get_arch("lenet5").build(1, 10, 28).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "a" / "b" / "out"
    r = runner.invoke(app, ["models", "import", str(tmp_path / "w.pt"), "--arch", "lenet5", "--dataset", "mnist",
                            "--out", str(out), "--name", name])
    assert r.exit_code == 2, r.output
    assert "is a file name" in flat(r.output) and "--name" in r.output
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [Path("w.pt")], written


# ------------------------------------------------------------------------------ 2. doubtful imports are announced
@pytest.fixture(scope="module")
def shipped_lenet_pt(tmp_path_factory) -> Path:
    """The shipped Fashion-MNIST LeNet's weights as an outside torch.save file (it expects mean 0.286, std 0.353)."""
    path = tmp_path_factory.mktemp("pt") / "lenet.pt"
    torch.save(load_file(str(FMNIST_LENET)), path)
    return path


def test_an_import_without_its_normalisation_warns_near_chance_and_names_mean_std(
        shipped_lenet_pt: Path, tmp_path: Path, fmnist_test) -> None:
    r = runner.invoke(app, ["models", "import", str(shipped_lenet_pt), "--arch", "lenet", "--dataset",
                            "fashion-mnist", "--out", str(tmp_path / "raw")])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "21.63%" in out and "warning: clean accuracy 21.63%" in out and "near chance (10% for 10 classes)" in out
    assert "--mean 0.286 --std 0.353" in out  # the fix, with the values advkit's own models use
    card = json.loads((tmp_path / "raw" / "lenet.json").read_text())
    assert card["test_accuracy"] == 0.2163 and len(card["warnings"]) == 1 and "near chance" in card["warnings"][0]
    # with --mean/--std it scores 90.73% and imports without a warning: test_models_import's CLI test


def test_an_import_with_a_nan_layer_warns_naming_the_tensor(tmp_path: Path, fmnist_test) -> None:
    state = load_file(str(FMNIST_LENET))
    name = sorted(k for k in state if k.endswith("weight"))[-1]
    state[name][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    r = runner.invoke(app, ["models", "import", str(tmp_path / "nan.pt"), "--arch", "lenet", "--dataset",
                            "fashion-mnist", "--out", str(tmp_path / "m"), "--mean", "0.286", "--std", "0.353"])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert f"warning: tensor(s) {name} hold NaN or infinite values" in out
    assert "outputs are NaN or infinite on 10000 of 10000 images" in out
    assert len(json.loads((tmp_path / "m" / "nan.json").read_text())["warnings"]) == 2


# -------------------------------------------------------------------- 3. protected fields of generator/UAP cards
def test_an_edited_generator_eps_is_refused_naming_both_values(tmp_path: Path) -> None:
    path = copy_artefact(GEN, tmp_path)
    assert A.create(f"generator:{path}").eps == 0.3
    edit_card(path, eps=0.5)
    with pytest.raises(CheckpointError, match=r"card's eps is 0\.5 but the weights file a\.safetensors records 0\.3"):
        A.create(f"generator:{path}")
    with pytest.raises(CheckpointError, match="card's eps is 0.5"):
        load_generator(path)
    r = runner.invoke(app, ["attack", f"generator:{path}", "--model", "lenet", "--dataset", "mnist", "--limit", "2"])
    assert r.exit_code == 2 and "eps is 0.5 but" in flat(r.output) and "--eps" in r.output


@pytest.mark.parametrize("field, value", [("eps", 0.5), ("norm", "l2"), ("input_shape", [1, 32, 32])])
def test_an_edited_uap_card_is_refused_naming_the_field(tmp_path: Path, field: str, value: object) -> None:
    path = copy_artefact(UAP, tmp_path)
    original = json.loads(path.with_suffix(".json").read_text())[field]
    edit_card(path, **{field: value})
    with pytest.raises(CheckpointError, match=rf"card's {field} is {value!r} but .* records {original!r}".replace(
            "[", r"\[")):
        A.create(f"uap:{path}")


def test_shipped_artefacts_record_their_budget_and_shape_under_the_hash() -> None:
    files = [*GENERATOR_DIR.glob("*.safetensors"), *UNIVERSAL_DIR.glob("*.safetensors")]
    assert len(files) == 8
    for path in files:
        card = json.loads(path.with_suffix(".json").read_text())
        with safe_open(str(path), framework="pt") as f:
            recorded = json.loads((f.metadata() or {})["advkit"])
        fields = ("kind", "input_shape", "eps", *(("ngf", "blocks") if card["kind"] == "generator" else ("norm",)))
        assert {k: card[k] for k in fields} == recorded, path
    load_generator(GEN)  # the hash covers the rewritten files
    load_universal(UAP)


def test_a_file_from_an_older_advkit_loads_with_a_warning(tmp_path: Path, caplog) -> None:
    gen, card = load_generator(GEN)
    old = tmp_path / "old.safetensors"
    write_with_card(gen.state_dict(), old, {k: v for k, v in card.items() if k not in ("sha256", "weights")})
    with safe_open(str(old), framework="pt") as f:
        assert "advkit" not in (f.metadata() or {})
    with caplog.at_level(logging.WARNING, logger="advkit.models.checkpoint"):
        assert read_generator_card(old)["eps"] == 0.3
    assert "older advkit" in caplog.text and "eps 0.3" in caplog.text


# ------------------------------------------------------------------- 4. models and settings that do not fit the data
def _no_data(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr(f"{module}.load_data", refuse)


def test_train_generator_refuses_a_source_of_another_dataset_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_data(monkeypatch, "advkit.train.generator")
    out = tmp_path / "g.safetensors"
    r = runner.invoke(app, ["train-generator", "--source", str(FMNIST_LENET), "--dataset", "mnist", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "was trained on fashion-mnist, not mnist" in flat(r.output) and "--cross-domain" in r.output
    r = runner.invoke(app, ["train-generator", "--source", "lenet", "--dataset", "mnist", "--out", str(out), "--lr",
                            "nan"])
    assert r.exit_code == 2 and "learning rate (--lr) must be a finite number > 0" in flat(r.output)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_cross_domain_generator_is_trained_when_asked_for(fmnist_test) -> None:
    from advkit.train.generator import train_generator

    _, card = train_generator([str(FMNIST_LENET)], "mnist", eps=0.1, limit=16, eval_images=8, blocks=1, ngf=4,
                              cross_domain=True)
    assert card["cross_domain"] is True and "--cross-domain" in card["command"]


def test_train_uap_refuses_a_source_of_another_dataset_or_a_generator(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_data(monkeypatch, "advkit.train.universal")
    out = tmp_path / "u.safetensors"
    r = runner.invoke(app, ["train-uap", "--source", str(MNIST_LENET), "--dataset", "fashion-mnist", "--out",
                            str(out)])
    assert r.exit_code == 2 and "was trained on mnist, not fashion-mnist" in flat(r.output)
    r = runner.invoke(app, ["train-uap", "--source", str(GEN), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "this is a perturbation generator (advkit train-generator), not a classifier" in flat(r.output)
    assert f"generator:{GEN}" in flat(r.output).replace(" ", "")
    from advkit.train.universal import check_uap_settings

    with pytest.raises(ValueError, match="eps must be in"):
        check_uap_settings(float("nan"), "linf", 10, 1, 0.2)


@pytest.mark.parametrize("args, match", [
    (["--adversarial", "ensemble", "--adversarial-static", str(MNIST_LENET)],
     "static model .* was trained on mnist, not fashion-mnist"),
    (["--adversarial-static", "lenet"], "--adversarial-static is a setting of adversarial training, which is off "
                                        "without --adversarial: add --adversarial ensemble"),
    (["--adversarial-steps", "3"], "--adversarial-steps is a setting of adversarial training"),
    (["--adversarial-eps", "5"], r"adversarial eps must be a finite number in \[0, 1\]"),
    (["--adversarial", "pgd", "--adversarial-step-size", "2"], r"adversarial step_size must be .* in \[0, 1\]"),
    (["--lr", "nan"], r"learning rate \(--lr\) must be a finite number, got nan"),
    (["--lr", "inf"], r"learning rate \(--lr\) must be a finite number, got inf"),
    (["--lr", "0"], r"learning rate \(--lr\) must be > 0"),
    (["--weight-decay", "inf"], "weight decay must be a finite number"),
])
def test_train_refuses_what_does_not_fit_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         args: list[str], match: str) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr("advkit.train.loop.load", refuse)
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", "lenet", "--dataset", "fashion-mnist", "--epochs", "1", "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    import re

    assert re.search(match, flat(r.output)), r.output
    assert not out.exists()


def test_recipe_and_static_model_checks_in_the_python_api() -> None:
    from advkit.train import Recipe
    from advkit.train.loop import load_static_models

    for bad in ({"lr": float("nan")}, {"momentum": float("inf")}, {"weight_decay": float("nan")}, {"epochs": 0}):
        with pytest.raises(ValueError, match="must be"):
            Recipe(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trained on mnist, not fashion-mnist: its classes are mnist's"):
        load_static_models([str(MNIST_LENET)], "fashion-mnist")
    assert len(load_static_models(["lenet"], "fashion-mnist")) == 1


# -------------------------------------------------------------------------- 5. generator:PATH and uap:PATH kinds
@pytest.mark.parametrize("kind, what", [("generator", "generator"), ("uap", "universal perturbation")])
def test_a_missing_file_or_a_folder_is_named(tmp_path: Path, kind: str, what: str) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such file"):
        A.create(f"{kind}:{tmp_path / 'nope.safetensors'}")
    (tmp_path / "runs").mkdir()
    shutil.copy(GEN, tmp_path / "runs" / "g.safetensors")
    with pytest.raises(CheckpointError, match=rf"runs: a folder, not a {what} file \(it holds g\.safetensors\)"):
        A.create(f"{kind}:{tmp_path / 'runs'}")


def test_the_wrong_kind_of_file_is_named_with_its_use() -> None:
    with pytest.raises(CheckpointError, match=r"this is a universal perturbation \(advkit train-uap\), not a "
                                              r"perturbation generator; attack with uap:"):
        A.create(f"generator:{UAP}")
    with pytest.raises(CheckpointError, match=r"this is a perturbation generator .*, not a universal perturbation; "
                                              r"attack with generator:"):
        A.create(f"uap:{GEN}")
    for kind in ("generator", "uap"):
        with pytest.raises(CheckpointError, match=r"this is a classifier checkpoint \(arch 'lenet'\), not a .*--model"):
            A.create(f"{kind}:{FMNIST_LENET}")


# ------------------------------------------------------------------------------- 6. what a run folder is
def test_analyses_say_what_the_path_is(tmp_path: Path, fmnist_test) -> None:
    from advkit.study.runner import run_study
    from tests.test_transfer import make_tiny_zoo, tiny_config

    r = runner.invoke(app, ["analyze", "clusters", str(tmp_path / "nope")])
    assert r.exit_code == 2 and f"{tmp_path / 'nope'} does not exist" in flat(r.output).replace("\n", "")
    assert not (tmp_path / "nope").exists()
    r = runner.invoke(app, ["analyze", "perception", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in flat(r.output)
    zoo = make_tiny_zoo(tmp_path)
    run = run_study(tiny_config(zoo, attacks=["ifgsm"], seeds=[0], sample={"n": 4, "only_correct": False}),
                    tmp_path / "transfer").run_dir
    r = runner.invoke(app, ["analyze", "perception", str(run)])
    assert r.exit_code == 2, r.output
    assert "is a transfer run (advkit transfer), not a finished `advkit reproduce jsma` run" in flat(r.output)
    assert "older advkit" not in r.output
    jsma = tmp_path / "jsma"
    jsma.mkdir()
    (jsma / "results.json").write_text(json.dumps({"summary": {"dataset": "fashion-mnist"}, "extra": {}}))
    (jsma / "records.csv").write_text("index,source,target,success,share\n")
    r = runner.invoke(app, ["analyze", "clusters", str(jsma)])
    assert r.exit_code == 2 and "is a JSMA run (advkit reproduce jsma), not a transfer run" in flat(r.output)
    assert not (jsma / "analysis").exists()
