"""torch.fx tracing that remembers which module produced what, for structural skip-connection discovery.

The graph alone names only leaf modules. Discovery also needs, for every node, the module scope it was created in
and the (possibly non-leaf) modules whose call returned it, so that a residual branch can be hooked at the module
that produces it (``bn2``, an SE module, a ``conv`` ``Sequential``). :class:`RecordingTracer` records both.

A module whose forward cannot be traced (data-dependent control flow, unsupported calls) is retried as an opaque
leaf; the caller analyses its inside separately.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

logger = logging.getLogger(__name__)

#: Most modules :func:`trace` turns into leaves before it gives up on a root.
MAX_FORCED_LEAVES = 64


class TraceFailure(RuntimeError):
    """The root module's own forward cannot be traced symbolically."""


@dataclass
class Traced:
    """A traced graph with module bookkeeping (names relative to the traced root).

    Attributes:
        graph: the torch.fx graph.
        scope: node -> qualified name of the innermost module whose forward created it (``""``: the root).
        outputs: node -> modules whose call returned exactly this node, innermost first.
        calls: module name -> number of calls during the trace (shared modules have more than one).
        modules: module name -> module type for every module called.
        forced_leaves: modules that could not be traced inside and were kept opaque.
    """

    graph: fx.Graph
    scope: dict[fx.Node, str]
    outputs: dict[fx.Node, list[str]]
    calls: Counter[str]
    modules: dict[str, type]
    forced_leaves: tuple[str, ...] = field(default=())


class RecordingTracer(fx.Tracer):
    """An :class:`torch.fx.Tracer` recording module scopes, module outputs and call counts."""

    def __init__(self, forced_leaves: set[str]) -> None:
        super().__init__()
        self._rec_forced = forced_leaves
        self._rec_stack: list[str] = []
        self._rec_scope: dict[fx.Node, str] = {}
        self._rec_outputs: defaultdict[fx.Node, list[str]] = defaultdict(list)
        self._rec_calls: Counter[str] = Counter()
        self._rec_modules: dict[str, type] = {}
        self._rec_failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self._rec_forced or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        name = self.path_of_module(m)
        self._rec_calls[name] += 1
        self._rec_modules[name] = type(m)
        self._rec_stack.append(name)
        try:
            result = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self._rec_failed_in is None:
                self._rec_failed_in = name
            raise
        finally:
            self._rec_stack.pop()
        if isinstance(result, fx.Proxy):
            self._rec_outputs[result.node].append(name)
        return result

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        self._rec_scope[node] = self._rec_stack[-1] if self._rec_stack else ""
        return node


def trace(root: nn.Module) -> Traced:
    """Trace ``root`` symbolically; submodules that fail are retried as leaves.

    Raises:
        TraceFailure: the root's own forward is not traceable (e.g. ``if x.sum() > 0`` at the top level).
    """
    forced: set[str] = set()
    while True:
        tracer = RecordingTracer(forced)
        try:
            graph = tracer.trace(root)
        except Exception as e:  # fx raises TraceError, TypeError, NameError, RuntimeError, ...
            bad = tracer._rec_failed_in
            if bad is None or bad in forced or len(forced) >= MAX_FORCED_LEAVES:
                raise TraceFailure(f"{type(root).__name__} is not symbolically traceable: {e}") from e
            logger.debug("fx could not trace inside %s (%s); keeping it as a leaf", bad, e)
            forced.add(bad)
            continue
        return Traced(graph, tracer._rec_scope, dict(tracer._rec_outputs), tracer._rec_calls, tracer._rec_modules,
                      tuple(sorted(forced)))
