"""Backward-pass modifiers, scoped as context managers.

The Skip Gradient Method (Wu et al., "Skip Connections Matter: On the Transferability of Adversarial Examples
Generated with ResNets", ICLR 2020): inside ``with skip_gradient(model, gamma) as found:`` the gradient through
every residual branch and into every dense layer's new features is multiplied by ``gamma``; skip connections
keep theirs. Connections are found by structure (:func:`find_connections`), not by module names.

Public API:
    skip_gradient(model, gamma=0.2, variant="formula"): context manager yielding ``list[Connection]``.
    find_connections(model): discovery only.
    format_connections(found): a readable table.
    Connection: one residual / dense connection and its hook.
"""

from advkit.backprop.connection import Connection, format_connections
from advkit.backprop.discover import find_connections
from advkit.backprop.skip import VARIANTS, skip_gradient

__all__ = ["VARIANTS", "Connection", "find_connections", "format_connections", "skip_gradient"]
