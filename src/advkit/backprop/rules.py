"""Block-type rules: the fallback for blocks whose forward torch.fx cannot trace.

Discovery for the Skip Gradient Method (Wu et al., ICLR 2020) is structural (:mod:`advkit.backprop.discover`).
A block with data-dependent control flow in its own forward cannot be traced; when its class is one of the
well-known block types of torchvision, timm or advkit's zoo, the module that produces its residual branch (or its
new dense features) is known from the block's structure, and that module is hooked instead. The rules match class
names (``BasicBlock``, ``Bottleneck``, ``PreActBlock``, ``InvertedResidual``, ``DenseLayer`` and their
``_``-prefixed / ``SE`` variants) and then check the attributes they rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from advkit.backprop.connection import Connection


@dataclass(frozen=True)
class BlockRule:
    """Where a known block type's branch ends.

    Attributes:
        pattern: regular expression matched against the class name.
        kind: ``"residual"`` or ``"dense"``.
        branch: attribute names tried in order; the first that is a module other than ``nn.Identity`` is hooked
            (e.g. ``se`` before ``bn2``: the SE gating belongs to the branch).
        shortcut: attribute names of a projection shortcut (``None`` / ``nn.Identity`` mean identity).
        flags: attributes that, when present and false, say the block has no skip connection
            (MobileNetV2 blocks with a stride or a change of width).
    """

    pattern: str
    kind: str
    branch: tuple[str, ...]
    shortcut: tuple[str, ...] = ("downsample", "shortcut")
    flags: tuple[str, ...] = ()


RULES: tuple[BlockRule, ...] = (
    BlockRule(r"PreAct\w*Bottleneck", "residual", ("drop_path", "conv3")),
    BlockRule(r"PreAct\w*Block", "residual", ("drop_path", "conv2")),
    BlockRule(r"Bottleneck", "residual", ("drop_path", "se", "bn3")),
    BlockRule(r"BasicBlock", "residual", ("drop_path", "se", "bn2")),
    BlockRule(r"InvertedResidual", "residual", ("drop_path", "conv", "bn3"),
              flags=("use_res_connect", "use_residual", "has_skip")),
    BlockRule(r"DenseLayer", "dense", ("conv2",), shortcut=()),
)


def _module(block: nn.Module, attr: str) -> nn.Module | None:
    m = getattr(block, attr, None)
    return m if isinstance(m, nn.Module) and not isinstance(m, nn.Identity) else None


def rule_connection(block: nn.Module, name: str) -> list[Connection] | None:
    """The connection of an untraceable block by its type, ``[]`` if it has none, ``None`` if unknown.

    Args:
        block: the module.
        name: its qualified name in the model.
    """
    cls = type(block).__name__
    for rule in RULES:
        if not re.search(rule.pattern, cls):
            continue
        if any(hasattr(block, f) and not getattr(block, f) for f in rule.flags):
            return []
        for attr in rule.branch:
            # a drop-path only counts when it is a real module (timm keeps None or Identity when disabled)
            if _module(block, attr) is not None:
                shortcut = "n/a" if rule.kind == "dense" else (
                    "projection" if any(_module(block, s) is not None for s in rule.shortcut) else "identity")
                return [Connection(rule.kind, name, f"{name}.{attr}" if name else attr, shortcut, found_by="rule",
                                   detail=f"{cls} is not traceable; branch by block-type rule")]
        return None
    return None
