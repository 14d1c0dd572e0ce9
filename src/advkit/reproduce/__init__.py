"""The papers' reproductions on this machine's data, each a measurement plus its report section.

* :mod:`~advkit.reproduce.sgm`: Wu et al., "Skip Connections Matter", ICLR 2020, on the Fashion-MNIST zoo
  (attack table, gamma sweep, eps sweep: three transfer studies and a combined report);
* :mod:`~advkit.reproduce.sgm_imagenet`: the SGM authors' ImageNet protocol, for machines that have ImageNet
  and the weights (``dry_run`` checks what is missing);
* :mod:`~advkit.reproduce.fgsm`: Goodfellow, Shlens & Szegedy, ICLR 2015 (FGSM error vs eps, adversarial
  training); the measurement is in :mod:`~advkit.reproduce.fgsm_measure`;
* :mod:`~advkit.reproduce.cross_domain`: the seeds' cross-domain experiment (generators and universal
  perturbations trained on one dataset's hosts, measured on another's models; after Naseer et al. 2019);
* :mod:`~advkit.reproduce.jsma`: Papernot et al., EuroS&P 2016 (targeted success and distortion over every class
  pair, the neighbour-pixel detector).
"""

from advkit.reproduce.cross_domain import reproduce_cross_domain
from advkit.reproduce.fgsm import reproduce_fgsm
from advkit.reproduce.fgsm_measure import measure_fgsm
from advkit.reproduce.jsma import reproduce_jsma, run_jsma, save_study
from advkit.reproduce.sgm import reproduce_sgm, sgm_configs
from advkit.reproduce.sgm_imagenet import imagenet_config, reproduce_sgm_imagenet

__all__ = ["imagenet_config", "measure_fgsm", "reproduce_cross_domain", "reproduce_fgsm", "reproduce_jsma",
           "reproduce_sgm", "reproduce_sgm_imagenet", "run_jsma", "save_study", "sgm_configs"]
