"""The model that ships inside the package: it loads, it matches the taxonomy, and its answers are well formed.

Accuracy is measured by benchmarks/model_card.py, not asserted here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.synthetic import SYNTHETIC_CLASSES, render_lesion
from dermlens.models import read_config
from dermlens.predict import BUNDLED_MODEL_DIR, Predictor, bundled_model_dir
from dermlens.taxonomy import default_taxonomy

HAM10000_NODES = {
    "melanocytic_nevus", "melanoma", "benign_keratosis", "basal_cell_carcinoma",
    "keratinocyte_intraepithelial_neoplasia", "dermatofibroma", "vascular_lesion",
}


@pytest.fixture(scope="module")
def bundled() -> Predictor:
    return Predictor()  # no argument: the bundled model


def test_bundled_model_ships_as_safetensors_and_json_under_30_mb():
    folder = bundled_model_dir()
    assert folder == BUNDLED_MODEL_DIR
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "MODEL_CARD.md"} <= set(files)
    assert files["model.safetensors"] + files["config.json"] < 30 * 1024 * 1024
    assert not [name for name in files if name.endswith((".pt", ".pth", ".pkl", ".bin"))]
    json.loads((folder / "config.json").read_text())


def test_config_is_consistent_with_the_taxonomy():
    config = read_config(bundled_model_dir())
    taxonomy = default_taxonomy()
    assert config.taxonomy_fingerprint == taxonomy.fingerprint()
    assert config.taxonomy_version == taxonomy.version
    nodes = config.class_nodes
    assert len(nodes) == len(set(nodes))
    assert set(nodes) <= set(taxonomy)
    # Every HAM10000 diagnosis it was trained on is one of its classes (so 7-class figures are meaningful).
    assert HAM10000_NODES <= set(nodes)
    # One operating point per modality, each chosen on that modality's validation photos, and a pooled one.
    assert set(config.operating_points) == {"dermoscopic", "clinical"}
    for op in [config.operating_point, *config.operating_points.values()]:
        assert op.node == "malignant" and 0 < op.threshold < 1
        assert "validation" in op.chosen_on and op.sensitivity >= op.target_sensitivity
    # The paper's 3-way question has an answer: the model has non-neoplastic training classes.
    assert {taxonomy.ancestor_at_level(n, 1) for n in nodes} == {"benign", "malignant", "non_neoplastic"}
    assert config.modality_head and (bundled_model_dir() / config.modality_head["file"]).is_file()


def test_predictions_on_generated_images_are_well_formed():
    bundled = Predictor(gate=False)  # drawn lesions: the photo gate is tested on its own (tests/gate)
    rng = np.random.default_rng(0)
    images = [render_lesion(label, rng, size=160) for label in SYNTHETIC_CLASSES]
    taxonomy = bundled.taxonomy
    # A node's probability is the sum of its children's, unless a training class sits at the node itself (its
    # own-only images, or a whole subtree kept as one class, e.g. malignant_dermal).
    class_nodes = {c.node for c in bundled.config.classes}
    class_prob_of = lambda p: dict((n, q) for n, q in p.top5)  # noqa: E731
    for prediction in bundled.predict(images):
        assert prediction.error == ""
        assert prediction.triage in ("refer", "reassure")
        p = prediction.probabilities
        assert set(p) == set(taxonomy)
        assert p["root"] == pytest.approx(1.0, abs=1e-6)
        assert sum(p[n] for n in taxonomy.level_nodes(1)) == pytest.approx(1.0, abs=1e-6)
        for node in taxonomy:
            children = taxonomy.children(node)
            if children and node not in class_nodes:
                assert p[node] == pytest.approx(sum(p[c] for c in children), abs=1e-6)
        assert [q for _, q in prediction.top5] == sorted((q for _, q in prediction.top5), reverse=True)
        assert len(prediction.top5) == 5
        op = bundled.config.operating_point_for(prediction.modality)  # the recognised modality's own point
        assert prediction.modality in ("dermoscopic", "clinical") and prediction.modality_source == "recognised"
        assert (prediction.triage == "refer") == (p["malignant"] >= op.threshold)
        assert all(p[n] >= q - 1e-6 for n, q in class_prob_of(prediction).items())


def test_model_card_command_prints_the_card():
    result = CliRunner().invoke(app, ["model-card"])
    assert result.exit_code == 0, result.output
    assert "not a medical device" in result.output
    assert "HAM10000" in result.output


def test_the_bundled_model_card_is_generated_from_the_repository_s_one():
    """One model card: the root MODEL_CARD.md. The bundled folder's copy is made from it (`make model-card`)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "MODEL_CARD.md"
    bundled = bundled_model_dir() / "MODEL_CARD.md"
    assert bundled.read_text() == root.read_text(), f"{bundled} differs from {root}: run `make model-card`"
