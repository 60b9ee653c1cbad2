"""The photo gate (issue 14): each verdict on hand-made and generated inputs, its fields in CSV/JSON and the web
API, thresholds saved and loaded with the model, and ``--no-gate``."""
from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from dermlens.data.synthetic import render_lesion
from dermlens.gate import Gate, GateThresholds, QualityThresholds
from dermlens.gate.data import degrade, generated
from dermlens.gate.gate import OodModel
from dermlens.models.embedding_head import EmbeddingHead
from dermlens.gate.quality import measure

pytest.importorskip("skimage", reason="scikit-image (the test extra) provides the non-skin sample photos")


def lesion(size: int = 128, seed: int = 0) -> Image.Image:
    return render_lesion("melanocytic_nevus", np.random.default_rng(seed), size=size)


def pixels(images, size: int = 64) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(i.convert("RGB").resize((size, size), Image.BILINEAR))).permute(2, 0, 1).float() / 255
                        for i in images])


# ---- classical measures and verdicts (no fitted heads) --------------------------------------------------------


def test_quality_measures_follow_known_degradations():
    good = lesion()
    focus = [m.focus for m in measure(pixels([good, good.filter(ImageFilter.GaussianBlur(2)),
                                               good.filter(ImageFilter.GaussianBlur(6))], 128))]
    assert focus[0] > 5 * focus[1] and focus[0] > 5 * focus[2]  # blurred: only 8-bit quantisation detail is left
    over, under = measure(pixels([degrade(good, "overexposed", 8.0), degrade(good, "underexposed", 0.04)]))
    assert over.overexposed > 0.5 and over.underexposed == 0
    assert under.underexposed > 0.5 and under.overexposed == 0
    (sized,) = measure(pixels([good]), shorter_sides=[32])
    assert sized.resolution == pytest.approx(0.5)


def test_unfitted_gate_gives_each_classical_verdict():
    gate = Gate(GateThresholds(QualityThresholds(min_focus=0.05)))
    good = lesion()
    cases = {
        "ok": (good, 128),
        "not_skin": (generated("flat", np.random.default_rng(0)), 256),
        "poor_quality:overexposed": (degrade(good, "overexposed", 4.5), 128),
        "poor_quality:underexposed": (degrade(good, "underexposed", 0.1), 128),
        "poor_quality:out_of_focus": (good.filter(ImageFilter.GaussianBlur(12)), 128),
        "poor_quality:low_resolution": (good.resize((16, 16)), 16),
    }
    verdicts = gate.verdicts(pixels([c[0] for c in cases.values()]), shorter_sides=[c[1] for c in cases.values()])
    assert [v.quality for v in verdicts] == list(cases)
    assert [v.triage for v in verdicts] == [None, "retake", "retake", "retake", "retake", "retake"]
    assert all(v.advice for v in verdicts[1:]) and "focus" in verdicts[4].advice
    assert all(v.ood_score is None for v in verdicts)  # unfitted: no out-of-distribution score


def test_fitted_gate_order_skin_then_quality_then_distribution():
    """A hand-made gate: the skin head reads feature 0, the training embeddings are a unit ball at the origin."""
    d = 8
    head = EmbeddingHead.from_tensors(torch.tensor([10.0] + [0.0] * (d - 1)), torch.tensor([0.0]))
    ood = OodModel(torch.zeros(d), torch.eye(d)[:2], torch.ones(2), torch.tensor(1.0))
    gate = Gate(GateThresholds(QualityThresholds(min_focus=0.05), min_p_skin=0.5, max_ood_distance=2.0), head, ood)
    good = lesion()
    near, far = torch.zeros(d), torch.full((d,), 5.0)
    near[0], far[0] = 0.5, 5.0  # both read as skin (p > 0.99)
    not_skin = torch.zeros(d)
    not_skin[0] = -1.0
    batch = pixels([good, good, good, good.filter(ImageFilter.GaussianBlur(12)), good.filter(ImageFilter.GaussianBlur(12))], 128)
    verdicts = gate.verdicts(batch, torch.stack([near, far, not_skin, near, not_skin]))
    assert [v.quality for v in verdicts] == ["ok", "out_of_distribution", "not_skin", "poor_quality:out_of_focus", "not_skin"]
    assert [v.triage for v in verdicts] == [None, "cannot_assess", "retake", "retake", "retake"]
    assert verdicts[0].ood_score < 1 < verdicts[1].ood_score


