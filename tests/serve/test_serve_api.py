"""HTTP API of ``dermlens serve``: the answer for a good photo, and every way a request can be refused."""
from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import tempfile
import threading
import time

import numpy as np
import pytest
from serve_helpers import encode, lesion_photo, png_bomb, serving
from PIL import Image

from dermlens.taxonomy import default_taxonomy

PREDICT = "/api/v1/predict"


def post_image(client, data: bytes, filename="lesion.jpg", content_type="image/jpeg", fields=None, **kwargs):
    return client.post(PREDICT, files={"image": (filename, data, content_type)}, data=fields or {}, **kwargs)


# ---- success


def test_prediction_is_the_cli_json_plus_explanations(client, serve_model_dir, jpeg_file):
    from typer.testing import CliRunner

    from dermlens.cli import app as cli

    # the suite's service predictor averages no views (tta 1); the CLI's one-photo default is 8
    run = CliRunner().invoke(cli, ["predict", str(jpeg_file), "--model", str(serve_model_dir), "--format", "json",
                                   "--tta", "1"])
    assert run.exit_code == 0, run.output
    expected = json.loads(run.stdout)[0]

    response = post_image(client, jpeg_file.read_bytes(), filename="lesion.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    # Every key of the CLI's element, with the same values (the CLI names the image by its path, we by filename).
    assert set(expected) <= set(body)
    assert body["image"] == "lesion.jpg" and body["error"] == "" and body["triage"] == expected["triage"]
    assert [t["node"] for t in body["top5"]] == [t["node"] for t in expected["top5"]]
    top5 = [t["probability"] for t in body["top5"]]
    np.testing.assert_allclose(top5, [t["probability"] for t in expected["top5"]], atol=1e-6)
    assert body["probabilities"].keys() == expected["probabilities"].keys()
    ours, theirs = list(body["probabilities"].values()), list(expected["probabilities"].values())
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_prediction_names_levels_and_operating_point(client, serve_predictor, jpeg_bytes):
    body = post_image(client, jpeg_bytes).json()
    taxonomy = default_taxonomy()
    probabilities = body["probabilities"]

    assert body["names"] == {t["node"]: taxonomy[t["node"]].name for t in body["top5"]}
    assert len(body["top5"]) == 5  # the tiny model has 5 classes
    for key, level, count in (("three_way", 1, 3), ("nine_way", 2, 9)):
        rows = body[key]
        assert [r["node"] for r in rows] == taxonomy.level_nodes(level) and len(rows) == count
        assert all(r["name"] == taxonomy[r["node"]].name for r in rows)
        assert all(r["probability"] == pytest.approx(probabilities[r["node"]]) for r in rows)
    assert sum(r["probability"] for r in body["three_way"]) == pytest.approx(1.0, abs=1e-6)

    op = serve_predictor.operating_point
    point = body["operating_point"]
    assert (point["node"], point["threshold"], point["sensitivity"], point["specificity"]) == (
        op.node, op.threshold, op.sensitivity, op.specificity)
    assert point["probability"] == pytest.approx(probabilities[op.node])
    assert body["triage"] == ("refer" if probabilities[op.node] >= op.threshold else "reassure")
    # Plain words carry the actual figures.
    assert f"sensitivity {round(100 * op.sensitivity)}%" in point["summary"]
    assert f"specificity {round(100 * op.specificity)}%" in point["summary"]
    assert f"{round(100 * op.threshold)}%" in body["triage_summary"]
    assert body["triage_summary"].startswith("Refer" if body["triage"] == "refer" else "No referral")
    assert "not a diagnosis" in body["disclaimer"]


@pytest.mark.parametrize("method", ["gradcam", "input_gradient"])
def test_saliency_overlay_is_a_png_of_the_region_the_model_saw(client, jpeg_bytes, method):
    body = post_image(client, jpeg_bytes, params={"saliency": method}).json()
    saliency = body["saliency"]
    assert saliency["method"] == method
    assert saliency["target"] == body["top5"][0]["node"]
    picture = Image.open(io.BytesIO(base64.b64decode(saliency["png_base64"])))
    assert picture.format == "PNG" and picture.size == (saliency["width"], saliency["height"])
    assert saliency["view_box"] == [40, 0, 280, 240]  # the centred square of the 320x240 photo
    assert picture.width == picture.height == 240
    # The overlay is the photo where the map is cold and colour where it is hot: it differs from the plain crop.
    photo = lesion_photo().crop((40, 0, 280, 240))
    difference = np.abs(np.asarray(picture.convert("RGB"), float) - np.asarray(photo, float)).mean()
    assert difference > 1.0


def test_saliency_can_be_skipped_and_bad_method_is_refused(client, jpeg_bytes):
    assert post_image(client, jpeg_bytes, params={"saliency": "none"}).json()["saliency"] is None
    response = post_image(client, jpeg_bytes, params={"saliency": "magic"})
    assert response.status_code == 422 and "saliency must be one of" in response.json()["detail"]


def test_metadata_is_validated_and_echoed(client, jpeg_bytes):
    body = post_image(client, jpeg_bytes, fields={"age": "54", "sex": "Female", "site": "upper back"}).json()
    assert body["metadata"] == {"age": 54, "sex": "female", "site": "upper back"}
    for fields, message in (({"age": "old"}, "age must be a number"), ({"age": "130"}, "between 0 and 120"),
                            ({"sex": "x"}, "sex must be one of"), ({"site": "s" * 65}, "at most 64")):
        response = post_image(client, jpeg_bytes, fields=fields)
        assert response.status_code == 422 and message in response.json()["detail"]


def test_filename_is_reduced_to_a_safe_base_name(client, jpeg_bytes):
    body = post_image(client, jpeg_bytes, filename="../../etc/photos\\mole.jpg").json()
    assert body["image"] == "mole.jpg"


def test_upload_never_touches_temporary_files(client, monkeypatch):
    """A 2 MB photo (Starlette's own form parser would spool anything over 1 MB to disk) is read in memory."""
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noise = np.random.default_rng(0).integers(0, 256, (800, 900, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert len(data) > 2_000_000
    response = post_image(client, data, filename="big.png", content_type="image/png", params={"saliency": "none"})
    assert response.status_code == 200, response.text


# ---- refusals


def test_over_the_size_limit_is_413(make_client, jpeg_bytes):
    client = make_client(max_upload_bytes=len(jpeg_bytes) - 1)
    response = post_image(client, jpeg_bytes)
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["detail"]
    assert post_image(make_client(max_upload_bytes=len(jpeg_bytes)), jpeg_bytes).status_code == 200


def _multipart_head(boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()


def _read_status(sock: socket.socket) -> str:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_size_limit_is_enforced_while_reading_not_after(serve_predictor):
    """The server answers 413 before the client has sent the whole body: from Content-Length alone, and, for a
    chunked upload without a length, as soon as the limit has passed."""
    from dermlens.serve import create_app

    limit = 100_000
    with serving(create_app(predictor=serve_predictor, max_upload_bytes=limit)) as url:
        port = int(url.rsplit(":", 1)[1])
        boundary = "dermlensboundary"
        content_type = f"multipart/form-data; boundary={boundary}"

        # 1. A declared 1 GB body: refused from the header, not a byte of the body sent.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall((f"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                          f"Content-Length: 1000000000\r\n\r\n").encode())
            assert _read_status(sock).startswith("HTTP/1.1 413")

        # 2. Chunked: send 3x the limit in pieces, stop, and the answer is already there.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall((f"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n").encode())
            def send_chunk(payload: bytes):
                sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            send_chunk(_multipart_head(boundary))
            for _ in range(3 * limit // 16_384):
                send_chunk(b"\xff" * 16_384)
            # The body is unfinished (no last chunk, no closing boundary): only the limit can have ended it.
            assert _read_status(sock).startswith("HTTP/1.1 413")


@pytest.mark.parametrize("case", ["text", "html_named_jpg"])
def test_not_an_image_is_415(client, case):
    data = b"Dear colleague, please see the attached mole." if case == "text" else b"<html><body>hi</body></html>"
    name = "letter.txt" if case == "text" else "photo.jpg"
    response = post_image(client, data, filename=name, content_type="text/plain")
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: ") and "not a picture" in detail and "JPEG or PNG" in detail


def test_not_a_multipart_form_is_415(client, jpeg_bytes):
    response = client.post(PREDICT, content=jpeg_bytes, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_truncated_and_corrupt_images_are_422(client, jpeg_bytes):
    png = encode(lesion_photo(), "PNG")
    corrupt_png = png[:100] + bytes(len(png) - 100)  # header intact, data zeroed
    cases = {
        "truncated.jpg": (jpeg_bytes[: len(jpeg_bytes) // 2], "truncated or corrupt"),
        "corrupt.png": (corrupt_png, "truncated or corrupt"),
        "headless.png": (png[:20], "truncated or corrupt"),
        "empty.jpg": (b"", "empty file"),
    }
    for name, (data, reason) in cases.items():
        response = post_image(client, data, filename=name)
        assert response.status_code == 422, (name, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"{name}: the photo could not be read") and reason in detail, detail


def test_missing_image_field_is_422(client, jpeg_bytes):
    response = client.post(PREDICT, files={"photo": ("a.jpg", jpeg_bytes, "image/jpeg")})
    assert response.status_code == 422 and "field 'image'" in response.json()["detail"]


def test_decompression_bomb_is_refused_from_its_header(client):
    bomb = png_bomb(8000, 8000)  # 64 MP, over the 50 MP serving limit, under load_image's own 100 MP default
    assert len(bomb) < 20_000
    assert Image.open(io.BytesIO(bomb)).size == (8000, 8000)  # a valid PNG: it would decode
    response = post_image(client, bomb, filename="bomb.png", content_type="image/png")
    assert response.status_code == 422
    assert "64000000 pixels, more than the limit of 50000000" in response.json()["detail"]
    # Garbage pixel data gets the same answer, where decoding would have said "corrupt": so nothing was decoded.
    response = post_image(client, png_bomb(8000, 8000, valid_data=False), filename="bomb.png")
    assert response.status_code == 422 and "pixels, more than the limit" in response.json()["detail"]


def test_garbage_pixel_data_under_the_limit_is_corrupt(client):
    response = post_image(client, png_bomb(100, 100, valid_data=False), filename="small.png")
    assert response.status_code == 422 and "truncated or corrupt" in response.json()["detail"]


def test_pixel_limit_is_configurable(make_client, jpeg_bytes):
    response = post_image(make_client(max_pixels=320 * 240 - 1), jpeg_bytes)
    assert response.status_code == 422 and "76800 pixels, more than the limit of 76799" in response.json()["detail"]


class GatedPredictor:
    """The real predictor, except that inference waits for ``release``: holds the pool busy as long as a test needs.

    (Not ``gate``: that is the predictor's photo gate, which the service reads through this wrapper.)
    """

    def __init__(self, predictor):
        self._predictor = predictor
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def analyse(self, *args, **kwargs):
        assert self.release.wait(timeout=30), "test never released the predictor"
        return self._predictor.analyse(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after(make_client, serve_predictor, jpeg_bytes):
    gated = GatedPredictor(serve_predictor)
    client = make_client(predictor=gated, max_concurrency=1, max_queue=1, warm_up=False)
    pool = client.app.state.pool
    results = {}

    def send(key):
        results[key] = post_image(client, jpeg_bytes, params={"saliency": "none"})

    first = threading.Thread(target=send, args=("running",))
    first.start()
    while pool.stats().running < 1:  # the first request holds the only worker
        time.sleep(0.01)
    second = threading.Thread(target=send, args=("queued",))
    second.start()
    while pool.stats().waiting < 1:  # the second waits in the queue
        time.sleep(0.01)

    refused = post_image(client, jpeg_bytes)  # no room left
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "busy" in refused.json()["detail"]

    gated.release.set()
    first.join(30)
    second.join(30)
    assert results["running"].status_code == 200 and results["queued"].status_code == 200
    assert pool.stats().running == pool.stats().waiting == 0
    assert post_image(client, jpeg_bytes).status_code == 200  # and it serves again


# ---- model, health, docs, page


def test_model_endpoint_describes_the_model(client, serve_predictor):
    body = client.get("/api/v1/model").json()
    config = serve_predictor.config
    assert body["arch"] == config.arch and body["input_size"] == config.preprocessing.size
    assert body["taxonomy"] == {"version": config.taxonomy_version, "fingerprint": config.taxonomy_fingerprint}
    assert [c["node"] for c in body["classes"]] == config.class_nodes
    assert body["operating_point"]["threshold"] == config.operating_point.threshold
    assert "sensitivity" in body["operating_point"]["summary"]
    assert body["training"]["n_train"] == config.training["n_train"]
    assert body["model_card"] is None and body["figures"] is None  # the tiny model has neither
    assert body["service"]["max_upload_bytes"] == 20_000_000 and body["service"]["max_pixels"] == 50_000_000


def test_model_endpoint_includes_model_card_and_figures(make_client, serve_model_dir, tmp_path):
    from dermlens.predict import Predictor

    model_dir = tmp_path / "model"
    shutil.copytree(serve_model_dir, model_dir)
    (model_dir / "MODEL_CARD.md").write_text("# Model card\n\nHAM10000 test: 3-way balanced accuracy 0.81\n")
    (model_dir / "model_card_figures.json").write_text(json.dumps({"ham10000_test": {"auc": 0.91}}))
    body = make_client(predictor=Predictor(model_dir)).get("/api/v1/model").json()
    assert "balanced accuracy 0.81" in body["model_card"]["markdown"]
    assert body["figures"] == {"source": "model_card_figures.json", "figures": {"ham10000_test": {"auc": 0.91}}}


def test_create_app_loads_a_model_folder(serve_model_dir):
    from fastapi.testclient import TestClient

    from dermlens.serve import create_app

    with TestClient(create_app(model_dir=serve_model_dir)) as client:
        assert client.get("/healthz").json()["status"] == "ok"


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["pool"]["running"] == 0 and body["pool"]["max_queue"] == 32


def test_docs_are_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in page.text
        response = client.get(f"/static-offline-docs/{asset}")
        assert response.status_code == 200 and len(response.content) > 100_000
    schema = client.get("/openapi.json").json()["paths"][PREDICT]["post"]["requestBody"]["content"]
    assert schema["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"


def test_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'accept="image/*" capture=' in html and "Research tool, not a diagnosis" in html
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
    assert "https://" not in html and "http://" not in html


def test_serve_command_starts_uvicorn_with_the_app(serve_model_dir, monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from dermlens.cli import app as cli

    launched = {}

    def run_server(server, sockets=None):  # the port is bound before the server runs; record instead of serving
        launched.update(app=server.config.app, address=sockets[0].getsockname())

    monkeypatch.setattr(uvicorn.Server, "run", run_server)
    run = CliRunner().invoke(cli, ["serve", "--model", str(serve_model_dir), "--port", "0", "--max-upload-mb", "1"])
    assert run.exit_code == 0, run.output
    assert launched["address"][0] == "127.0.0.1" and launched["address"][1] > 0
    with TestClient(launched["app"]) as client:
        service = client.get("/api/v1/model").json()["service"]
        assert service["max_upload_bytes"] == 1_000_000


def test_serve_command_without_a_model_folder_says_so(tmp_path):
    from typer.testing import CliRunner

    from dermlens.cli import app as cli

    run = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "nothing")])
    assert run.exit_code == 2
    assert "no model config" in run.output


def test_the_non_neoplastic_answer_has_its_own_words(client, serve_predictor, jpeg_bytes, monkeypatch):
    """A photo below the referral threshold whose P(non-neoplastic) reaches the second threshold: the page says
    "not a tumour, see a doctor if it persists", not "refer" and not "no referral"."""
    from dataclasses import replace

    body = post_image(client, jpeg_bytes).json()
    p_malignant, p_rash = body["probabilities"]["malignant"], body["probabilities"]["non_neoplastic"]
    config = serve_predictor.config
    point = replace(config.operating_point, threshold=p_malignant + 1e-3, non_neoplastic_threshold=p_rash - 1e-3)
    monkeypatch.setattr(config, "operating_point", point)
    monkeypatch.setattr(config, "operating_points", {m: point for m in config.operating_points})
    body = post_image(client, jpeg_bytes).json()
    assert body["triage"] == "non_neoplastic"
    assert body["triage_call"] == "Likely a skin condition, not a tumour"
    assert body["triage_summary"].startswith("Most likely a non-neoplastic skin disease")
    assert "persists, spreads or worsens" in body["triage_summary"]
    # Just above the second threshold's reach: back to "no referral".
    monkeypatch.setattr(config, "operating_points", {m: replace(point, non_neoplastic_threshold=p_rash + 1e-3)
                                                     for m in config.operating_points})
    monkeypatch.setattr(config, "operating_point", replace(point, non_neoplastic_threshold=p_rash + 1e-3))
    assert post_image(client, jpeg_bytes).json()["triage"] == "reassure"
