"""Issue 24: training, the generator, the universal perturbation and the batched attack report progress through the
one callback type, ``advkit.progress.ProgressFn`` (``progress(stage, done, total, detail)``), with ``done`` reaching
``total``, and reporting changes no result."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from advkit.data import load
from advkit.train import Recipe, train


class Calls(list[tuple[str, int, int, str]]):
    """A ``ProgressFn`` that keeps its calls."""

    def __call__(self, stage: str, done: int, total: int, detail: str) -> None:
        assert isinstance(stage, str) and isinstance(detail, str)
        assert isinstance(done, int) and isinstance(total, int) and 0 <= done <= total
        self.append((stage, done, total, detail))


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_train_reports_every_step_of_every_epoch_with_its_loss():
    tr, te = load("fashion-mnist", "train", limit=256), load("fashion-mnist", "test", limit=64)
    recipe = Recipe(epochs=2, lr=0.05, batch_size=64, augment=False, schedule="constant", bf16=False)
    calls = Calls()
    model, card = train("linear", "fashion-mnist", recipe=recipe, seed=1, train_data=tr, test_data=te,
                        progress=calls)
    assert [(s, d, t) for s, d, t, _ in calls] == [(f"epoch {e}/2", d, 4) for e in (1, 2) for d in (1, 2, 3, 4)]
    assert all(re.fullmatch(r"loss \d+\.\d{4}", detail) for *_, detail in calls)
    plain, plain_card = train("linear", "fashion-mnist", recipe=recipe, seed=1, train_data=tr, test_data=te)
    for k, v in _weights(plain.net).items():  # reporting draws nothing and changes nothing
        assert torch.equal(v, _weights(model.net)[k]), k
    assert card["test_accuracy"] == plain_card["test_accuracy"]


def test_train_generator_reports_each_adam_step_with_its_loss():
    from advkit.train.generator import train_generator

    calls = Calls()
    gen, card = train_generator(["lenet"], eps=0.1, limit=128, batch_size=64, seed=3, eval_images=16, blocks=1,
                                progress=calls)
    assert [(s, d, t) for s, d, t, _ in calls] == [("generator vs lenet", 1, 2), ("generator vs lenet", 2, 2)]
    last = calls[-1][3]
    assert re.fullmatch(r"loss -?\d+\.\d{4}", last) and float(last.split()[1]) == pytest.approx(card["final_loss"])
    plain, plain_card = train_generator(["lenet"], eps=0.1, limit=128, batch_size=64, seed=3, eval_images=16,
                                        blocks=1)
    for k, v in _weights(plain).items():
        assert torch.equal(v, _weights(gen)[k]), k
    assert card["fooling_rate_test"] == plain_card["fooling_rate_test"]


def test_train_uap_reports_its_passes_and_reaches_the_total():
    from advkit.train.universal import train_uap

    calls = Calls()
    v, card = train_uap("lenet", images=16, max_passes=2, delta=0.0, eval_images=16, progress=calls)
    stage = "universal perturbation: passes"
    assert [(s, d, t) for s, d, t, _ in calls] == [(stage, 0, 2), (stage, 1, 2), (stage, 2, 2)]
    assert calls[0][3] == "over 16 images"
    rates = card["fooling_rate_train_per_pass"]
    assert [c[3] for c in calls[1:]] == [f"fools {100 * r:.1f}% of the images" for r in rates]
    plain, _ = train_uap("lenet", images=16, max_passes=2, delta=0.0, eval_images=16)
    assert torch.equal(plain, v)


def test_an_early_stop_ends_the_passes_with_done_equal_to_total(lenet):
    from advkit.train.deepfool import universal_perturbation

    x = load("fashion-mnist", "train", limit=16).x
    calls = Calls()
    _, fooling = universal_perturbation(lenet, x, xi=0.3, delta=0.99, max_passes=5, progress=calls)
    assert len(fooling) == 1  # one pass fools more than 1% of the images: the target rate is reached
    assert [(d, t) for _, d, t, _ in calls] == [(0, 5), (1, 1)]


def test_attack_batched_reports_images_done_and_the_running_success(lenet, lenet_batch):
    from advkit.attacks import attack_batched, create

    x, y = lenet_batch
    atk = create("fgsm", eps=0.1)
    calls = Calls()
    r = attack_batched(atk, lenet, x, y, batch_size=24, seed=2, progress=calls)
    assert [(s, d, t) for s, d, t, _ in calls] == [("attack", 24, 64), ("attack", 48, 64), ("attack", 64, 64)]
    for (_, done, _, detail) in calls:
        assert detail == f"success {int(r.success[:done].sum())}/{done}"
    named = Calls()
    again = attack_batched(atk, lenet, x, y, batch_size=24, seed=2, progress=named, stage="fgsm on lenet")
    assert {s for s, *_ in named} == {"fgsm on lenet"}
    plain = attack_batched(atk, lenet, x, y, batch_size=24, seed=2)
    assert torch.equal(plain.x_adv, r.x_adv) and torch.equal(again.x_adv, r.x_adv)


def test_train_command_logs_its_steps_and_a_line_per_epoch(tmp_path):
    """Not on a terminal (a log): the steps of each epoch show as lines, with the loss, and each epoch ends with the
    line the log has always had."""
    from advkit.cli import app

    out = tmp_path / "linear.safetensors"
    r = CliRunner().invoke(app, ["train", "linear", "--epochs", "2", "--batch-size", "64", "--schedule", "constant",
                                 "--no-augment", "--train-split", "train[:256]", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for e in (1, 2):
        assert re.search(rf"linear epoch {e}/2 loss \d+\.\d{{4}}: 4/4 \(\d+ s\)", r.output), r.output
        assert re.search(rf"linear epoch {e}/2 done: last batch loss \d+\.\d{{4}}, \d+ s elapsed", r.output)
    assert "test accuracy" in r.output and out.exists()
