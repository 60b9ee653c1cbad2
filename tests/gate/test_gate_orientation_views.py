"""The gate under orientation averaging: given every view's embedding, each score is the mean over the views."""
from __future__ import annotations

import numpy as np
import torch

from dermlens.gate.gate import Gate, GateThresholds, OodModel
from dermlens.gate.quality import QualityMeasures
from dermlens.models.embedding_head import EmbeddingHead


def test_the_gate_averages_each_score_over_the_views():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=generator)
    skin_head = EmbeddingHead().fit(features.numpy(), (features[:, 0] > 0).numpy().astype(int))
    gate = Gate(GateThresholds(max_ood_distance=1.5), skin_head, OodModel.fit(features.numpy(), components=3))
    views = torch.randn(8, 4, 6, generator=generator)  # (views, photos, features)
    measures = [QualityMeasures(focus=1.0, overexposed=0.0, underexposed=0.0, contrast=0.5) for _ in range(4)]
    verdicts = gate.decide(measures, views)
    expected_skin = np.mean([gate.skin_head.probability(v) for v in views], axis=0)
    expected_ood = np.mean([gate.ood.distance(v) for v in views], axis=0) / 1.5
    np.testing.assert_allclose([v.p_skin for v in verdicts], expected_skin, rtol=1e-6)
    np.testing.assert_allclose([v.ood_score for v in verdicts], expected_ood, rtol=1e-6)
    one_view = gate.decide(measures, views[0])  # a plain (photos, features) batch as before
    np.testing.assert_allclose([v.p_skin for v in one_view], gate.skin_head.probability(views[0]), rtol=1e-6)
