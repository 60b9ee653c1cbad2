"""``dermlens serve``: an HTTP API and a page for clinicians (FastAPI). See :func:`create_app`."""

from dermlens.extras import require

# The web service is the optional [serve] extra. Checked here, before any submodule imports it, so a missing
# package is one line naming the extra instead of a traceback from deep inside a submodule.
for _module in ("fastapi", "fastapi_offline", "python_multipart", "uvicorn"):
    require(_module, "serve", "dermlens serve")

from dermlens.serve.app import create_app

__all__ = ["create_app"]
