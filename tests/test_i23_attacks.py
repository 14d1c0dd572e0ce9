"""Issue 23, attacks: a query target's bad answers, vague Python API inputs, eps in the attack's own norm, and
settings given twice are clear errors (exit 2 with ``error: ...`` on the command line), never a silent answer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import advkit.attacks as A
import advkit.models
from advkit.attacks.query.oracle import Oracle
from advkit.cli import app
from advkit.models import Classifier

runner = CliRunner()

N = 8
# (attack, settings, what the oracle answers): every query attack, each with the oracle it needs
QUERY = [("square", {"eps": 0.1, "max_queries": 50}, "scores"),
         ("nes", {"eps": 0.1, "max_queries": 50, "samples": 4}, "scores"),
         ("simba", {"eps": 1.0, "max_queries": 50}, "scores"),
         ("hsj", {"eps": 1.0, "max_queries": 50}, "label")]
QUERY_IDS = [q[0] for q in QUERY]


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 random 1x8x8 images whose labels cover classes 0 to 9 (so "class 0" is a wrong answer for most)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 8, 8, generator=g), torch.tensor([0, 9, 3, 5, 7, 1, 2, 8])


def small_model(dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return Classifier(net, (0.5,), (0.25,), (1, 8, 8), 10, name="small").to(dtype).freeze()


class Target:
    """A query target answering ``answer(rows)`` and counting its calls."""

    def __init__(self, answer: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.answer(x)


def flat(text: str) -> str:
    """Output with rich's line breaks and box drawing removed, for matching."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


# ---- 1. the query oracle checks what the target answers


@pytest.mark.parametrize("name, kw, output", QUERY, ids=QUERY_IDS)
def test_nan_scores_are_an_error_not_a_fooled_image(batch, name, kw, output):
    """Before: square reported 8 of 8 images fooled after one query, hsj (label oracle: argmax of a NaN row is 0)
    likewise. Now the first answer is refused, naming it."""
    x, y = batch
    target = Target(lambda v: torch.full((v.shape[0], 10), float("nan")))
    with pytest.raises(ValueError, match=rf"query target \(Target\) answered non-finite scores .*on {N} of {N} row"):
        A.create(name, **kw)(Oracle(target, output), x, y)
    assert target.calls == 1  # refused at the first answer, no budget spent on nonsense


def test_one_inf_row_is_named(batch):
    x, y = batch

    def answer(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(v.shape[0], 10)
        out[v.shape[0] - 1, 3] = float("inf")
        return out

    with pytest.raises(ValueError, match=rf"non-finite scores \(NaN or inf\) on 1 of {N} row\(s\) \(first: row 7\)"):
        A.create("square", eps=0.1, max_queries=20)(Oracle(Target(answer)), x, y)


@pytest.mark.parametrize("name, kw, output", QUERY, ids=QUERY_IDS)
@pytest.mark.parametrize("answer, match", [
    (lambda v: torch.zeros(v.shape[0]), rf"answered scores of shape \({N},\) for {N} image row\(s\); it must return "
                                        rf"\({N}, classes\)"),
    (lambda v: torch.randn(2 * v.shape[0], 10), rf"answered scores of shape \({2 * N}, 10\) for {N} image row\(s\)"),
    (lambda v: torch.randn(v.shape[0], 3), r"answered 3 scores per row \(shape \(8, 3\)\), but the batch has label or "
                                           r"target class 9; it must score every class \(at least 10\)"),
    (lambda v: torch.randn(v.shape[0], 10).numpy(), r"answered a ndarray; it must return a torch tensor"),
], ids=["(N,)", "(2N,K)", "(N,3)", "numpy"])
def test_a_wrong_output_shape_is_an_error_naming_it(batch, name, kw, output, answer, match):
    """Before: IndexError / RuntimeError from inside the attack, or (hsj, (N, 3)) the whole budget spent first."""
    x, y = batch
    target = Target(answer)
    with pytest.raises(ValueError, match=match):
        A.create(name, **kw)(Oracle(target, output), x, y)
    assert target.calls == 1


def test_scores_must_match_the_declared_classes_and_stay_the_same(batch):
    x, y = batch
    declared = Target(lambda v: torch.randn(v.shape[0], 12))
    declared.num_classes = 10  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"answered 12 score\(s\) per row .* its num_classes=10"):
        A.create("square", eps=0.1, max_queries=20)(Oracle(declared), x, y)
    widths = iter([10] + [11] * 100)
    changing = Target(lambda v: torch.randn(v.shape[0], next(widths)))
    with pytest.raises(ValueError, match=r"answered 11 scores per row .* after answering 10 before"):
        A.create("square", eps=0.1, max_queries=20)(Oracle(changing), x, y)


