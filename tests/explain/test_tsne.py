"""t-SNE of hidden features: class-stratified subsampling and an embedding that keeps clusters apart."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from dermlens.explain.tsne import save_tsne, stratified_subsample, tsne_embedding


def test_subsample_keeps_small_classes_whole():
    labels = ["nv"] * 500 + ["mel"] * 40 + ["df"] * 10
    keep = stratified_subsample(labels, 100, seed=0)
    counts = Counter(np.asarray(labels)[keep].tolist())
    assert len(keep) == 100 and counts["df"] == 10 and counts["mel"] == 40 and counts["nv"] == 50
    assert len(set(keep.tolist())) == 100
    assert (stratified_subsample(labels[:20], 100) == np.arange(20)).all()


def test_embedding_separates_separable_clusters(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 64))
    x = np.concatenate([c + rng.normal(0, 1, (40, 64)) for c in centres])
    y = np.repeat(["a", "b", "c"], 40)
    emb = tsne_embedding(x, seed=0)
    assert emb.shape == (120, 2)
    knn = KNeighborsClassifier(5).fit(emb[::2], y[::2])
    assert knn.score(emb[1::2], y[1::2]) > 0.95
    path = save_tsne(tmp_path / "t.npz", x, np.arange(1000, 1120), y, max_points=60)
    with np.load(path) as saved:
        assert saved["embedding"].shape == (60, 2)
        assert set(saved["index"].tolist()) <= set(range(1000, 1120))
        assert Counter(saved["labels"].tolist()) == {"a": 20, "b": 20, "c": 20}
