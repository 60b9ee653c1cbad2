"""The web API answers a photo the gate stops with what to do, and no probabilities (as `predict` writes it)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def test_a_stopped_photo_gets_no_bars_and_no_probability(make_client):
    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(buffer, "PNG")
    response = make_client().post("/api/v1/predict", files={"image": ("flat.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["triage"] == "retake" and body["gate"]["stopped"] and body["triage_summary"] == body["advice"]
    assert body["probabilities"] == {} and body["top5"] == [] and body["names"] == {}
    assert body["three_way"] == [] and body["nine_way"] == [] and body["operating_point"]["probability"] is None
    assert body["saliency"] is None