def test_a_good_target_still_works(batch):
    x, y = batch
    r = A.create("square", eps=0.1, max_queries=20)(Oracle(small_model()), x, y)
    assert r.queries is not None and int(r.queries.max()) <= 20 and r.success.shape == (N,)


# ---- 2. the Python API names the input that is wrong and the fix


def test_uint8_images_say_divide_by_255(batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"x is a torch.uint8 tensor; .*pixels 0-255.*pass x.float\(\) / 255"):
        A.create("pgd", eps=0.1, steps=2)(small_model(), (x * 255).to(torch.uint8), y)


@pytest.mark.parametrize("name", ["pgd", "square"])
def test_float64_images_on_a_float32_model_say_float(batch, name):
    """Before: torch's "mat1 and mat2 must have the same dtype" from inside the model."""
    x, y = batch
    kw = {"steps": 2} if name == "pgd" else {"max_queries": 5}
    with pytest.raises(ValueError, match=r"x is torch.float64 but the model computes in torch.float32: pass "
                                         r"x.float\(\)"):
        A.create(name, eps=0.1, **kw)(small_model(), x.double(), y)


def test_float64_images_on_a_float64_model_are_attacked_in_float64(batch):
    """The dtype is never converted silently: a float64 model takes float64 images and returns float64 ones."""
    x, y = batch
    r = A.create("pgd", eps=0.1, steps=2)(small_model(torch.float64), x.double(), y)
    assert r.x_adv.dtype == torch.float64 and float((r.x_adv - x.double()).abs().max()) <= 0.1 + 1e-12


@pytest.mark.parametrize("name", ["pgd", "square"])
def test_an_empty_batch_says_so(batch, name):
    """Before: ``min(): Expected reduction dim to be specified`` from advkit's own pixel-range check."""
    x, y = batch
    kw = {"steps": 2} if name == "pgd" else {"max_queries": 5}
    with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 1, 8, 8\)\).*pass at least one image"):
        A.create(name, eps=0.1, **kw)(small_model(), x[:0], y[:0])


def test_meta_tensors_are_named(batch):
    x, y = batch
    atk = A.create("pgd", eps=0.1, steps=2)
    for what, args in (("x", (x.to("meta"), y)), ("y", (x, y.to("meta")))):
        with pytest.raises(ValueError, match=rf"^{what} is a meta tensor \(a shape without data"):
            atk(small_model(), *args)
    with torch.device("meta"):
        ghost = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (0.5,), (0.25,), (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"the model \(Classifier\) has meta tensors for weights.*to_empty"):
        atk(ghost.freeze(), x, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, match", [
    ("cuda", r"device='cuda': this torch .* without CUDA; use device='cpu'"),
    ("cuda:1", r"device='cuda:1': .*use device='cpu'"),
    ("gpu", r"device='gpu' is not a device name; use 'cpu', 'cuda' or 'cuda:N'"),
    ("meta", r"device='meta' keeps shapes without weights"),
])
def test_load_on_a_missing_device_is_a_value_error(device, match):
    """Before: torch's ``AssertionError: Torch not compiled with CUDA enabled`` (and a RuntimeError for 'gpu')."""
    with pytest.raises(ValueError, match=match):
        advkit.models.load("lenet", device=device)


# ---- 3. eps is checked in the attack's own norm (CLI)


