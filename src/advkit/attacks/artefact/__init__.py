"""Attacks that apply an artefact trained on a host model: a perturbation generator (:mod:`.generator`, Naseer et al.
2019) or a universal perturbation (:mod:`.universal`, Moosavi-Dezfooli et al. 2017). Training them lives in
:mod:`advkit.train`."""
