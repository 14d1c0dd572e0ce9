"""Training recipes: the schedules, plain momentum and the command recorded in the card."""

from __future__ import annotations

import pytest
import torch

from advkit.data import load
from advkit.train import Recipe, train, train_command


@pytest.fixture(scope="module")
def small():
    return load("fashion-mnist", "train", limit=1024), load("fashion-mnist", "test", limit=256)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def test_constant_schedule_runs_are_prefixes_of_longer_runs(small):
    """Snapshot N of a constant-rate run is the N-epoch run from the same seed, so snapshots are reproducible."""
    tr, te = small
    snaps = {}
    recipe = Recipe(epochs=3, lr=0.05, momentum=0.5, weight_decay=0.0, augment=False, schedule="constant",
                    nesterov=False, bf16=False, batch_size=64)

    def snapshot(done, model):
        snaps[done] = _weights(model)
        model.freeze()  # training must carry on regardless

    train("linear", "fashion-mnist", recipe=recipe, seed=3, train_data=tr, test_data=te, on_epoch=snapshot)
    assert sorted(snaps) == [1, 2, 3]
    short, card = train("linear", "fashion-mnist", recipe=Recipe(**{**recipe.__dict__, "epochs": 2}), seed=3,
                        train_data=tr, test_data=te)
    for k, v in _weights(short).items():
        torch.testing.assert_close(v, snaps[2][k], rtol=0, atol=1e-6)
    assert any(not torch.equal(v, snaps[3][k]) for k, v in snaps[2].items())  # epoch 3 still trained
    assert card["recipe"]["schedule"] == "constant" and card["recipe"]["nesterov"] is False
    assert card["recipe"]["bf16_used"] is False


def test_one_cycle_runs_are_not_prefixes(small):
    """The one-cycle rate depends on the run's length: a 2-epoch run differs from epoch 2 of a 3-epoch run."""
    tr, te = small
    snaps = {}
    recipe = Recipe(epochs=3, lr=0.05, augment=False, bf16=False, batch_size=64)
    train("linear", "fashion-mnist", recipe=recipe, seed=3, train_data=tr, test_data=te,
          on_epoch=lambda done, m: snaps.__setitem__(done, _weights(m)))
    short, _ = train("linear", "fashion-mnist", recipe=Recipe(**{**recipe.__dict__, "epochs": 2}), seed=3,
                     train_data=tr, test_data=te)
    assert any(not torch.allclose(v, snaps[2][k]) for k, v in _weights(short).items())


def test_bad_schedule_names_the_choices():
    with pytest.raises(ValueError, match="schedule must be one of one-cycle, constant, got 'cosine'"):
        Recipe(schedule="cosine")


def test_recorded_command_reproduces_the_recipe():
    r = Recipe(epochs=15, momentum=0.5, weight_decay=0.0, augment=False, schedule="constant", nesterov=False,
               bf16=False)
    cmd = train_command("lenet", "mnist", r, seed=1)
    assert cmd.startswith("advkit train lenet --dataset mnist --epochs 15")
    for part in ("--momentum 0.5", "--weight-decay 0", "--schedule constant", "--no-nesterov", "--no-bf16",
                 "--no-augment", "--seed 1"):
        assert part in cmd
    default = train_command("resnet20", "fashion-mnist", Recipe(), seed=0)
    assert "--momentum" not in default and "--schedule" not in default and "--no-" not in default
