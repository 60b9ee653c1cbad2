"""``dermlens serve``: an HTTP API and a page for clinicians (FastAPI). See :func:`create_app`."""

from dermlens.serve.app import create_app

__all__ = ["create_app"]
