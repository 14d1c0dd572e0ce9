"""The cross-domain study: carrying perturbations across shapes, refusals before any work, and a small run whose
records, intervals, files and resume are checked against its own rows."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.cli import app
from advkit.models.generator import generator_path, load_generator
from advkit.models.universal import load_universal, universal_path
from advkit.reproduce.cross_domain import (
    CROSS_DOMAIN,
    QUICK,
    CrossDomainSetup,
    apply_artefact,
    held_out,
    match_shape,
    validate_setup,
)
from advkit.study.errors import RunExistsError

TINY = replace(QUICK, seeds=(0, 1), images=24, generator_images=128, uap_images=8, uap_passes=1,
               hosts=("lenet",), surrogates=("lenet",),
               targets={"fashion-mnist": ("lenet", "mlp", "maxout"), "mnist": ("lenet", "maxout", "linear")})


def test_match_shape_repeats_grey_averages_colour_and_resizes():
    g = torch.rand(2, 1, 28, 28)
    c = match_shape(g, (3, 28, 28))
    assert c.shape == (2, 3, 28, 28) and torch.equal(c[:, 0], c[:, 2])
    assert torch.allclose(match_shape(c, (1, 28, 28)), g)
    assert match_shape(g, (1, 32, 32)).shape == (2, 1, 32, 32)
    assert match_shape(g, (1, 28, 28)) is g


def test_same_shape_application_is_the_attack_itself(lenet, lenet_batch):
    x, y = lenet_batch
    gen, card = load_generator(generator_path("fashion-mnist-lenet"))
    ours = apply_artefact(A.create("generator:fashion-mnist-lenet", eps=card["eps"]), lenet, x, y)
    theirs = A.create("generator:fashion-mnist-lenet")(lenet, x, y).x_adv
    assert torch.allclose(ours, theirs, atol=1e-6)
    v, ucard = load_universal(universal_path("fashion-mnist-lenet"))
    assert torch.allclose(apply_artefact(A.create("uap:fashion-mnist-lenet", eps=ucard["eps"]), lenet, x, y),
                          A.create("uap:fashion-mnist-lenet")(lenet, x, y).x_adv, atol=1e-6)


def test_carried_perturbations_stay_within_eps_and_range(lenet, lenet_batch):
    x, y = lenet_batch
    big = match_shape(x, (3, 32, 32))
    colour = torch.nn.Sequential(torch.nn.Upsample(size=(28, 28), mode="bilinear"), torch.nn.Conv2d(3, 1, 1),
                                 lenet).eval()  # a model of the 3x32x32 domain (its success check only)
    gen = A.create("generator:fashion-mnist-lenet", eps=0.1)
    out = apply_artefact(gen, colour, big, y)
    assert out.shape == big.shape and float((out - big).abs().max()) <= 0.1 + 1e-6
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    u = apply_artefact(A.create("uap:fashion-mnist-lenet", eps=0.05), colour, big, y)
    assert float((u - big).abs().max()) <= 0.05 + 1e-6


@pytest.mark.parametrize("setup, words", [
    (CrossDomainSetup(datasets=("fashion-mnist", "cifar10")), ["differ in shape", "1x28x28", "3x32x32", "--resize"]),
    (CrossDomainSetup(datasets=("mnist",)), ["at least two"]),
    (CrossDomainSetup(eps=1.5), ["eps must be in (0, 1]"]),
    (CrossDomainSetup(seeds=(0, 0, 1)), ["distinct"]),
    (CrossDomainSetup(targets={"cifar10": ("x",)}), ["not in the run", "cifar10"]),
])
def test_bad_setups_are_refused_by_name(setup, words):
    with pytest.raises(ValueError) as e:
        validate_setup(setup)
    for w in words:
        assert w in str(e.value)


def test_refusals_write_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--resize"):
        CROSS_DOMAIN.run(out, CrossDomainSetup(datasets=("fashion-mnist", "cifar10")))
    with pytest.raises(ValueError, match="host or a surrogate"):
        CROSS_DOMAIN.run(out, replace(TINY, targets={"fashion-mnist": ("lenet",), "mnist": ("lenet",)}))
    with pytest.raises(ValueError, match="cannot load model 'nosuch'"):
        CROSS_DOMAIN.run(out, replace(TINY, targets={**TINY.targets, "mnist": ("lenet", "nosuch")}))
    assert not out.exists()
    r = CliRunner().invoke(app, ["reproduce", "cross-domain", "--out", str(out), "--datasets", "fashion-mnist,cifar10"])
    assert r.exit_code == 2 and "--resize" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["reproduce", "cross-domain", "--out", str(out), "--seeds", "0,x"])
    assert r.exit_code == 2 and "--seeds" in r.output
    r = CliRunner().invoke(app, ["reproduce", "cross-domain", "--out", str(out), "--target", "mnist"])
    assert r.exit_code == 2 and "DATASET=MODEL" in r.output
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cross") / "run"
    return out, CROSS_DOMAIN.run(out, TINY, command="test").result


def test_run_measures_every_method_on_every_target_within_budget(tiny_run):
    out, r = tiny_run
    methods = {d: {row["method"] for row in r["rows"] if row["dataset"] == d} for d in TINY.datasets}
    # generator and UAP from each domain's LeNet, I-FGSM on the in-domain LeNet, the noise control (no SGM: the
    # only surrogate has no skip connection)
    assert methods["mnist"] == {"generator:mnist:lenet", "generator:fashion-mnist:lenet", "uap:mnist:lenet",
                                "uap:fashion-mnist:lenet", "ifgsm:mnist:lenet", "noise"}
    assert len(r["rows"]) == 2 * 6 * 2 * 3
    assert all(row["linf_max"] <= TINY.eps + 1e-6 for row in r["rows"])
    assert all(row["white_box"] == (row["target"] == "lenet" and row["trained_on"] == row["dataset"])
               for row in r["rows"])
    for name in ("results.json", "manifest.json", "report.md", "report.html", "results/rows.csv",
                 "results/per_target.csv", "results/headline.csv", "figures/perturbations.png",
                 "figures/transfer_mnist.png"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["artefacts"]) == 2 * 2 * 2
    assert all(a["sha256"] for a in manifest["artefacts"])
    assert len(list(csv.DictReader((out / "results/rows.csv").open()))) == len(r["rows"])


def test_headline_is_the_held_out_mean_of_the_rows(tiny_run):
    _, r = tiny_run
    assert held_out(TINY, TINY.targets["mnist"]) == ["maxout", "linear"]
    h = next(x for x in r["headline"] if x["dataset"] == "mnist" and x["method"] == "generator:fashion-mnist:lenet")
    rows = [x for x in r["rows"] if x["dataset"] == "mnist" and x["method"] == h["method"]]
    noise = [x for x in r["rows"] if x["dataset"] == "mnist" and x["method"] == "noise"]
    for i, k in enumerate(TINY.seeds):
        def mean(rs, k=k):
            sel = [x for x in rs if x["seed"] == k and x["target"] in ("maxout", "linear")]
            return sum(x["fooled"] / x["n"] for x in sel) / len(sel)
        assert h["all"]["per_seed"][i] == pytest.approx(mean(rows))
        assert h["all_minus_noise"]["per_seed"][i] == pytest.approx(mean(rows) - mean(noise))
    assert h["all"]["low"] <= h["all"]["mean"] <= h["all"]["high"] and h["all"]["seeds"] == 2
    assert 0 <= h["all"]["low"] and h["all"]["high"] <= 1
    assert any("generator from fashion-mnist on lenet" in f for f in r["findings"])


def test_finished_run_is_kept_and_a_rerun_reuses_the_trained_artefacts(tiny_run):
    out, _ = tiny_run
    before = (out / "results.json").read_text()
    with pytest.raises(RunExistsError, match="--force"):
        CROSS_DOMAIN.run(out, TINY)
    assert (out / "results.json").read_text() == before
    (out / "results.json").unlink()   # as if killed before the end
    manifest = out / "reproduction.json"
    manifest.write_text(manifest.read_text().replace('"status": "finished"', '"status": "running"'))
    again = CROSS_DOMAIN.run(out, TINY).result
    assert all(a["reused"] for a in again["meta"]["artefacts"])
    changed = CROSS_DOMAIN.run(out, replace(TINY, uap_passes=2), force=True).result
    kinds = {(a["kind"], a["reused"]) for a in changed["meta"]["artefacts"]}
    assert kinds == {("generator", True), ("uap", False)}
