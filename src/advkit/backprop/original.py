"""``variant="original"``: the Skip Gradient Method as the authors' released code applies it.

Wu et al., ICLR 2020; code: csdongxian/skip-connections-matter (``utils_sgm.py``, ``attack_sgm.py``). Their code
wraps the network as ``nn.Sequential(Normalize(mean, std), net)`` and registers (old-style, non-full) module
backward hooks by *name*:

* ResNets: on every module whose name contains ``relu`` and not ``0.relu``, ``grad_in * gamma`` if the module
  is an ``nn.ReLU`` (``gamma ** 0.5`` for the bottleneck ResNet-50/101/152, ``gamma`` for ResNet-18/34);
  torchvision blocks reuse one ``self.relu`` two or three times (the last call after the addition), so it acts
  on every call. ``'0.relu'`` is meant to skip the first block of each stage, and also skips ``layer3.10``,
  ``.20`` and ``.30`` of ResNet-101/152. On every block (a name whose second-to-last part contains ``layer``):
  the gradient divided by its standard deviation over the whole batch.
* DenseNets: on every ``nn.ReLU`` whose name contains ``relu`` and not ``transition`` (two per dense layer),
  ``grad_in * gamma ** 0.5``; no normalisation.
* Nothing at all when ``gamma == 1`` (``if args.gamma < 1.0``).

How advkit reproduces it:

* **Names.** Each module gets the name the authors' code would see: for an advkit ``Classifier``
  (``preprocess``, ``net``) ``preprocess.X`` -> ``0.X`` and ``net.X`` -> ``1.X``; for a model that already is
  ``nn.Sequential(Normalize, net)`` the names as they are; for a bare network ``X`` -> ``1.X``. The rules above
  are applied to those strings, so ``1.layer3.10.relu`` is skipped exactly as in their runs.
* **Family.** DenseNet rules when a module's class name contains ``DenseLayer``/``DenseBlock`` or a name
  contains ``denseblock``; otherwise ResNet rules, with ``gamma ** 0.5`` when a block has a ``conv3``
  (bottleneck) and ``gamma`` otherwise (their code decides by the ``--arch`` string).
* **ReLU decay.** A forward hook wraps each matched ReLU's output in a gradient-scaling function. The authors
  scale the gradient w.r.t. the ReLU's *input*; ReLU's backward is linear in the output gradient, so scaling the
  output gradient is identical and avoids module backward hooks (which break on in-place ReLU).
* **Normalisation.** An old-style module backward hook acts on the autograd node of the module's last operation:
  for a torchvision block, the ReLU after the addition. advkit registers the same division by ``torch.std`` as a
  hook on that node (found from the block's output, past advkit's own scaling node), after the ReLU's decay,
  as in the authors' hook order. It only rescales the whole gradient (sign steps and L1-normalised momentum do
  not change); where a node has several inputs every one is divided by the first one's std (the authors' hook
  would fail there).
* **Differences, by design.** A model where no ``nn.ReLU`` matches (timm names activations ``act1``/``act2``;
  advkit's zoo uses functional ReLUs) raises ``ValueError`` instead of silently running the base attack, and so
  does a match that holds no block or dense layer. Matched ReLUs outside any block (the stem ReLU) are hooked as
  in the original and reported as ``kind="other"``: a uniform rescale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from advkit.backprop.connection import Connection
from advkit.backprop.scale import is_scale_node, scaling_hook

ORIGINAL_CODE = "csdongxian/skip-connections-matter utils_sgm.py"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def authors_names(model: nn.Module) -> dict[str, str]:
    """Qualified name in ``model`` -> the name the authors' ``nn.Sequential(Normalize, net)`` would give it."""
    if isinstance(model, nn.Sequential) and len(model) == 2 and "normal" in type(model[0]).__name__.lower():
        return {n: n for n, _ in model.named_modules()}
    net, pre = getattr(model, "net", None), getattr(model, "preprocess", None)
    if isinstance(net, nn.Module) and isinstance(pre, nn.Module):
        names = {"": ""}
        names.update({_join("preprocess", n): _join("0", n) for n, _ in pre.named_modules()})
        names.update({_join("net", n): _join("1", n) for n, _ in net.named_modules()})
        return names
    return {n: _join("1", n) for n, _ in model.named_modules()}


def is_block_name(name: str) -> bool:
    """The authors' block rule: the second-to-last part of the name contains ``layer`` (``1.layer2.3``)."""
    parts = name.split(".")
    return len(parts) >= 2 and "layer" in parts[-2]


def resnet_relu_rule(name: str) -> bool:
    """The authors' ResNet ReLU rule (``'relu' in name and not '0.relu' in name``)."""
    return "relu" in name and "0.relu" not in name


def densenet_relu_rule(name: str) -> bool:
    """The authors' DenseNet ReLU rule (``'relu' in name and not 'transition' in name``)."""
    return "relu" in name and "transition" not in name


def _normalise(grad_inputs: tuple[torch.Tensor | None, ...], grad_outputs: Any) -> tuple[torch.Tensor | None, ...]:
    first = next((g for g in grad_inputs if g is not None), None)
    if first is None:
        return grad_inputs
    std = torch.std(first)
    return tuple(None if g is None else g / std for g in grad_inputs)


