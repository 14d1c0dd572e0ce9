"""Row ranges in split names (``train[:50000]``), training on one range and validating on another."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import advkit.data as data
from advkit.cli import app
from advkit.data.subset import parse_split
from advkit.train import Recipe, train


@pytest.fixture(scope="module")
def fm_train():
    try:
        return data.load("fashion-mnist", "train", download_ok=False)
    except data.DataNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


def test_parse_split():
    assert parse_split("test") == ("test", None, None)
    assert parse_split("train[:50000]") == ("train", None, 50000)
    assert parse_split("train[50000:]") == ("train", 50000, None)
    assert parse_split("test[-100:]") == ("test", -100, None)
    for bad in ("train[::2]", "train[a:b]", "train[5]", "train]"):
        with pytest.raises(ValueError, match="not a split name or a range"):
            parse_split(bad)


def test_a_range_holds_exactly_those_rows(fm_train):
    head = data.load("fashion-mnist", "train[:100]", download_ok=False)
    tail = data.load("fashion-mnist", "train[-50:]", download_ok=False)
    assert head.split == "train[:100]" and len(head) == 100 and len(tail) == 50
    assert torch.equal(head.images, fm_train.images[:100]) and torch.equal(head.y, fm_train.y[:100])
    assert torch.equal(tail.images, fm_train.images[-50:])
    assert tail.indices.tolist() == list(range(len(fm_train) - 50, len(fm_train)))  # rows of the whole split


def test_a_limit_draws_inside_the_range(fm_train):
    ds = data.load("fashion-mnist", "train[1000:2000]", limit=100, download_ok=False)
    assert len(ds) == 100 and ds.indices.min() >= 1000 and ds.indices.max() < 2000
    assert torch.equal(ds.images, fm_train.images[ds.indices])
    assert torch.bincount(ds.y, minlength=10).min() >= 9  # still class-balanced


def test_an_empty_range_is_refused(fm_train):
    with pytest.raises(ValueError, match="keeps no rows: the split has 60000"):
        data.load("fashion-mnist", "train[70000:]", download_ok=False)


def test_train_on_a_range_and_validate_on_another(fm_train, tmp_path):
    _, card = train("linear", "fashion-mnist", recipe=Recipe(epochs=1, batch_size=128, augment=False),
                    train_split="train[:1024]", val_split="train[-512:]", out=tmp_path / "lin.safetensors")
    assert card["train_split"] == "train[:1024]" and card["train_size"] == 1024
    assert card["validation_split"] == "train[-512:]" and card["validation_size"] == 512
    assert 0.3 < card["validation_accuracy"] <= 1.0
    assert "--train-split 'train[:1024]' --val-split 'train[-512:]'" in card["command"]


def test_overlapping_validation_rows_are_refused_before_training(fm_train, tmp_path):
    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["train", "linear", "--epochs", "1", "--train-split", "train[:5000]",
                                 "--val-split", "train[4000:6000]", "--out", str(out)])
    assert r.exit_code == 2 and "overlap the training rows" in r.output
    assert not out.exists()
