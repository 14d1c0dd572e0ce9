"""The transfer study's experiment file: parsing, overrides and validation errors that name the field."""

from __future__ import annotations

import pytest

from advkit.study.config import ConfigError, StudyConfig, apply_overrides, load_config, parse_fraction
from advkit.study.plan import plan_cells
from advkit.study.sweep import gamma_values

BASE = {"dataset": "fashion-mnist", "sources": ["resnet20"], "targets": ["lenet", "mlp"],
        "attacks": ["ifgsm", "mi", {"name": "sgm", "label": "sgm-0.5", "settings": {"gamma": 0.5}}],
        "eps": ["16/255", 0.1], "steps": 10, "seeds": [0, 1], "sample": {"n": 20}}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    return e.value.problems


def test_valid_config_resolves():
    cfg = load_config(BASE)
    assert isinstance(cfg, StudyConfig)
    assert cfg.eps == ("16/255", "0.1")
    cells = plan_cells(cfg, {"resnet20": "residual"})
    assert {(c.eps, c.eps_value) for c in cells} == {("16/255", 16 / 255), ("0.1", 0.1)}
    assert [a.label for a in cfg.attacks] == ["ifgsm", "mi", "sgm-0.5"]
    assert cfg.attack("sgm-0.5").uses_gamma and not cfg.attack("mi").uses_gamma
    assert cfg.baseline == "ifgsm"
    assert cfg.sample.pool == 20 and cfg.sample.only_correct
    assert load_config(cfg.to_dict()) == cfg  # the resolved config reads back to the same experiment
    assert load_config(cfg.to_dict()).digest() == cfg.digest()


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("sources: [resnet20]\ntargets: lenet,mlp\nattacks: [ifgsm, sgm+mi]\neps: [16/255]\n"
                 "sample:\n  n: 10\n  seed: 3\n")
    cfg = load_config(p, {"sample.n": 5, "eps": ["8/255", "16/255"], "seeds": [0, 1, 2]})
    assert cfg.targets == ("lenet", "mlp")
    assert cfg.sample.n == 5 and cfg.sample.seed == 3  # a dotted override keeps the rest of the mapping
    assert cfg.eps == ("8/255", "16/255") and cfg.seeds == (0, 1, 2)
    assert apply_overrides({"sample": {"n": 1, "seed": 2}}, {"sample": {"n": 4}}) == {"sample": {"n": 4, "seed": 2}}


def test_unknown_attack_part_names_the_field():
    raw = {**BASE, "attacks": ["ifgsm", "mi", "foo"]}
    probs = _problems(raw)
    assert any(p.startswith("attacks[2].name: unknown attack part 'foo'") for p in probs), probs
    probs = _problems({**BASE, "attacks": ["ifgsm", "sgm+bar"]})
    assert any(p.startswith("attacks[1].name: unknown attack part 'bar'") for p in probs), probs


def test_fractions_are_parsed_never_evaluated():
    assert parse_fraction("16/255", "eps") == 16 / 255
    assert parse_fraction(" 8 / 255 ", "eps") == 8 / 255
    assert parse_fraction(0.1, "eps") == 0.1
    for bad in ("__import__('os').system('true')", "16/0", "abc", "2**3", None, True, "-1/255"):
        with pytest.raises(ValueError, match="eps"):
            parse_fraction(bad, "eps")
    probs = _problems({**BASE, "eps": ["16/255", "1/0"]})
    assert any(p.startswith("eps[1]:") for p in probs), probs


def test_every_problem_is_reported_at_once():
    raw = {**BASE, "eps": ["x"], "steps": 0, "gamma": 1.5, "seeds": [0, 0], "baseline": "pgd", "colour": "red",
           "sample": {"n": 0, "only_correct": "yes", "split": "test"}, "attacks": ["ifgsm", "ifgsm"]}
    probs = _problems(raw)
    text = "\n".join(probs)
    for field in ("eps[0]:", "steps:", "gamma:", "seeds:", "baseline:", "(top level): unknown key(s) ['colour']",
                  "sample.n:", "sample.only_correct:", "attacks: label 'ifgsm' is used twice"):
        assert field in text, (field, text)


def test_settings_are_checked_by_the_attack():
    probs = _problems({**BASE, "attacks": [{"name": "ifgsm", "settings": {"gamma": 0.2}}]})
    assert any(p.startswith("attacks[0].settings.gamma:") and "'ifgsm'" in p for p in probs), probs
    probs = _problems({**BASE, "attacks": [{"name": "ti", "settings": {"ti_kernel": 4}}]})
    assert any(p.startswith("attacks[0].settings:") for p in probs), probs
    probs = _problems({**BASE, "attacks": [{"name": "mi", "colour": 1}]})
    assert any(p.startswith("attacks[0]: unknown key") for p in probs), probs