# ---- fitted on the tiny model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated_model_dir(tiny_model_dir, synthetic_labels_csv, tmp_path_factory):
    """The session's tiny model with a gate fitted on the synthetic lesions and the fit part of the non-skin set."""
    from dermlens.gate.fit import fit_gate
    from dermlens.predict import Predictor

    folder = tmp_path_factory.mktemp("gated") / "model"
    shutil.copytree(tiny_model_dir, folder)
    predictor = Predictor(folder, gate=False)
    gate, info = fit_gate(predictor, [synthetic_labels_csv.parent], per_dataset=60, progress=False)
    gate.save(folder, predictor.config)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, synthetic_parts):
    """A lesion like the model's training photos (the synthetic set's test part), a flat picture, a text picture and
    the cat (a test-part photo of the non-skin set: never fitted on)."""
    from dermlens.gate.data import non_skin_photos

    root = tmp_path_factory.mktemp("gate-photos")
    rng = np.random.default_rng(5)
    cat = next(p for p in non_skin_photos("test", variants_per_photo=1, generated_per_kind=0) if p.kind == "skimage:chelsea")
    files = {"lesion.png": Image.open(synthetic_parts["test"][0].path).convert("RGB"), "flat.png": generated("flat", rng), "text.png": generated("text", rng),
             "cat.png": cat.image}
    for name, image in files.items():
        image.save(root / name)
    return root


def test_thresholds_are_saved_and_loaded_with_the_model(gated_model_dir):
    from dermlens.predict import Predictor

    config = json.loads((gated_model_dir / "config.json").read_text())
    assert config["gate"]["file"] == "gate.safetensors" and (gated_model_dir / "gate.safetensors").is_file()
    assert "operating_point" in config  # beside the operating points
    saved = config["gate"]["thresholds"]
    gate = Predictor(gated_model_dir).gate
    assert gate.fitted and gate.thresholds.to_dict() == saved
    assert 0 < saved["min_p_skin"] <= 0.5 and saved["max_ood_distance"] > 0 and saved["min_focus"] > 0
    assert saved["max_overexposed"] <= 0.5 and saved["max_underexposed"] <= 0.5


def test_fitted_gate_stops_non_skin_and_passes_a_lesion(gated_model_dir, photos):
    from dermlens.predict import Predictor

    predictor = Predictor(gated_model_dir)
    by_name = {p.image.rsplit("/", 1)[-1]: p for p in predictor.predict(sorted(map(str, photos.iterdir())))}
    assert by_name["lesion.png"].quality == "ok" and by_name["lesion.png"].triage in ("refer", "reassure")
    for name in ("flat.png", "text.png", "cat.png"):
        assert by_name[name].quality == "not_skin", name
        assert by_name[name].triage == "retake" and by_name[name].advice
    assert all(p.ood_score is not None for p in by_name.values())


def run_predict(model_dir, photos, *options):
    from dermlens.cli import app

    result = CliRunner().invoke(app, ["predict", "--model", str(model_dir), "--workers", "0", *options,
                                      *sorted(map(str, photos.iterdir()))])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_and_json_carry_quality_and_ood_score(gated_model_dir, photos):
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader(io.StringIO(run_predict(gated_model_dir, photos)))}
    assert rows["flat.png"]["quality"] == "not_skin" and rows["flat.png"]["triage"] == "retake"
    assert rows["lesion.png"]["quality"] == "ok" and rows["lesion.png"]["triage"] in ("refer", "reassure")
    assert all(float(r["ood_score"]) >= 0 for r in rows.values())
    items = {d["image"].rsplit("/", 1)[-1]: d for d in json.loads(run_predict(gated_model_dir, photos, "--format", "json"))}
    assert items["cat.png"]["quality"] == "not_skin" and items["cat.png"]["advice"]
    assert items["lesion.png"]["ood_score"] == pytest.approx(float(rows["lesion.png"]["ood_score"]), abs=1e-3)


def test_no_gate_is_recorded_in_the_output(gated_model_dir, photos):
    rows = list(csv.DictReader(io.StringIO(run_predict(gated_model_dir, photos, "--no-gate"))))
    assert {r["quality"] for r in rows} == {"not_checked"}
    assert {r["triage"] for r in rows} <= {"refer", "reassure"} and all(r["ood_score"] == "" for r in rows)


def test_a_model_without_a_gate_still_answers_with_classical_checks(tiny_model_dir, photos):
    from dermlens.predict import Predictor

    predictor = Predictor(tiny_model_dir)
    assert not predictor.gate.fitted
    flat, lesion_prediction = predictor.predict([str(photos / "flat.png"), str(photos / "lesion.png")])
    assert flat.quality == "not_skin" and flat.triage == "retake"  # blank: no contrast at all
    assert lesion_prediction.quality == "ok" and lesion_prediction.ood_score is None


def test_web_api_answers_a_non_skin_photo_with_what_to_do(gated_model_dir, photos):
    from fastapi.testclient import TestClient

    from dermlens.predict import Predictor
    from dermlens.serve import create_app

    with TestClient(create_app(predictor=Predictor(gated_model_dir))) as client:
        cat = (photos / "cat.png").read_bytes()
        response = client.post("/api/v1/predict", files={"image": ("cat.png", cat, "image/png")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["triage"] == "retake" and body["quality"] == "not_skin"
        assert body["gate"]["stopped"] and body["gate"]["verdict"] == "not_skin"
        assert "skin" in body["triage_summary"] and body["triage_summary"] == body["advice"]
        assert body["saliency"] is None  # no heat map over a photo the model does not answer for
        model = client.get("/api/v1/model").json()
        assert model["gate"]["fitted"] and model["gate"]["thresholds"]["max_ood_distance"] > 0
