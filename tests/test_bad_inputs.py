"""Bad input through the CLI, as a hostile but realistic user gives it.

Every case must exit with code 2 (a usage error, never a traceback: the runner's exception is the ``SystemExit``),
print a message that names the field or file and the fix (the case's pattern, matched on the output with rich's
box drawing and line breaks taken out), and leave nothing half-written where it was asked to write: the case's
``--out`` is either never created or holds what it held before.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from advkit.cli import app
from tests.test_data import TEST_FILES, TRAIN_FILES, write_idx
from tests.test_transfer import make_tiny_zoo, tiny_config

runner = CliRunner()


def flat(text: str) -> str:
    """The output on one line: rich's panel borders and the terminal's wrapping removed."""
    return " ".join(re.sub("[│╭╮╰╯─┃━]", " ", text).split())


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """The files the cases point at, made once."""
    from PIL import Image

    from advkit.models import Classifier, get_arch, save_checkpoint

    root = tmp_path_factory.mktemp("bad")
    p: dict[str, Path] = {"root": root}
    p["file"] = root / "a-file.txt"
    p["file"].write_text("not a folder\n")
    p["empty"] = root / "empty"
    p["empty"].mkdir()
    p["latin1"] = root / "latin1.yaml"
    p["latin1"].write_bytes("title: \"caf\xe9\"\n".encode("latin-1"))
    p["folder_yaml"] = root / "experiment.yaml"
    p["folder_yaml"].mkdir()
    zoo = make_tiny_zoo(root)
    p.update({k: Path(v) for k, v in zoo.items()})
    good = tiny_config(zoo, attacks=["ifgsm"], steps=1, seeds=[0], sample={"n": 4, "only_correct": False},
                       save_png=0)
    p["good"] = root / "good.yaml"
    p["good"].write_text(yaml.safe_dump(good))
    for name, over in {"unknown_source": {"sources": ["no_such_model"]},
                       "sgm_no_skip": {"sources": [zoo["tlin"]], "attacks": ["sgm"]},
                       "unknown_key": {"colour": "red"},
                       "zero_n": {"sample": {"n": 0}},
                       "rgb_folder": {"dataset": "imagefolder", "data_dir": str(root / "rgb")},
                       "bad_eps": {"eps": ["8"]}}.items():
        p[name] = root / f"{name}.yaml"
        p[name].write_text(yaml.safe_dump({**good, **over}))
    # an RGB image folder (two classes) for grey 28x28 models
    for cls in ("cat", "dog"):
        (root / "rgb" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28, 3), 40 * i, np.uint8), "RGB").save(root / "rgb" / cls / f"{i}.png")
    # a checkpoint whose card was hand-edited: input_shape lost its channel count
    torch.manual_seed(0)
    spec = get_arch("linear")
    model = Classifier(spec.build(1, 10, 28), (0.286,), (0.353,), (1, 28, 28), 10, name="edited")
    save_checkpoint(model, root / "edited.safetensors", {"arch": "linear", "name": "edited", "input_shape": [1, 28, 28],
                                                          "num_classes": 10, "mean": [0.286], "std": [0.353],
                                                          "dataset": "fashion-mnist"})
    card = json.loads((root / "edited.json").read_text())
    (root / "edited.json").write_text(json.dumps({**card, "input_shape": [28, 28]}))
    p["edited"] = root / "edited.safetensors"
    p["pickle"] = root / "weights.pt"
    torch.save({"w": torch.zeros(2)}, p["pickle"])
    # a finished transfer run, one whose report was never written, and one whose results.json is not a mapping
    r = runner.invoke(app, ["transfer", str(p["good"]), "--out", str(root / "finished")])
    assert r.exit_code == 0, r.output
    p["finished"] = root / "finished"
    shutil.copytree(p["finished"], root / "no_report")
    (root / "no_report" / "report.md").unlink()
    p["no_report"] = root / "no_report"
    shutil.copytree(p["finished"], root / "int_results")
    (root / "int_results" / "results.json").write_text("5\n")
    p["int_results"] = root / "int_results"
    # a tiny Fashion-MNIST copy in the IDX format, for training runs that must fail fast
    rng = np.random.default_rng(0)
    for files, n in ((TEST_FILES, 32), (TRAIN_FILES, 64)):
        write_idx(root / "tiny-fmnist" / files[0], rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / "tiny-fmnist" / files[1], (np.arange(n) % 10).astype(np.uint8))
    p["tiny_data"] = root / "tiny-fmnist"
    return p


@dataclass
class Case:
    """``args`` with ``{name}`` placeholders for the fixture's paths (``{out}``: a fresh path in tmp_path);
    ``match``: a regex the flattened output must contain."""

    id: str
    args: list[str]
    match: str
    out_exists: bool = False  # --out is one of the fixture's paths (checked unchanged) rather than a fresh one
    extra: Callable[[Path], None] | None = field(default=None, repr=False)


LENET = ["--model", "lenet"]
CASES = [
    # ---- evaluate
    Case("evaluate batch-size 0", ["evaluate", "lenet", "--batch-size", "0"], "batch-size.*greater than or equal to 1"),
    Case("evaluate limit 0", ["evaluate", "lenet", "--limit", "0"], "limit.*greater than or equal to 1"),
    Case("evaluate unknown model", ["evaluate", "lenet5000"],
         "unknown model 'lenet5000'.*also accepted: a .safetensors path"),
    Case("evaluate unknown dataset", ["evaluate", "lenet", "--dataset", "fashion"], "fashion.*(known|registered)"),
    Case("evaluate data-dir missing", ["evaluate", "lenet", "--data-dir", "{root}/nowhere"],
         "nowhere: no such folder.*leave --data-dir out"),
    Case("evaluate data-dir empty", ["evaluate", "lenet", "--data-dir", "{empty}"],
         "holds no copy of fashion-mnist: expected t10k-images-idx3-ubyte"),
    Case("evaluate data-dir is a file", ["evaluate", "lenet", "--data-dir", "{file}"], "a file, not a folder"),
    Case("evaluate split val", ["evaluate", "lenet", "--split", "val"],
         "split must be one of \\('train', 'test'\\), got 'val'"),
    Case("evaluate RGB folder on a grey model",
         ["evaluate", "{tlin}", "--dataset", "imagefolder", "--data-dir", "{root}/rgb"],
         "expects 1x28x28 images.*is 3x28x28.*grey images"),
    Case("evaluate card with a bad input_shape", ["evaluate", "{edited}"],
         "edited.json: model card field 'input_shape' must be \\[channels, height, width\\]"),
    Case("evaluate a pickle", ["evaluate", "{pickle}"], "weights.pt.*(pickle|safetensors)"),
    Case("evaluate out is a file", ["evaluate", "lenet", "--limit", "8", "--out", "{file}"],
         "a-file.txt.*(not a folder|is a file|exists)", out_exists=True),
    # ---- attack
    Case("jsma steps", ["attack", "jsma", *LENET, "--steps", "5", "--out", "{out}"],
         "'steps' does not apply to 'jsma' \\(its settings: batch_size"),
    Case("jsma eps", ["attack", "jsma", *LENET, "--eps", "0.1", "--out", "{out}"],
         "'jsma' does not use 'eps'.*drop it"),
    Case("eps 2", ["attack", "pgd", *LENET, "--eps", "2", "--out", "{out}"],
         "eps 2 is larger than the whole pixel range.*8/255.*--allow-large-eps"),
    Case("eps 8 (meant as 8/255)", ["attack", "ifgsm", *LENET, "--eps", "8", "--out", "{out}"], "8/255"),
    Case("eps not a number", ["attack", "pgd", *LENET, "--eps", "big", "--out", "{out}"], "eps.*big"),
    Case("eps negative", ["attack", "pgd", *LENET, "--eps", "-0.1", "--out", "{out}"],
         "eps must be a finite number >= 0.*got -0.1"),
    Case("mi decay inf", ["attack", "mi", *LENET, "--decay", "inf", "--out", "{out}"], "decay.*(finite|inf)"),
    Case("ti nsig nan", ["attack", "ti", *LENET, "--set", "ti_nsig=nan", "--out", "{out}"], "ti_nsig.*(finite|nan)"),
    Case("limit 0", ["attack", "pgd", *LENET, "--limit", "0", "--out", "{out}"], "limit.*greater than or equal to 1"),
    Case("steps 0", ["attack", "pgd", *LENET, "--steps", "0", "--out", "{out}"], "steps.*greater than or equal to 1"),
    Case("unknown attack", ["attack", "pgdd", *LENET, "--out", "{out}"], "unknown attack part.*pgdd.*known: admix"),
    Case("unknown norm", ["attack", "pgd", *LENET, "--norm", "l3", "--out", "{out}"], "norm.*linf.*l2"),
    Case("sgm on a model without skips", ["attack", "sgm", *LENET, "--out", "{out}"], "no skip connections"),
    Case("sgm gamma 1.5", ["attack", "sgm", "--model", "resnet20", "--gamma", "1.5", "--out", "{out}"],
         "gamma.*\\(0, 1\\]"),
    Case("--set without =", ["attack", "pgd", *LENET, "--set", "steps", "--out", "{out}"], "KEY=VALUE"),
    Case("--set unknown key with brackets", ["attack", "pgd", *LENET, "--set", "foo[bar]=1", "--out", "{out}"],
         "foo\\[bar\\]"),
    Case("out is a file", ["attack", "pgd", *LENET, "--limit", "8", "--out", "{file}"],
         "a-file.txt.*(not a folder|is a file|exists)", out_exists=True),
    Case("out under a file", ["attack", "pgd", *LENET, "--limit", "8", "--out", "{file}/run"],
         "a-file.txt.*(not a folder|is a file)", out_exists=True),
    Case("square max-queries 0", ["attack", "square", *LENET, "--max-queries", "0", "--out", "{out}"],
         "max-queries.*greater than or equal to 1"),
    Case("seed negative", ["attack", "pgd", *LENET, "--seed", "-1", "--out", "{out}"],
         "seed.*greater than or equal to 0"),
    # ---- transfer
    Case("experiment not UTF-8", ["transfer", "{latin1}", "--out", "{out}"], "latin1.yaml.*UTF-8"),
    Case("experiment is a folder", ["transfer", "{folder_yaml}", "--out", "{out}"], "experiment.yaml.*folder"),
    Case("experiment missing", ["transfer", "{root}/nothing.yaml", "--out", "{out}"],
         "nothing.yaml.*no such experiment file; check the path"),
    Case("transfer out is a file", ["transfer", "{good}", "--out", "{file}"],
         "a-file.txt.*(not a folder|is a file|exists)",
         out_exists=True),
    Case("--set malformed YAML", ["transfer", "{good}", "--out", "{out}", "--set", "eps=[16/255"],
         "--set 'eps=\\[16/255'.*not valid YAML.*quote text with brackets"),
    Case("--set without =", ["transfer", "{good}", "--out", "{out}", "--set", "eps"], "KEY=VALUE"),
    Case("sample.n 0", ["transfer", "{zero_n}", "--out", "{out}"], "sample.n"),
    Case("unknown top-level key", ["transfer", "{unknown_key}", "--out", "{out}"], "colour"),
    Case("eps 8 in an experiment", ["transfer", "{bad_eps}", "--out", "{out}"], "eps.*8/255.*allow_large_eps"),
    Case("unknown source", ["transfer", "{unknown_source}", "--out", "{out}"], "no_such_model"),
    Case("SGM on a source without skips", ["transfer", "{sgm_no_skip}", "--out", "{out}"], "no skip connections"),
    Case("RGB folder on grey models", ["transfer", "{rgb_folder}", "--out", "{out}"],
         "expects 1x28x28 images.*3x28x28"),
    Case("unknown backend", ["transfer", "{good}", "--out", "{out}", "--backend", "spark"], "backend.*local.*ray"),
    Case("finished run without --force", ["transfer", "{good}", "--out", "{finished}"], "--force", out_exists=True),
    Case("finished run without its report", ["transfer", "{good}", "--out", "{no_report}"],
         "advkit report .*no_report", out_exists=True),
    # ---- report
    Case("report on results.json holding an int", ["report", "{int_results}"], "results.json.*(mapping|object)",
         out_exists=True),
    Case("report on a missing folder", ["report", "{root}/no-run"], "no-run"),
    Case("report on a folder that is not a run", ["report", "{empty}"], "empty.*results.json"),
    # ---- train
    Case("train diverges", ["train", "lenet", "--data-dir", "{tiny_data}", "--epochs", "1", "--batch-size", "16",
                            "--schedule", "constant", "--lr", "1e30", "--no-bf16", "--no-augment",
                            "--out", "{out}/lenet.safetensors"],
         "loss became nan at epoch 1, step .*no checkpoint was written.*--lr"),
    Case("train unknown architecture", ["train", "lenett", "--out", "{out}/x.safetensors"],
         "unknown architecture 'lenett'; known: densenet_bc40"),
    Case("train unknown schedule", ["train", "lenet", "--schedule", "cosine", "--out", "{out}/x.safetensors"],
         "schedule.*one-cycle.*constant"),
    Case("train epochs 0", ["train", "lenet", "--epochs", "0", "--out", "{out}/x.safetensors"],
         "epochs.*greater than or equal to 1"),
    # ---- reproduce
    Case("jsma samples 0", ["reproduce", "jsma", "--samples", "0", "--out", "{out}"],
         "samples.*greater than or equal to 1"),
    Case("jsma samples negative", ["reproduce", "jsma", "--samples", "-3", "--out", "{out}"],
         "samples.*greater than or equal to 1"),
    Case("jsma upsilon 2", ["reproduce", "jsma", "--upsilon", "2", "--samples", "2", "--out", "{out}"],
         "upsilon.*\\(0, 1\\]"),
    Case("jsma output probs", ["reproduce", "jsma", "--output", "probs", "--samples", "2", "--out", "{out}"],
         "output.*softmax.*logits"),
    Case("jsma unknown protocol", ["reproduce", "jsma", "--protocol", "full", "--out", "{out}"],
         "--protocol must be 'paper'"),
    Case("jsma protocol and split", ["reproduce", "jsma", "--protocol", "paper", "--split", "test", "--out", "{out}"],
         "--protocol paper fixes the sets"),
    Case("jsma split with a step", ["reproduce", "jsma", "--split", "test[::2]", "--samples", "1", "--out", "{out}"],
         "not a split name or a range"),
    Case("jsma empty split range", ["reproduce", "jsma", "--split", "test[20000:]", "--samples", "1",
                                    "--out", "{out}"], "keeps no rows"),
    Case("train overlapping validation", ["train", "linear", "--epochs", "1", "--train-split", "train[:5000]",
                                          "--val-split", "train[:100]", "--out", "{out}/x.safetensors"],
         "overlap the training rows"),
    Case("train unknown device", ["train", "linear", "--epochs", "1", "--device", "tpu", "--out",
                                  "{out}/x.safetensors"], "device must be cpu, cuda, cuda:N or auto"),
    # ---- analyze
    Case("surrogates not a run", ["analyze", "surrogates", "{out}", "--out", "{out}/a"],
         "not a finished transfer run"),
    Case("perception not a jsma run", ["analyze", "perception", "{out}", "--out", "{out}/a"],
         "not a finished `advkit reproduce jsma` run"),
]


def _snapshot(path: Path) -> dict[str, bytes] | bytes | None:
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error(case: Case, bad: dict[str, Path], tmp_path: Path) -> None:
    paths = {k: str(v) for k, v in bad.items()} | {"out": str(tmp_path / "out")}
    args = [a.format(**paths) for a in case.args]
    outs = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--out"]
    outs += [Path(args[1])] if args[0] == "report" else []
    before = {o: _snapshot(o) for o in outs}
    r = runner.invoke(app, args)
    text = flat(r.output)
    assert r.exit_code == 2, f"exit {r.exit_code}: {r.output}\n{r.exception!r}"
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # no traceback reached the user
    assert "Traceback" not in r.output
    assert re.search(case.match, text), text
    for o in outs:  # nothing half-written where it was asked to write
        assert _snapshot(o) == before[o], f"{o} changed"
        if not case.out_exists:
            assert not o.exists() or (o.is_dir() and not any(o.iterdir())), f"{o} holds {list(o.rglob('*'))}"


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_large_eps_runs_when_asked_for(bad: dict[str, Path], tmp_path: Path) -> None:
    """eps > 1 is refused with the hint, and accepted when the user says so explicitly."""
    args = ["attack", "fgsm", "--model", "lenet", "--limit", "8", "--eps", "1.5"]
    assert runner.invoke(app, args).exit_code == 2
    r = runner.invoke(app, [*args, "--allow-large-eps", "--out", str(tmp_path / "big")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "big" / "results.json").read_text())["attack_config"]["eps"] == 1.5


def test_ctrl_c_says_how_to_resume(monkeypatch: pytest.MonkeyPatch, bad: dict[str, Path], tmp_path: Path) -> None:
    import advkit.study.runner as runner_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "aggregate", interrupted)
    r = runner.invoke(app, ["transfer", str(bad["good"]), "--out", str(tmp_path / "r")])
    assert r.exit_code == 130
    assert "rerun the same command to resume" in flat(r.output)


def test_permission_error_names_the_folder(monkeypatch: pytest.MonkeyPatch, bad: dict[str, Path],
                                           tmp_path: Path) -> None:
    """A read-only --out (simulated: the tests run as root, who may write anywhere) fails before any work."""
    import advkit._files as files

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "TemporaryFile", refuse)
    out = tmp_path / "ro"
    r = runner.invoke(app, ["attack", "pgd", "--model", "lenet", "--limit", "8", "--out", str(out)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert re.search("--out .*ro: cannot write in .*Permission denied.*choose a folder you can write to",
                     flat(r.output))
    assert not out.exists()


def test_a_huge_step_count_is_announced_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import advkit.study.attack_run as attack_run

    def stop(*a, **k):
        raise KeyboardInterrupt  # the user reads the warning and presses Ctrl-C

    monkeypatch.setattr(attack_run, "run_attack", stop)
    r = runner.invoke(app, ["attack", "pgd", "--model", "lenet", "--steps", "1000000000", "--limit", "100"])
    assert r.exit_code == 130
    assert re.search("warning: --steps 1000000000 on up to 100 images is up to 100,000,000,000 forward and "
                     "backward passes.*Ctrl-C stops it", flat(r.output)), r.output