def test_models_sample_and_shards():
    probs = _problems({**BASE, "sources": [], "targets": ["lenet", "lenet"], "sample": {"n": 10, "pool": 5},
                       "batch_size": 8, "shard_size": 12})
    text = "\n".join(probs)
    for field in ("sources:", "targets: 'lenet' is listed twice", "sample.pool:", "shard_size:"):
        assert field in text, (field, text)
    assert "dataset:" in "\n".join(_problems({**BASE, "dataset": "imagenet-21k"}))


def test_gamma_forms():
    cfg = load_config({**BASE, "gamma": [0.1, 0.5]})
    assert gamma_values(cfg.gamma, "resnet20", "residual") == (0.1, 0.5)
    cfg = load_config({**BASE, "gamma": {"residual": 0.2, "dense": [0.5, 0.8], "default": 0.3}})
    assert gamma_values(cfg.gamma, "resnet20", "residual") == (0.2,)
    assert gamma_values(cfg.gamma, "resnet20", "dense") == (0.5, 0.8)
    assert gamma_values(cfg.gamma, "resnet20", "none") == (0.3,)
    assert {c.gamma for c in plan_cells(cfg, {"resnet20": "dense"}) if c.label == "sgm-0.5"} == {0.5}  # its own
    cfg = load_config({**BASE, "gamma": {"resnet20": 0.7, "residual": 0.2}, "attacks": ["ifgsm", "sgm"]})
    assert gamma_values(cfg.gamma, "resnet20", "residual") == (0.7,)  # a source's own entry wins
    assert {c.gamma for c in plan_cells(cfg, {"resnet20": "residual"}) if c.label == "sgm"} == {0.7}
    probs = _problems({**BASE, "gamma": {"vgg": 0.2, "residual": 0}})
    assert any(p.startswith("gamma.vgg:") for p in probs) and any(p.startswith("gamma.residual:") for p in probs)


def test_gamma_auto_is_the_default_and_resolves_per_source():
    cfg = load_config({**BASE, "attacks": ["ifgsm", "sgm", {"name": "sgm+mi", "settings": {"gamma": 0.7}}]})
    assert cfg.gamma == "auto" and gamma_values(cfg.gamma, "resnet20", "residual") == ("auto",)
    cells = plan_cells(cfg, {"resnet20": "residual"}, auto=lambda src: 0.8)  # e.g. the zoo card's sgm_gamma
    assert {(c.attack.label, c.gamma) for c in cells} == {("ifgsm", None), ("sgm", 0.8), ("sgm+mi", 0.7)}
    assert all(c.kwargs.get("gamma") == c.gamma for c in cells if c.gamma is not None)
    cells = plan_cells(cfg, {"resnet20": "dense"})  # without a card: the authors' rule
    assert {c.gamma for c in cells if c.attack.label == "sgm"} == {0.5}
    cfg = load_config({**BASE, "gamma": {"residual": ["auto", 0.2]}})
    assert gamma_values(cfg.gamma, "resnet20", "residual") == ("auto", 0.2)


def test_baseline_defaults():
    assert load_config({**BASE, "attacks": ["mi", "di"]}).baseline == "mi"
    assert load_config({**BASE, "attacks": ["mi", "ifgsm"]}).baseline == "ifgsm"


def test_sample_range_pool_all_draw_seed_and_several_baselines():
    """The SGM tables' protocol as config: a range of the split, every eligible image, seeds drawing with
    randperm(pool, manual_seed(seed)); and comparisons with several baselines."""
    import torch

    from advkit.study.sample import seed_picks

    raw = {**BASE, "sample": {"n": 5, "pool": "all", "range": [5000, 10000], "order": "first", "draw": "seed"},
           "baseline": ["ifgsm", "mi"]}
    cfg = load_config(raw)
    s = cfg.sample
    assert (s.start, s.stop, s.pool_all, s.draw) == (5000, 10000, True, "seed")
    assert (cfg.baseline, cfg.also_compare) == ("ifgsm", ("mi",))
    assert load_config(cfg.to_dict()) == cfg
    picks = seed_picks(cfg, 40)
    assert torch.equal(picks[1], torch.randperm(40, generator=torch.Generator().manual_seed(1))[:5])
    assert load_config(BASE).digest() == load_config(load_config(BASE).to_dict()).digest()
    assert "range" not in load_config(BASE).to_dict()["sample"]  # earlier runs keep their digest
    problems = _problems({**BASE, "sample": {"n": 5, "range": [10, 3], "draw": "often"}, "baseline": ["mi", "x"]})
    assert any(p.startswith("sample.range:") for p in problems)
    assert any(p.startswith("sample.draw:") for p in problems)
    assert any(p.startswith("baseline: 'x'") for p in problems)
