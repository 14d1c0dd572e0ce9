"""The papers' reproductions on this machine's data, each a registered :class:`~advkit.reproduce.registry.Reproduction`
(a name, its settings with defaults and checks, a quick variant, and one run-folder rule), run with
``advkit reproduce NAME [--quick] [--set KEY=VALUE ...] --out DIR`` or ``advkit.reproduce.get(NAME).run(out)``:

* ``sgm`` (:mod:`~advkit.reproduce.sgm`): Wu et al., "Skip Connections Matter", ICLR 2020, on the Fashion-MNIST zoo
  (attack table, gamma sweep, eps sweep: three transfer studies and a combined report);
* ``sgm-imagenet`` (:mod:`~advkit.reproduce.sgm_imagenet`): the SGM authors' ImageNet protocol, for machines that
  have ImageNet and the weights (by default it only checks what is missing);
* ``fgsm`` (:mod:`~advkit.reproduce.fgsm`): Goodfellow, Shlens & Szegedy, ICLR 2015 (FGSM error vs eps,
  adversarial training); the measurement is in :mod:`~advkit.reproduce.fgsm_measure`;
* ``cross-domain`` (:mod:`~advkit.reproduce.cross_domain`): the seeds' cross-domain experiment (generators and
  universal perturbations trained on one dataset's hosts, measured on another's models; after Naseer et al. 2019);
* ``jsma`` (:mod:`~advkit.reproduce.jsma_sets`, the study in :mod:`~advkit.reproduce.jsma`): Papernot et al.,
  EuroS&P 2016 (targeted success and distortion over every class pair, the neighbour-pixel detector; one split
  or the paper's larger protocol);
* ``jsma-defence`` (:mod:`~advkit.reproduce.jsma_defence`): the same paper's training on adversarial samples;
* ``targeted-transfer`` (:mod:`~advkit.reproduce.targeted`): Zhao et al., NeurIPS 2021 (targeted transfer with
  the logit, CE and Po+Trip losses over 20 / 100 / 300 iterations, single sources and hold-out ensembles).

A new reproduction is one module that registers itself (see :mod:`advkit.reproduce.registry`) and is imported
here.
"""

from advkit.reproduce import (  # noqa: F401 (register)
    cross_domain,
    fgsm,
    jsma_defence,
    jsma_sets,
    sgm,
    sgm_imagenet,
    targeted,
)
from advkit.reproduce.cross_domain import reproduce_cross_domain
from advkit.reproduce.fgsm_measure import measure_fgsm
from advkit.reproduce.jsma import reproduce_jsma, run_jsma, save_study
from advkit.reproduce.registry import REPRODUCTIONS, Outcome, Reproduction, RunContext, lookup, register
from advkit.reproduce.sgm import reproduce_sgm, sgm_configs
from advkit.reproduce.sgm_imagenet import imagenet_config, reproduce_sgm_imagenet

__all__ = ["REPRODUCTIONS", "Outcome", "Reproduction", "RunContext", "get", "imagenet_config", "measure_fgsm",
           "register", "reproduce_cross_domain", "reproduce_jsma", "reproduce_sgm", "reproduce_sgm_imagenet",
           "run_jsma", "save_study", "sgm_configs"]


def get(name: str) -> Reproduction:
    """The reproduction registered as ``name`` (``ValueError`` listing the registered ones when there is none)."""
    return lookup(REPRODUCTIONS, name)
