"""Fixtures for the web service tests: the suite's tiny model (tests/conftest.py), a photo, clients, a live server.

The model is EfficientNet-Lite0 at 64 px trained for a few steps: its answers mean nothing, but it is a real model
folder that goes through the same loading, inference and saliency code as the bundled one.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import encode, lesion_photo, serving


@pytest.fixture(scope="session")
def serve_model_dir(tiny_model_dir) -> Path:
    """The suite's one tiny model (tests/conftest.py); treat it as read-only."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def serve_predictor(serve_model_dir):
    from dermlens.predict import Predictor

    return Predictor(serve_model_dir)


@pytest.fixture()
def make_client(serve_predictor):
    """``make_client(**create_app_options)`` -> a started TestClient; closed (and its pool shut down) after the test."""
    from fastapi.testclient import TestClient

    from dermlens.serve import create_app

    clients = []

    def make(**options):
        options.setdefault("predictor", serve_predictor)
        client = TestClient(create_app(**options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client):
    return make_client()


# ---- photos and server


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return encode(lesion_photo(), "JPEG", quality=90)


@pytest.fixture(scope="session")
def jpeg_file(tmp_path_factory, jpeg_bytes) -> Path:
    path = tmp_path_factory.mktemp("photos") / "lesion.jpg"
    path.write_bytes(jpeg_bytes)
    return path


@pytest.fixture(scope="session")
def live_server(serve_predictor):
    from dermlens.serve import create_app

    with serving(create_app(predictor=serve_predictor)) as url:
        yield url
