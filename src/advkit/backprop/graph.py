"""Reachability on a traced graph: which node feeds which, and where a branch can be hooked.

For the Skip Gradient Method (Wu et al., ICLR 2020) the gradient of a residual branch ``f`` in
``z_{i+1} = z_i + f(z_i)`` must be multiplied by ``gamma`` and nothing else. Scaling the gradient at a node ``m``
inside the branch is exactly that when

1. every differentiable path from the graph inputs to the branch output ``b`` passes through ``m`` (so the whole
   branch gradient is scaled), and
2. every differentiable path from ``m`` to the graph output passes through ``b`` (so no other gradient is).

Backward is linear in the incoming gradient, so whatever the branch computes after ``m`` (a ReLU, ``x * 0.2``,
SE gating, dropout) the scale commutes to ``b``. :class:`GraphIndex` checks both conditions with ancestor
bitsets and short searches restricted to the branch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import TypeGuard

import torch
import torch.fx as fx

from advkit.backprop.trace import Traced

_SIZE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad"})
_SIZE_METHODS = frozenset({"size", "dim", "numel", "type", "get_device", "is_contiguous", "nelement"})


def _is_size_op(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SIZE_ATTRS
    if node.op == "call_method":
        return node.target in _SIZE_METHODS
    return node.op == "call_function" and node.target in (len, torch.numel)


class GraphIndex:
    """Topological positions, ancestor bitsets and "carries a gradient from the input" flags for a graph.

    Attributes:
        traced: the trace with its module bookkeeping.
        nodes: nodes in topological (creation) order.
        pos: node -> index in ``nodes``.
        anc: node -> bitset (int) of its ancestors through differentiable edges.
        live: nodes that depend differentiably on a graph input (placeholder).
        sizey: nodes that only carry shapes, dtypes and the like (no gradient flows through them).
    """

    def __init__(self, traced: Traced) -> None:
        self.traced = traced
        self.nodes = list(traced.graph.nodes)
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        self.sizey: set[fx.Node] = set()
        self.live: set[fx.Node] = set()
        self.anc: dict[fx.Node, int] = {}
        for n in self.nodes:
            ins = self.inputs(n)
            if _is_size_op(n) or (n.all_input_nodes and not ins and n.op != "output"):
                self.sizey.add(n)
                ins = []
            bits = 0
            for i in ins:
                bits |= self.anc[i] | (1 << self.pos[i])
            self.anc[n] = bits
            if n.op == "placeholder" or any(i in self.live for i in ins):
                self.live.add(n)
            if n in self.sizey:
                self.live.discard(n)

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        """Inputs of ``node`` that can carry a gradient (shape bookkeeping excluded)."""
        return [i for i in node.all_input_nodes if i not in self.sizey]

    def users(self, node: fx.Node) -> Iterator[fx.Node]:
        """Users of ``node`` through which a gradient can flow back to it."""
        return (u for u in node.users if u not in self.sizey)

    def is_ancestor(self, a: fx.Node, b: fx.Node) -> bool:
        """Whether ``a`` feeds ``b`` (through differentiable edges)."""
        return bool((self.anc[b] >> self.pos[a]) & 1)

    def is_tensor_operand(self, x: object) -> TypeGuard[fx.Node]:
        """A node that carries a gradient from the input (not a constant, parameter or shape)."""
        return isinstance(x, fx.Node) and x in self.live

    def nearest_common_ancestor(self, a: fx.Node, b: fx.Node) -> fx.Node | None:
        """The latest live node that feeds both ``a`` and ``b``."""
        common = self.anc[a] & self.anc[b]
        while common:
            i = common.bit_length() - 1
            if self.nodes[i] in self.live:
                return self.nodes[i]
            common &= ~(1 << i)
        return None

    def region(self, start: fx.Node, end: fx.Node) -> list[fx.Node]:
        """Nodes on paths from ``start`` (excluded) to ``end`` (included), in topological order."""
        lo, hi = self.pos[start], self.pos[end]
        return [n for n in self.nodes[lo + 1:hi + 1]
                if (n is end or self.is_ancestor(n, end)) and self.is_ancestor(start, n)]

    def dominates(self, m: fx.Node, b: fx.Node) -> bool:
        """Whether every path from a graph input to ``b`` passes through ``m``."""
        if m is b:
            return True
        if not self.is_ancestor(m, b):
            return False
        seen: set[fx.Node] = set()
        todo = [b]
        while todo:
            v = todo.pop()
            for i in self.inputs(v):
                if i is m or i in seen or i not in self.live:
                    continue
                if not self.is_ancestor(m, i):
                    return False  # ``i`` reaches an input without ``m`` and feeds ``b`` without ``m``
                seen.add(i)
                todo.append(i)
        return True

    def feeds_only(self, m: fx.Node, b: fx.Node) -> bool:
        """Whether every path from ``m`` to the output passes through ``b``."""
        if m is b:
            return True
        seen: set[fx.Node] = set()
        todo = [m]
        while todo:
            v = todo.pop()
            for u in self.users(v):
                if u is b or u in seen:
                    continue
                if not self.is_ancestor(u, b):
                    return False
                seen.add(u)
                todo.append(u)
        return True

    def module_for(self, node: fx.Node, exclude_scope: str) -> str | None:
        """The module to hook so that its output is ``node``: outermost first, never shared or enclosing.

        Modules in the lineage of the node's creator (the creator and the containers that return its output)
        come first, outermost first; then other modules returning the same tensor (pass-through wrappers such as
        an eval-mode DropPath). Modules called more than once per forward are refused (a hook would scale every
        call), and so are modules that contain ``exclude_scope`` (the block performing the addition).
        """
        names = self.traced.outputs.get(node, [])
        creator = self.traced.scope.get(node, "")
        lineage = sorted((m for m in names if m == creator or creator.startswith(m + ".")), key=len)
        for m in [*lineage, *(m for m in names if m not in lineage)]:
            if not m or self.traced.calls[m] != 1:
                continue
            if exclude_scope == m or exclude_scope.startswith(m + "."):
                continue
            return m
        return None

    def hook_target(self, b: fx.Node, start: fx.Node, exclude_scope: str) -> tuple[fx.Node, str] | None:
        """The node nearest ``b`` (walking back towards ``start``) whose module can carry the branch's scale."""
        lo = self.pos[start]
        for v in reversed(self.nodes[lo + 1:self.pos[b] + 1]):
            if v is not b and not self.is_ancestor(v, b):
                continue
            name = self.module_for(v, exclude_scope)
            if name is not None and self.dominates(v, b) and self.feeds_only(v, b):
                return v, name
        return None


ADD_TARGETS = (operator.add, operator.iadd, torch.add)
CAT_TARGETS = (torch.cat, torch.concat, torch.concatenate)


def is_add(node: fx.Node) -> bool:
    """``a + b``, ``a += b``, ``torch.add(a, b)``, ``a.add(b)`` or ``a.add_(b)``."""
    if node.op == "call_function":
        return node.target in ADD_TARGETS
    return node.op == "call_method" and node.target in ("add", "add_")


def is_cat(node: fx.Node) -> bool:
    """``torch.cat`` / ``concat`` / ``concatenate`` along a non-batch dimension."""
    if node.op != "call_function" or node.target not in CAT_TARGETS or not node.args:
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
    return isinstance(node.args[0], (list, tuple)) and not (isinstance(dim, int) and dim == 0)


def forward_scale(node: fx.Node) -> float | None:
    """The constant ``c`` when ``node`` is ``c * t`` or ``t * c`` (a scaled residual), else ``None``."""
    if node.op == "call_function" and node.target in (operator.mul, torch.mul) and len(node.args) == 2:
        consts = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(consts) == 1:
            return float(consts[0])
    return None
