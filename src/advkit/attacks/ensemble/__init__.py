"""Ensemble methods: white-box gradient attacks that need an ensemble of surrogates.

Each attack takes an :class:`advkit.models.ensemble.Ensemble` (``advkit.models.ensemble([...])`` or a model named
``ensemble:A+B``) and reaches its members one by one: SVRE (:mod:`.svre`, Xiong et al., CVPR 2022) and CWA
(:mod:`.cwa`, Chen et al., ICLR 2024). :mod:`.members` holds what they share: the check that the model is an
ensemble, the fused and per-member loss gradients, and the pass counting.
"""
