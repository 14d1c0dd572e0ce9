"""`advkit models import`: outside state dicts become safetensors plus a card; nothing but tensors is ever read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from advkit.cli import app
from advkit.data.download import sha256_of
from advkit.models import get_arch
from advkit.models import load as load_model
from advkit.models.checkpoint import CheckpointError, _refuse_pickle
from advkit.models.importer import import_state_dict, read_state_dict

runner = CliRunner()


def lenet5_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return get_arch("lenet5").build(1, 10, 28).state_dict()


class Payload:
    """A pickle that runs code when unpickled: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_state_dict_is_imported_and_loads_through_the_safe_path(tmp_path: Path) -> None:
    state = lenet5_state()
    src = tmp_path / "outside.pt"
    torch.save(state, src)
    path, card = import_state_dict(src, "lenet5", tmp_path / "out", dataset="mnist", evaluate=False,
                                   description="a test checkpoint")
    assert path == tmp_path / "out" / "outside.safetensors" and path.with_suffix(".json").is_file()
    assert card["imported"]["sha256"] == sha256_of(src) and card["imported"]["reader"].startswith("torch.load")
    assert (card["input_shape"], card["num_classes"], card["mean"], card["std"]) == ([1, 28, 28], 10, [0.0], [1.0])
    model = load_model(str(path))
    net = get_arch("lenet5").build(1, 10, 28)
    net.load_state_dict(state)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))  # the same function: raw pixels in, logits out
    with pytest.raises(CheckpointError, match="already exists; pass --force"):
        import_state_dict(src, "lenet5", tmp_path / "out", dataset="mnist", evaluate=False)


def test_wrapped_and_data_parallel_state_dicts(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in lenet5_state().items()}
    torch.save({"epoch": 7, "state_dict": state, "best_acc": 0.99}, tmp_path / "ckpt.pth")
    got, how = read_state_dict(tmp_path / "ckpt.pth")
    assert how == {"key": "state_dict", "stripped_prefix": "module."}
    assert set(got) == set(lenet5_state())


def test_code_in_a_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds Python objects other than tensors .*refers to .*system"):
        import_state_dict(tmp_path / "evil.pt", "lenet5", tmp_path / "out", dataset="mnist", evaluate=False)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, match", [
    (lambda p: torch.save(get_arch("lenet5").build(1, 10, 28), p), "objects other than tensors .*LeNet5"),
    (lambda p: p.write_bytes(b"not a checkpoint at all"), "not a readable PyTorch checkpoint"),
    (lambda p: torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, p), "not a state dict of tensors .*'epoch'"),
    (lambda p: torch.save([torch.zeros(2)], p), "holds a list, not a state dict"),
])
def test_what_is_not_a_state_dict_is_refused_with_the_reason(tmp_path: Path, make, match) -> None:
    src = tmp_path / "bad.pt"
    make(src)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(src)


def test_weights_of_another_architecture_name_what_differs(tmp_path: Path) -> None:
    torch.save(lenet5_state(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="do not fit architecture 'lenet' .*missing features.0.weight.*"
                                              "not in the architecture conv1.weight.*--arch"):
        import_state_dict(tmp_path / "w.pt", "lenet", tmp_path / "out", dataset="mnist", evaluate=False)
    with pytest.raises(CheckpointError, match="shapes differ: linear2.weight \\(10, 200\\) .*\\(100, 200\\)"):
        import_state_dict(tmp_path / "w.pt", "lenet5", tmp_path / "out", dataset="cifar100", evaluate=False,
                          input_shape=(1, 28, 28), num_classes=100)
    assert not (tmp_path / "out").exists()


def test_the_cli_imports_measures_and_refuses(tmp_path: Path, fmnist_test) -> None:
    # the shipped Fashion-MNIST LeNet's weights as an outside file: imported with its normalisation, the written
    # checkpoint holds the same tensors and measures the shipped card's test accuracy, 90.73%
    from safetensors.torch import load_file

    from advkit.models import zoo_path

    shipped = zoo_path("lenet", "fashion-mnist")
    torch.save(load_file(str(shipped)), tmp_path / "w.pt")
    r = runner.invoke(app, ["models", "import", str(tmp_path / "w.pt"), "--arch", "lenet", "--dataset",
                            "fashion-mnist", "--out", str(tmp_path / "m"), "--name", "mine", "--mean", "0.286",
                            "--std", "0.353"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "m" / "mine.json").read_text())
    assert (card["test_images"], card["test_correct"], card["test_accuracy"]) == (10000, 9073, 0.9073)
    assert json.loads(shipped.with_suffix(".json").read_text())["test_accuracy"] == 0.9073
    assert (card["mean"], card["std"], card["warnings"]) == ([0.286], [0.353], [])
    written, source = load_file(str(tmp_path / "m" / "mine.safetensors")), load_file(str(shipped))
    assert written.keys() == source.keys() and all(torch.equal(written[k], source[k]) for k in source)
    assert "clean accuracy on the fashion-mnist test split: 90.73%" in r.output
    assert card["command"].startswith("advkit models import")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m" / "mine.safetensors"), "--limit", "20"])
    assert r.exit_code == 0, r.output
    marker = tmp_path / "pwned"
    torch.save({"w": Payload(marker)}, tmp_path / "evil.pt")
    r = runner.invoke(app, ["models", "import", str(tmp_path / "evil.pt"), "--arch", "lenet5", "--dataset", "mnist",
                            "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "refuses it" in r.output and not marker.exists()


def test_load_still_refuses_pickles_and_points_at_import(tmp_path: Path) -> None:
    torch.save(lenet5_state(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="advkit models import .*w.pt --arch ARCH"):
        load_model(str(tmp_path / "w.pt"))


def test_a_safetensors_header_length_starting_0x80_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes((128).to_bytes(8, "little") + b'{"__metadata__":{}}' + b" " * 109)
    _refuse_pickle(p)  # no error: an 8-byte length, then the JSON header
    p.write_bytes(b"\x80\x04\x95" + b"\x00" * 20)  # a pickle, protocol 4
    with pytest.raises(CheckpointError, match="pickle"):
        _refuse_pickle(p)
