"""Predict tests write ONNX exports (engine="auto" makes one on first use) to a private cache, never to ~/.cache."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_export_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("dermlens-cache")
    saved = os.environ.get("DERMLENS_CACHE")
    os.environ["DERMLENS_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("DERMLENS_CACHE", None)
    else:
        os.environ["DERMLENS_CACHE"] = saved
