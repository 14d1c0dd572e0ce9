"""Structural discovery of residual and dense connections, for the Skip Gradient Method.

Wu et al., ICLR 2020 ("Skip Connections Matter") decay the gradient of every residual branch
(``z_{i+1} = z_i + f(z_i)``) and of every dense layer's new features (``z_{i+1} = cat(z_i, f(z_i))``). Discovery
works on the computation, not on module names:

* the model is traced with torch.fx (:mod:`advkit.backprop.trace`); submodules that cannot be traced become
  leaves and are analysed on their own;
* a **residual** is an addition whose operands are the block input ``z`` (or ``z`` through a projection shortcut:
  the shorter of two chains that both read ``z``) and a branch computed from ``z``; ``x + 0.2 * up(...)``
  (Inception-ResNet), ``x + conv(x)`` (MobileNetV2), SE-gated branches and pre-activation blocks all fit;
* a **dense** connection is a concatenation (not along the batch dimension) in which one operand was computed
  from another: the computed operand is a dense layer's new features;
* each branch is mapped to the module whose output can carry the decay (:meth:`GraphIndex.hook_target`);
* when even a submodule cannot be traced, block-type rules (:mod:`advkit.backprop.rules`) take over.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import replace

import torch.fx as fx
from torch import nn

from advkit.backprop.connection import Connection
from advkit.backprop.graph import GraphIndex, forward_scale, is_add, is_cat
from advkit.backprop.rules import rule_connection
from advkit.backprop.trace import Traced, TraceFailure, trace

logger = logging.getLogger(__name__)

# model -> (structure fingerprint, connections): an attack enters skip_gradient once per call, and tracing a deep
# model costs tens of milliseconds, so discovery is cached until the model's module structure changes
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[object, ...], list[Connection]]] = \
    weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple[object, ...]:
    """What discovery depends on: every submodule (identity, class) and any per-instance ``forward`` override."""
    return tuple((name, id(m), type(m), id(m.__dict__.get("forward"))) for name, m in model.named_modules())

NO_SKIP_MESSAGE = ("SGM found no skip connections (residual additions or dense concatenations) in this model "
                   "({model}); the skip-gradient decay would do nothing and SGM would silently reduce to the "
                   "base attack. Use a source model with residual or dense connections.")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _common_scope(a: str, b: str) -> str:
    out = []
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        out.append(x)
    return ".".join(out)


def _is_identity_chain(ix: GraphIndex, nodes: list[fx.Node]) -> bool:
    return all(n.op == "call_module" and ix.traced.modules.get(str(n.target)) is nn.Identity for n in nodes)


def _compute(nodes: list[fx.Node]) -> list[fx.Node]:
    return [n for n in nodes if n.op != "get_attr"]


def _residual(ix: GraphIndex, add: fx.Node) -> Connection | None:
    operands = [a for a in (*add.args[:2], *add.kwargs.values()) if ix.is_tensor_operand(a)]
    if len(operands) != 2 or operands[0] is operands[1]:
        return None
    p, q = operands
    block = ix.traced.scope.get(add, "")
    if ix.is_ancestor(p, q) or ix.is_ancestor(q, p):
        start, branch = (p, q) if ix.is_ancestor(p, q) else (q, p)
        shortcut = "identity"
    else:
        z = ix.nearest_common_ancestor(p, q)
        if z is None:
            return None
        rp, rq = _compute(ix.region(z, p)), _compute(ix.region(z, q))
        ident_p, ident_q = _is_identity_chain(ix, rp), _is_identity_chain(ix, rq)
        if ident_p != ident_q:
            short, branch = (p, q) if ident_p else (q, p)
        elif len(rp) != len(rq) and not ident_p:
            short, branch = (p, q) if len(rp) < len(rq) else (q, p)
        else:
            logger.debug("addition %s in %r: cannot tell shortcut from branch; skipped", add.name, block)
            return None
        start = z
        shortcut = "identity" if _is_identity_chain(ix, _compute(ix.region(z, short))) else "projection"
    target = ix.hook_target(branch, start, block)
    if target is None:
        logger.warning("residual addition %s in %r: no module produces the branch alone; not hooked",
                       add.name, block or "(model)")
        return None
    node, module = target
    detail = ""
    c = forward_scale(branch)
    if c is not None:
        detail = f"branch scaled by {c:g} in the forward pass"
    return Connection("residual", block, module, shortcut, found_by="fx", detail=detail)


def _dense(ix: GraphIndex, cat: fx.Node, seen: set[fx.Node]) -> list[Connection]:
    tensors = cat.args[0] if cat.args else None
    if not isinstance(tensors, (list, tuple)):  # torch.cat(tensors=...) or one traced sequence: no operands to see
        return []
    operands = [a for a in tensors if ix.is_tensor_operand(a)]
    found = []
    for new in operands:
        if new in seen:
            continue
        carried = [o for o in operands if o is not new and ix.is_ancestor(o, new)]
        if not carried:
            continue
        seen.add(new)
        start = max(carried, key=lambda o: ix.pos[o])
        cat_scope = ix.traced.scope.get(cat, "")
        target = ix.hook_target(new, start, cat_scope)
        if target is None:
            logger.warning("concatenation %s in %r: no module produces the new features alone; not hooked",
                           cat.name, cat_scope or "(model)")
            continue
        node, module = target
        block = _common_scope(cat_scope, ix.traced.scope.get(node, ""))
        if block == module:
            block = module.rpartition(".")[0]
        found.append(Connection("dense", block, module, "n/a", found_by="fx"))
    return found


def graph_connections(traced: Traced) -> list[Connection]:
    """Residual and dense connections in one traced graph (names relative to the traced root)."""
    ix = GraphIndex(traced)
    found: list[Connection] = []
    seen_new: set[fx.Node] = set()
    for node in ix.nodes:
        if is_add(node):
            c = _residual(ix, node)
            if c is not None:
                found.append(c)
        elif is_cat(node):
            found.extend(_dense(ix, node, seen_new))
    return found


def _discover(module: nn.Module, prefix: str) -> list[Connection]:
    try:
        traced = trace(module)
    except TraceFailure as e:
        rule = rule_connection(module, prefix)
        if rule is not None:
            logger.info("%s: not traceable; block-type rule for %s", prefix or "(model)", type(module).__name__)
            return rule
        logger.debug("%s: %s; analysing its children", prefix or "(model)", e)
        return [c for name, child in module.named_children() for c in _discover(child, _join(prefix, name))]
    found = graph_connections(traced)
    for c in found:
        c.block, c.branch = _join(prefix, c.block), _join(prefix, c.branch)
    for leaf in traced.forced_leaves:
        found.extend(_discover(module.get_submodule(leaf), _join(prefix, leaf)))
    return found


def find_connections(model: nn.Module) -> list[Connection]:
    """Find the residual and dense connections of ``model`` by structure (discovery only, nothing hooked).

    Wu et al., ICLR 2020: SGM decays the gradient through these branches. Works on an advkit ``Classifier``
    (names then start with ``net.``), a bare ``nn.Module``, torchvision- or timm-structured ResNets and
    DenseNets, and user models; names never matter.

    Args:
        model: the model; it is not modified.

    Returns:
        One :class:`Connection` per residual addition / dense layer in forward order (``hooked`` False).

    Raises:
        ValueError: no skip connection found (SGM would silently reduce to the base attack).
    """
    key = _fingerprint(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:
        return [replace(c) for c in cached[1]]
    found = _discover(model, "")
    if not found:
        raise ValueError(NO_SKIP_MESSAGE.format(model=type(model).__name__))
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    found.sort(key=lambda c: order.get(c.branch, len(order)))
    by_branch: dict[str, Connection] = {}
    for c in found:
        if c.branch in by_branch:
            logger.warning("%s is the branch of two connections; it is hooked once", c.branch)
            continue
        by_branch[c.branch] = c
    out = list(by_branch.values())
    try:
        _CACHE[model] = (key, [replace(c) for c in out])
    except TypeError:  # a model that cannot be weakly referenced is simply not cached
        pass
    return out
