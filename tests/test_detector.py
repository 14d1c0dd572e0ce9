"""The neighbour-pixel detector of Papernot et al. 2016 and its ROC AUC, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advkit.analysis.detector import detection_auc, detection_study, neighbour_score, roc_auc, roc_curve
from advkit.models import Classifier


def test_neighbour_score_by_hand():
    checker = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # 2 horizontal + 2 vertical unit steps
    dot = torch.zeros(1, 1, 3, 3)
    dot[0, 0, 1, 1] = 1.0  # the centre differs from its 4 neighbours
    half = torch.tensor([[[[0.5, 0.0, 0.0]]]])  # one row: a single step of 0.5 -> 0.25
    assert neighbour_score(checker).tolist() == [4.0]
    assert neighbour_score(dot).tolist() == [4.0]
    assert neighbour_score(half).tolist() == [0.25]
    two_channels = torch.cat([checker, 2 * checker], 1)  # channels add up: 4 + 16
    assert neighbour_score(two_channels).tolist() == [20.0]
    assert neighbour_score(torch.full((3, 1, 5, 5), 0.3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        neighbour_score(torch.zeros(5, 5))


def test_roc_auc_by_hand():
    # positives 2 and 4 against negatives 1, 2, 3: (2>1) + (2=2: 1/2) + (2<3: 0) + 3 * (4 > .) = 4.5 of 6 pairs
    assert roc_auc([1, 2, 3], [2, 4]) == 0.75
    assert roc_auc([1, 2], [3, 4]) == 1.0
    assert roc_auc([3, 4], [1, 2]) == 0.0
    assert roc_auc([5, 5, 5], [5, 5]) == 0.5
    assert roc_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 1.0
    with pytest.raises(ValueError, match="empty"):
        roc_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([1.0, float("nan")], [1.0])


def test_roc_auc_matches_pair_counting_and_the_curve():
    rng = np.random.default_rng(0)
    for _ in range(20):
        neg = rng.integers(0, 6, rng.integers(1, 30)).astype(float)
        pos = rng.integers(2, 8, rng.integers(1, 30)).astype(float)
        pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        auc = roc_auc(neg, pos)
        assert auc == pytest.approx(pairs, abs=1e-12)
        fpr, tpr, thr = roc_curve(neg, pos)
        assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0 and np.isinf(thr[0])
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(auc, abs=1e-12)


def test_saturated_pixels_are_flagged():
    """JSMA-like edits (isolated pixels set to 1) raise the score; a flat image scores lowest."""
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.avg_pool2d(torch.rand(20, 1, 16, 16, generator=g), 5, 1, 2)
    adv = clean.clone()
    idx = torch.randint(0, 16, (20, 2, 8), generator=g)
    adv[torch.arange(20)[:, None], 0, idx[:, 0], idx[:, 1]] = 1.0
    assert detection_auc(clean, adv) == 1.0


def test_detection_study():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    model = Classifier(net, (0.5,), (0.5,), (1, 6, 6), 3).freeze()
    x = torch.full((4, 1, 6, 6), 0.5)
    y = torch.tensor([0, 1, 2, 0])
    jsma = x.clone()
    jsma[:, 0, 2, 2] = 1.0
    out = detection_study(model, x, y, jsma, fgsm_adv=x.clone())
    assert out["auc_jsma"] == 1.0 and out["auc_fgsm"] == 0.5
    assert out["mean_score_clean"] == 0.0 and out["mean_score_jsma"] == pytest.approx(4 * 0.25)
    crafted = detection_study(model, x, y, jsma, fgsm_eps=0.1)  # FGSM from the attack registry
    assert 0.0 <= crafted["auc_fgsm"] <= 1.0 and crafted["n_fgsm"] == 4
