"""What the Skip Gradient Method found in a model, and a readable table of it.

Wu et al., "Skip Connections Matter: On the Transferability of Adversarial Examples Generated with ResNets",
ICLR 2020. SGM decays the gradient through each residual branch (``z_{i+1} = z_i + f(z_i)``) or into each dense
layer's new features (``z_{i+1} = cat(z_i, f(z_i))``); a :class:`Connection` records one such place: where it
is, which module's output gets the decay, what the shortcut is, and how often the hook ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("residual", "dense", "other")
SHORTCUTS = ("identity", "projection", "n/a")


@dataclass
class Connection:
    """One skip connection and the gradient hook that decays its branch.

    Attributes:
        kind: ``"residual"`` (an addition ``shortcut(z) + f(z)``), ``"dense"`` (a concatenation
            ``cat(z, f(z))``) or ``"other"`` (``variant="original"`` only: a ReLU that the authors' name rule
            hooks outside any block, e.g. the stem ReLU; it rescales the whole gradient uniformly).
        block: qualified name (relative to the model given) of the module whose forward performs the addition,
            or that holds the dense layers; ``""`` for the model itself.
        branch: qualified name of the module whose output gradient is scaled (several, comma-separated, for
            ``variant="original"`` on DenseNets); ``""`` when nothing is hooked.
        shortcut: ``"identity"``, ``"projection"`` (a module/chain that reads the block input, e.g. a strided
            1x1 convolution) or ``"n/a"`` (dense and other).
        scale: factor applied to the gradient each time the hook runs: ``gamma`` for ``variant="formula"``,
            ``gamma`` or ``gamma ** 0.5`` per ReLU call for ``variant="original"``; ``1.0`` when not hooked.
        hooked: whether a gradient-scaling hook is installed for this connection.
        found_by: ``"fx"`` (graph analysis of a torch.fx trace), ``"rule"`` (block-type rule, for modules that
            cannot be traced) or ``"name"`` (the authors' module-name rule, ``variant="original"``).
        detail: a human-readable note (forward-pass residual scale, skipped by a name rule, ...).
        fired: how many times the scaling hook ran in a backward pass while the context was active (a module
            called three times per forward, like a torchvision Bottleneck's shared ReLU, adds three per pass).
    """

    kind: str
    block: str
    branch: str
    shortcut: str
    scale: float = 1.0
    hooked: bool = False
    found_by: str = "fx"
    detail: str = ""
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _branch_label(branch: str) -> str:
    """``a.b.relu1, a.b.relu2`` -> ``a.b.{relu1,relu2}``."""
    parts = [p.strip() for p in branch.split(",")]
    if len(parts) < 2:
        return branch
    heads = {p.rpartition(".")[0] for p in parts}
    if len(heads) != 1:
        return branch
    head = heads.pop()
    tails = ",".join(p.rpartition(".")[2] for p in parts)
    return f"{head}.{{{tails}}}" if head else f"{{{tails}}}"


def _ranges(idx: list[int]) -> str:
    out: list[str] = []
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


def format_connections(found: Sequence[Connection], *, width: int = 56) -> str:
    """A plain-text table of connections with a summary line, for ``advkit sgm inspect`` and run logs.

    Args:
        found: connections from :func:`~advkit.backprop.find_connections` or yielded by
            :func:`~advkit.backprop.skip_gradient`.
        width: longest module name shown before it is shortened from the left.

    Returns:
        The table; one row per connection (block ``(model)`` is the model itself).
    """
    header = ("#", "kind", "block", "branch (hooked module)", "shortcut", "scale", "fired", "via")
    rows = [header]
    for i, c in enumerate(found, 1):
        scale = f"{c.scale:.4g}" if c.hooked else "-"
        branch = _shorten(_branch_label(c.branch) or "-", width)
        rows.append((str(i), c.kind, _shorten(c.block or "(model)", width), branch, c.shortcut, scale,
                     str(c.fired) if c.hooked else "-", c.found_by))
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    by_detail: dict[str, list[int]] = {}
    for i, c in enumerate(found, 1):
        if c.detail:
            by_detail.setdefault(c.detail, []).append(i)
    notes = [f"{_ranges(idx)}: {detail}" for detail, idx in by_detail.items()]
    residual = [c for c in found if c.kind == "residual"]
    n_proj = sum(c.shortcut == "projection" for c in residual)
    n_dense = sum(c.kind == "dense" for c in found)
    n_hooked = sum(c.hooked for c in found)
    summary = (f"{len(residual)} residual ({n_proj} with projection shortcuts), {n_dense} dense"
               + (f", {len(found) - len(residual) - n_dense} other" if len(found) > len(residual) + n_dense else "")
               + f"; {n_hooked} hooked")
    if any(c.hooked for c in found):
        summary += f", {sum(c.fired for c in found)} hook calls in backward passes"
    return "\n".join([*lines, *(["notes:", *("  " + n for n in notes)] if notes else []), summary])
