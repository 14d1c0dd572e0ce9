"""Input-transformation defences as model wrappers, and BPDA for the non-differentiable ones.

``advkit.defences.wrap(model, "jpeg", quality=75)`` returns the defended model
(:class:`~advkit.defences.wrapper.Defended`); ``advkit.models.load("defended:jpeg[quality=75]:lenet")`` names one
(:mod:`advkit.defences.names`; importing this package registers the ``defended:`` names, and ``advkit.attacks``
imports it). The squeezers are plain functions for the feature-squeezing detector: :func:`bit_depth`,
:func:`median` (and :func:`jpeg`, :func:`random_resize_pad`). EOT for the random transform is the gradient part
``eot`` (:mod:`advkit.attacks.gradient.eot`).

Defences: JPEG (Guo et al., ICLR 2018), bit-depth reduction and median smoothing (Xu et al., NDSS 2018),
random resizing and padding (Xie et al., ICLR 2018); BPDA (Athalye et al., ICML 2018).
"""

from __future__ import annotations

from advkit.defences.names import PREFIX, load_named, parse_name
from advkit.defences.transforms import bit_depth, jpeg, median, random_resize_pad, straight_through
from advkit.defences.wrapper import DEFENCES, Defended, Transform, wrap
from advkit.models.registry import register_name_scheme

register_name_scheme(PREFIX, load_named)

__all__ = ["DEFENCES", "PREFIX", "Defended", "Transform", "bit_depth", "jpeg", "load_named", "median",
           "parse_name", "random_resize_pad", "straight_through", "wrap"]