def _norm_hook(module: nn.Module, args: Any, output: Any) -> None:
    if not (isinstance(output, torch.Tensor) and output.requires_grad and torch.is_grad_enabled()):
        return
    fn = output.grad_fn
    if is_scale_node(fn):
        fn = fn.next_functions[0][0]
    if fn is not None:
        fn.register_hook(_normalise)


def _is_dense(model: nn.Module, names: dict[str, str]) -> bool:
    classes = {type(m).__name__ for m in model.modules()}
    return any("DenseLayer" in c or "DenseBlock" in c for c in classes) or \
        any("denseblock" in a for a in names.values())


def plan_original(model: nn.Module, gamma: float) -> tuple[list[Connection], dict[str, Connection], list[str]]:
    """The connections the authors' rules produce, the ReLUs to decay and the blocks to normalise.

    Returns:
        ``(connections, relus, blocks)``: ``relus`` maps a ReLU's qualified name to its connection; ``blocks``
        are qualified names of modules whose output gradient is normalised.

    Raises:
        ValueError: no ``nn.ReLU`` matches the name rule, or none of those lies in a block / dense layer.
    """
    names = authors_names(model)
    modules = dict(model.named_modules())
    dense = _is_dense(model, names)
    rule = densenet_relu_rule if dense else resnet_relu_rule
    relus = [q for q, a in names.items() if "relu" in a and isinstance(modules[q], nn.ReLU)]
    if not relus:
        raise ValueError("variant='original' applies the SGM authors' name rule (nn.ReLU modules whose name contains "
                         f"'relu'), and no module of this {type(model).__name__} matches: their code would silently "
                         "run the base attack here (e.g. timm names activations act1/act2, advkit's zoo uses "
                         "functional ReLUs). Use variant='formula', which finds skip connections by structure.")
    decayed = [q for q in relus if rule(names[q])]
    found: list[Connection] = []
    by_relu: dict[str, Connection] = {}
    blocks: list[str] = []
    if dense:
        scale, how = gamma ** 0.5, "gamma**0.5 per ReLU (densenet rule: 'relu' in name, 'transition' not)"
        parents: dict[str, list[str]] = {}
        for q in decayed:
            parents.setdefault(q.rpartition(".")[0], []).append(q)
        for parent, qs in parents.items():
            layer = "DenseLayer" in type(modules[parent]).__name__ or "denselayer" in names[parent].split(".")[-1]
            c = Connection("dense" if layer else "other", parent, ", ".join(qs), "n/a", scale, found_by="name",
                           detail=how if layer else "outside any dense layer: rescales the whole gradient")
            found.append(c)
            by_relu.update(dict.fromkeys(qs, c))
    else:
        bottleneck = any(hasattr(modules[q], "conv3") for q in names if is_block_name(names[q]))
        scale = gamma ** 0.5 if bottleneck else gamma
        how = ("gamma**0.5 per ReLU call (bottleneck)" if bottleneck else "gamma per ReLU call") + \
            "; block output gradient / std"
        for q, a in names.items():
            if not is_block_name(a):
                continue
            blocks.append(q)
            inside = [r for r in relus if r.startswith(q + ".")]
            hooked = [r for r in inside if rule(names[r])]
            down = getattr(modules[q], "downsample", None)
            c = Connection("residual", q, ", ".join(hooked), "projection" if isinstance(down, nn.Module)
                           else "identity", scale, found_by="name",
                           detail=how if hooked else f"not decayed: the authors' rule skips "
                           f"{', '.join(names[r] for r in inside) or 'it (no ReLU inside)'} ('0.relu'); "
                           "gradient / std only")
            found.append(c)
            by_relu.update(dict.fromkeys(hooked, c))
        for q in decayed:
            if q not in by_relu:
                c = Connection("other", q.rpartition(".")[0], q, "n/a", scale, found_by="name",
                               detail="ReLU outside any block: rescales the whole gradient")
                found.append(c)
                by_relu[q] = c
    if not any(c.kind != "other" and c.branch for c in found):
        raise ValueError(f"variant='original': the authors' name rule matches ReLUs ({', '.join(decayed[:4])}) but "
                         "none inside a ResNet block or dense layer, so SGM would not change the gradient direction; "
                         "use variant='formula'")
    for c in found:
        c.hooked = bool(c.branch)
    return found, by_relu, blocks


def install_original(model: nn.Module, gamma: float) -> tuple[list[Connection], list[RemovableHandle],
                                                                list[nn.Module]]:
    """Install the authors' SGM on ``model`` (see the module docstring).

    Returns:
        ``(connections, handles, hooked modules)``; with ``gamma == 1`` nothing is installed, as in their code.
    """
    found, relus, blocks = plan_original(model, gamma)
    if gamma == 1.0:
        for c in found:
            c.hooked, c.scale = False, 1.0
            c.detail = "gamma = 1: the authors' code installs no hook"
        return found, [], []
    handles: list[RemovableHandle] = []
    hooked: list[nn.Module] = []
    for q, c in relus.items():
        m = model.get_submodule(q)
        handles.append(m.register_forward_hook(scaling_hook(c.scale, (c,))))
        hooked.append(m)
    for q in blocks:
        m = model.get_submodule(q)
        handles.append(m.register_forward_hook(_norm_hook))
        hooked.append(m)
    return found, handles, hooked
