"""The settings of the registered analyses (``advkit analyze NAME``): frozen dataclasses whose defaults are the
analysis as published and whose checks raise ``ValueError`` naming the setting and the fix.

Each setting is given as ``--set KEY=VALUE`` or, as before the analyses were registered, as ``--KEY VALUE``
(``--k-max 5``, ``--knowledge layers``, ``--target lenet`` repeated). The registered analyses themselves
(:class:`~advkit.reproduce.analyses.Analysis`) live above the report layer, in :mod:`advkit.reproduce.analyses`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClustersSettings", "PerceptionSettings", "SurrogatesSettings"]

KNOWLEDGE = ("skip", "layers")  # also advkit.analysis.surrogates.KNOWLEDGE


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value} (--set {name}=N or --{name.replace('_', '-')} N)")


@dataclass(frozen=True)
class ClustersSettings:
    """:func:`advkit.analysis.clusters.cluster_perturbations`' settings.

    Attributes:
        k_min: smallest k tried (>= 2).
        k_max: largest k tried (>= k_min).
        components: principal components kept before k-means (>= 1).
        eps: only this eps label of the run (e.g. ``16/255``); ``None``: every eps.
        seed: seeds PCA, k-means and the silhouette subsample.
        silhouette_sample: perturbations the silhouette is computed on (>= 10).
    """

    k_min: int = 2
    k_max: int = 10
    components: int = 50
    eps: str | None = None
    seed: int = 0
    silhouette_sample: int = 4000

    def __post_init__(self) -> None:
        _at_least("k_min", self.k_min, 2)
        if self.k_max < self.k_min:
            raise ValueError(f"k_max {self.k_max} is below --k-min {self.k_min}; set k_max >= k_min (--set "
                             f"k_max=N or --k-max N)")
        _at_least("components", self.components, 1)
        _at_least("seed", self.seed, 0)
        _at_least("silhouette_sample", self.silhouette_sample, 10)


@dataclass(frozen=True)
class SurrogatesSettings:
    """:func:`advkit.analysis.surrogates.choose_surrogates`' settings.

    Attributes:
        targets: the unknown targets; empty: every target of the runs in turn.
        eps: the eps label to analyse (needed when the runs hold several).
        selection: share of the images used to choose, in (0, 1); the rest are fresh.
        seed: seeds the image split and the bootstrap.
        bootstrap: resamples of the fresh images (>= 100).
        knowledge: what the attacker knows about the target: ``skip`` (whether it has skip connections) or
            ``layers`` (also, without them, convolutional or fully connected).
    """

    targets: tuple[str, ...] = ()
    eps: str | None = None
    selection: float = 0.5
    seed: int = 0
    bootstrap: int = 2000
    knowledge: str = "skip"

    def __post_init__(self) -> None:
        if not 0.0 < self.selection < 1.0:
            raise ValueError(f"selection must be a share in (0, 1), got {self.selection} (--set selection=0.5)")
        _at_least("seed", self.seed, 0)
        _at_least("bootstrap", self.bootstrap, 100)
        if self.knowledge not in KNOWLEDGE:
            raise ValueError(f"--knowledge must be one of {', '.join(KNOWLEDGE)}, got {self.knowledge!r} "
                             f"(--set knowledge=skip)")


@dataclass(frozen=True)
class PerceptionSettings:
    """:func:`advkit.analysis.perception.perception_study`' settings.

    Attributes:
        reference: the clean images compared with: the attacked model's training rows, e.g. ``train[:50000]`` for
            ``lenet_50k``.
        extremes: class pairs shown at each end (hardest, easiest) in ``extremes.png`` (>= 1).
    """

    reference: str = "train"
    extremes: int = 3

    def __post_init__(self) -> None:
        if not self.reference.strip():
            raise ValueError("reference must name a split such as train or 'train[:50000]' (--set reference=train)")
        _at_least("extremes", self.extremes, 1)
