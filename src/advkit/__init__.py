"""advkit: adversarial examples and how they transfer between neural networks.

Layers (each imports only from the ones above it): ``data`` -> ``models`` -> ``backprop`` -> ``attacks`` ->
``evaluate`` -> ``analysis`` -> ``report`` -> ``cli``.
"""

__version__ = "0.1.0"