def cli(*args: str):
    return runner.invoke(app, list(args))


def refused(r, *parts: str) -> str:
    """Assert the command ended as ``error: ...`` with status 2 and no traceback; return the flattened output."""
    out = flat(r.output)
    assert r.exit_code == 2, r.output
    assert out.startswith("error: ") and "Traceback" not in out, r.output
    for p in parts:
        assert p in out, r.output
    return out


@pytest.mark.parametrize("name", ["hsj", "simba"])
def test_l2_attacks_take_an_l2_radius_above_1(tmp_path: Path, name: str):
    """Before: ``--eps 1.5`` was refused as an L-inf radius, pointing at --allow-large-eps."""
    out = tmp_path / name
    r = cli("attack", name, "--model", "lenet", "--eps", "1.5", "--max-queries", "20", "--limit", "8",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    config = json.loads((out / "results.json").read_text())["attack_config"]
    assert config["eps"] == 1.5 and config["norm"] == "l2"


@pytest.mark.parametrize("args", [["hsj", "--max-queries", "20"], ["pgd", "--norm", "l2", "--steps", "1"],
                                  ["pgd", "--set", "norm=l2", "--steps", "1"]])
def test_an_l2_radius_beyond_the_image_box_is_refused_naming_the_norm(tmp_path: Path, args: list[str]):
    r = cli("attack", *args, "--eps", "100", "--model", "lenet", "--limit", "8", "--out", str(tmp_path / "o"))
    refused(r, "eps 100 is an L2 radius larger than the whole image box of 1x28x28 images (sqrt(784) = 28.00",
            "use at most 28.00")
    assert not (tmp_path / "o").exists()


def test_a_query_attack_linf_eps_above_1_does_not_point_at_a_flag_that_cannot_help():
    out = refused(cli("attack", "square", "--eps", "1.5", "--allow-large-eps", "--model", "lenet", "--limit", "8"),
                  "eps 1.5 is larger than the whole pixel range for an L-inf radius", "Use at most 1")
    assert "--allow-large-eps" not in out


# ---- 4. a setting given twice is an error naming both


@pytest.mark.parametrize("args, both", [
    (["square", "--max-queries", "30", "--set", "max_queries=99"],
     "--max-queries 30 and --set max_queries=99 both set max_queries"),
    (["square", "--set", "max_queries=30", "--set", "max_queries=99"],
     "--set max_queries=30 and --set max_queries=99 both set max_queries"),
    (["ifgsm", "--eps", "8/255", "--set", "eps=0.1"], "--eps 8/255 and --set eps=0.1 both set eps"),
    (["mi", "--decay", "0.5", "--set", "mu=1.0"], "--decay 0.5 and --set mu=1.0 both set decay"),
])
def test_attack_refuses_a_setting_given_twice(tmp_path: Path, args: list[str], both: str):
    """Before: ``--max-queries 30 --set max_queries=99`` ran with 99 (the last one won)."""
    r = cli("attack", *args, "--model", "lenet", "--limit", "8", "--out", str(tmp_path / "o"))
    refused(r, both, "give each setting once")
    assert not (tmp_path / "o").exists()


def test_transfer_refuses_a_set_key_given_twice(tmp_path: Path):
    config = Path(__file__).resolve().parents[1] / "examples" / "transfer_small.yaml"
    r = cli("transfer", str(config), "--out", str(tmp_path / "run"), "--set", "eps=0.1", "--set", "eps=0.2")
    refused(r, "--set eps=0.1 and --set eps=0.2 both set eps; give each setting once")
    assert not (tmp_path / "run").exists()


def test_create_refuses_a_setting_and_its_alias_together():
    # before: create("mi", decay=0.5, mu=1.0) ran with mu=1.0 (the last one won)
    from advkit.attacks import create

    with pytest.raises(ValueError, match=r"decay= and mu= both set decay"):
        create("mi", decay=0.5, mu=1.0)
    assert create("mi", mu=0.5).parts[-1].decay == 0.5
