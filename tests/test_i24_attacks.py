"""Issue 24, one attack contract: every attack goes through the same call and the same finishing step whichever way
it reaches the model (a pass-counting Counter or a counting query session); an attack's kind is a class attribute
the registry reads, so the list of query attacks and the error messages follow the registry, never a hand-written
list; ``norm`` and ``config()`` are the base class's, with the norm fixed where the attack fixes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.attacks.core import registry
from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.query.base import QueryAttack
from advkit.cli import app

EXPECTED_KINDS = {"jsma": "saliency", "noise": "control", "generator": "artefact", "uap": "artefact",
                  "square": "query", "nes": "query", "simba": "query", "hsj": "query",
                  "svre": "gradient", "cwa": "gradient", "apgd-ce": "gradient", "apgd-dlr": "gradient",
                  "apgd-t": "gradient", "fab-t": "gradient"}


@pytest.fixture()
def fresh_registry(monkeypatch):
    """The registry as it is, restored after the test (a test's registrations do not leak)."""
    monkeypatch.setattr(registry, "_STANDALONE", dict(registry._STANDALONE))
    monkeypatch.setattr(registry, "_TAKEN", set(registry._TAKEN))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 12, 12, generator=g) * 0.5 + 0.25, torch.arange(6) % 10


@dataclass(frozen=True)
class _OvershootModel(ModelAttack):
    name: ClassVar[str] = "overshoot-model"

    def _run(self, model: Counter, x, y, target, generator):
        return x + 2 * self.eps


@dataclass(frozen=True)
class _OvershootQuery(QueryAttack):
    name: ClassVar[str] = "overshoot-query"

    def _search(self, oracle, x, y, target, g, start):
        return (start if start is not None else x) + 2 * self.eps


def test_every_registered_attack_has_a_family_and_the_query_list_is_read_from_it():
    solo = A.standalone()
    assert {n: cls.kind for n, cls in solo.items()} == EXPECTED_KINDS
    assert all(cls.kind in A.KINDS for cls in solo.values())
    assert A.query_attacks() == A.of_kind("query") == sorted(n for n, c in solo.items() if issubclass(c, QueryAttack))


def test_a_new_query_attack_is_a_query_attack_everywhere_by_registering_it(fresh_registry, tiny_resnet):
    cls = A.register_attack(dataclass(frozen=True)(type("Echo", (_OvershootQuery,), {
        "__annotations__": {}, "name": "echo", "__module__": __name__})))
    assert "echo" in A.query_attacks() and A.budget_norm("echo") == "linf"
    x, y = _batch()
    r = A.create("echo", eps=0.05, max_queries=3)(tiny_resnet, x, y, start=x)  # start= is a query attack's
    assert r.queries is not None and r.queries.tolist() == [0] * 6
    listing = CliRunner().invoke(app, ["attacks", "list"], terminal_width=200)
    assert listing.exit_code == 0
    assert any(line.split("│")[1].strip() == "echo" and "query: scores" in line
               for line in listing.output.splitlines() if line.count("│") > 2)
    assert cls.kind == "query"


def test_a_kind_outside_the_families_is_refused_when_registering(fresh_registry):
    magic = dataclass(frozen=True)(type("Magic", (_OvershootModel,), {"__annotations__": {}, "name": "magic",
                                                                       "kind": "magic", "__module__": __name__}))
    with pytest.raises(ValueError, match="kind must be one of gradient, saliency, query, artefact, control"):
        A.register_attack(magic)
    assert "magic" not in A.standalone()


def test_both_contracts_end_in_the_same_finishing_step(tiny_resnet):
    x, y = _batch()
    model_r = _OvershootModel(eps=0.05)(tiny_resnet, x, y)
    query_r = _OvershootQuery(eps=0.05, max_queries=5)(tiny_resnet, x, y)
    for r in (model_r, query_r):  # projected onto the ball and [0, 1], success measured on the projected batch
        assert torch.allclose(r.x_adv, (x + 0.05).clamp(0, 1), atol=1e-7)
        with torch.no_grad():
            pred = tiny_resnet(r.x_adv).argmax(1)
        assert torch.equal(r.pred, pred) and torch.equal(r.success, pred != y)
        assert r.forward_passes == 1 and r.backward_passes == 0  # the success check, nothing else
    assert model_r.queries is None and query_r.queries.tolist() == [0] * 6


def test_a_model_attack_refuses_start_naming_its_kind(tiny_resnet):
    x, y = _batch()
    with pytest.raises(ValueError, match="ifgsm is a gradient attack and does not take start=: only query attacks"):
        A.create("ifgsm", eps=0.05, steps=2)(tiny_resnet, x, y, start=x)
    with pytest.raises(ValueError, match="noise is a control attack"):
        A.create("noise", eps=0.05)(tiny_resnet, x, y, start=x)


def test_config_is_every_attacks_and_names_its_norm():
    for name in A.names():
        if name in A.standalone() and A.standalone()[name].takes_path:
            continue
        attack = A.create(name)
        config = attack.config()
        assert config["norm"] == attack.norm, name
    assert A.create("noise", eps=0.1, norm="l2").config() == {"name": "noise", "eps": 0.1, "norm": "l2"}
    jsma = A.create("jsma").config()
    assert jsma["norm"] == "l0" and "eps" not in jsma and jsma["upsilon"] == 0.145  # eps is unused by JSMA
    assert A.create("square", eps=0.1).config()["max_queries"] == 10_000


def test_a_norm_the_attack_fixes_cannot_be_set():
    with pytest.raises(ValueError, match="'norm' does not apply to 'jsma'"):
        A.create("jsma", norm="linf")
    with pytest.raises(ValueError, match="'norm' does not apply to 'generator"):
        A.create("generator:fashion-mnist-lenet", norm="l2")
    uap = A.create("uap:fashion-mnist-lenet")
    assert uap.norm == uap.card["norm"] and uap.config()["norm"] == uap.norm  # the file's norm
    assert A.create("generator:fashion-mnist-lenet").norm == "linf"
    assert A.budget_norm("uap:fashion-mnist-lenet") is None and A.budget_norm("jsma") == "l0"
