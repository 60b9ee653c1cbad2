"""The FastAPI application: the clinician page at ``/``, the JSON API under ``/api/v1``, health, and the docs.

    create_app(model_dir="runs/x/model")  # or predictor=Predictor(...); default the bundled model

Every asset (the page, its script and style, Swagger UI and ReDoc) is served by the app itself: no CDN, so the page
works on an isolated hospital network and leaks nothing about who looks at what.
"""
from __future__ import annotations

import re
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from dermlens.data.io import ImageDecodeError
from dermlens.explain.saliency import METHODS
from dermlens.models.inference import ORIENTATION_VIEWS
from dermlens.models.modality import MODALITIES
from dermlens.predict import Predictor
from dermlens.serve.analysis import (
    DISCLAIMER,
    SERVING_MAX_PIXELS,
    analyse,
    decode_error_message,
    decode_error_status,
    model_summary,
)
from dermlens.serve.guard import StalledUploadGuard, TokenGuard
from dermlens.serve.pool import InferencePool, PoolFull
from dermlens.serve.upload import UploadError, read_form

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
SEXES = ("female", "male", "other", "unknown")

# The page loads only from this origin; images may be data: (the overlay) or blob: (the photo, shown locally).
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {"Cache-Control": "no-store"}  # results about a patient are not for shared caches

IMAGE_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "The photo (JPEG, PNG, ...)"},
                        "age": {"type": "integer", "minimum": 0, "maximum": 120, "description": "Years (optional)"},
                        "sex": {"type": "string", "enum": list(SEXES), "description": "Optional"},
                        "site": {"type": "string", "maxLength": 64, "description": "Anatomic site (optional)"},
                    },
                }
            }
        },
    },
}


class ErrorBody(BaseModel):
    """Every refusal of the API: one sentence saying what is wrong and what to do (not FastAPI's list form)."""

    detail: str


PREDICT_ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed multipart form"},
    401: {"model": ErrorBody, "description": "Missing or wrong access token (when served with --token)"},
    408: {"model": ErrorBody, "description": "The upload stalled: nothing received for --upload-timeout seconds"},
    413: {"model": ErrorBody, "description": "Upload over the size limit, refused while reading"},
    415: {"model": ErrorBody, "description": "Not an image, or not a multipart form"},
    422: {"model": ErrorBody, "description": "Corrupt, truncated or empty image; too many pixels; bad metadata"},
    503: {"model": ErrorBody, "description": "Inference queue full; retry after the Retry-After header's seconds"},
}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers={**NO_STORE, **(headers or {})})


def _clean_filename(filename: str | None) -> str:
    base = re.split(r"[\\/]", filename or "")[-1].strip()
    base = "".join(ch for ch in base if ch.isprintable())[:120]
    return base or "upload"


def _metadata(fields: dict[str, str]) -> dict:
    """Validated optional metadata (age, sex, site). Raises ValueError with a message for the user."""
    metadata: dict = {}
    if fields.get("age"):
        try:
            age = float(fields["age"])
        except ValueError:
            raise ValueError(f"age must be a number of years, got {fields['age']!r}") from None
        if not 0 <= age <= 120:
            raise ValueError(f"age must be between 0 and 120 years, got {fields['age']}")
        metadata["age"] = int(age) if age.is_integer() else age
    if fields.get("sex"):
        sex = fields["sex"].lower()
        if sex not in SEXES:
            raise ValueError(f"sex must be one of {', '.join(SEXES)}; got {fields['sex']!r}")
        metadata["sex"] = sex
    if fields.get("site"):
        if len(fields["site"]) > 64:
            raise ValueError("site must be at most 64 characters")
        metadata["site"] = fields["site"]
    if fields.get("modality") and fields["modality"] not in ("auto", *MODALITIES):
        raise ValueError(f"modality must be auto, {' or '.join(MODALITIES)}; got {fields['modality']!r}")
    return metadata


def create_app(
    predictor: Predictor | None = None,
    model_dir: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_concurrency: int = 1,
    max_queue: int = 32,
    max_pixels: int = SERVING_MAX_PIXELS,
    tta: int = ORIENTATION_VIEWS,
    warm_up: bool = True,
    token: str | None = None,
    upload_timeout: float = 30.0,
):
    """The dermlens web app.

    Args:
        predictor: a loaded :class:`~dermlens.predict.Predictor`; otherwise one is loaded from ``model_dir`` (default:
            the bundled model; raises :class:`~dermlens.predict.NoModelError` if there is none).
        max_upload_bytes: largest accepted photo; bigger uploads get 413 as soon as the limit is passed.
        max_concurrency: inference jobs running at once (threads of one process sharing one model).
        max_queue: jobs allowed to wait; beyond that requests get 503 with Retry-After.
        max_pixels: largest accepted image, checked from the file header before decoding (decompression bombs).
        tta: orientation views averaged (default all 8: a clinician gets the same answer however the photo is
            turned, for ~0.1 s more per photo; 1 turns it off).
        warm_up: run one blank photo through inference and saliency at startup.
        token: an access token every request must carry (see :mod:`dermlens.serve.guard`); None: open to all.
        upload_timeout: seconds an upload may stall (nothing received) before it gets 408 and is closed.
    """
    if predictor is None:
        # torch: every answer carries a saliency map (autograd), which then explains the very probabilities shown;
        # next to the backward pass, a faster forward pass would save little
        predictor = Predictor(model_dir, tta=tta, engine="torch")
    pool = InferencePool(max_concurrency, max_queue)
    limits = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_concurrency": max_concurrency,
              "max_queue": max_queue}

    @asynccontextmanager
    async def lifespan(_app):
        if warm_up:  # the first request should not pay for lazy imports and first-call allocations
            await pool.run(_warm_up, predictor)
        yield
        pool.shutdown()

    app = FastAPIOffline(
        title="dermlens",
        version="1",
        description=f"Skin-lesion classification over a disease taxonomy. {DISCLAIMER}",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.pool = pool
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(StalledUploadGuard, idle_seconds=upload_timeout)
    if token:
        app.add_middleware(TokenGuard, token=token)  # added last: the outermost layer, before anything is read

    @app.middleware("http")
    async def page_headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.update(PAGE_SECURITY_HEADERS)
        return response

    def busy(retry_after: int) -> JSONResponse:
        return error(
            503, f"the service is busy ({pool.max_concurrency + pool.max_queue} photos in progress); "
            f"please retry in {retry_after} s", {"Retry-After": str(retry_after)},
        )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness and queue state")
    async def healthz():
        return {"status": "ok", "model": predictor.config.arch, "pool": pool.stats().to_dict()}

    @app.get("/api/v1/model", summary="The model: classes, operating point, taxonomy, model-card figures")
    async def model_info():
        return model_summary(predictor, limits)

    @app.post(
        "/api/v1/predict",
        summary="Classify one photo",
        description=(
            "Multipart form with the photo in `image` and optional `age`, `sex`, `site`. Query `saliency`: "
            f"{', '.join(METHODS)} or none. Returns one element of `dermlens predict --format json` plus names, "
            "3-way and 9-way probabilities, the operating point in words, and a saliency overlay PNG (base64)."
        ),
        openapi_extra=IMAGE_FORM_SCHEMA,
        responses=PREDICT_ERRORS,
    )
    async def predict(request: Request, saliency: str = "gradcam"):
        if saliency not in (*METHODS, "none"):
            return error(422, f"saliency must be one of {', '.join(METHODS)} or none; got {saliency!r}")
        if pool.is_full():  # refuse before reading the upload, not after
            return busy(pool.retry_after())
        try:
            form = await read_form(request.headers, request.stream(), {"image"}, max_upload_bytes)
        except UploadError as e:
            return error(e.status, e.message)
        upload = form.files.get("image")
        if upload is None:
            return error(422, "no photo in the request: send it as a file in the form field 'image'")
        try:
            metadata = _metadata(form.fields)
        except ValueError as e:
            return error(422, str(e))
        modality = form.fields.get("modality") or None
        name = _clean_filename(upload.filename)
        try:
            body = await pool.run(
                _analyse, predictor, upload.data, name, max_pixels, None if saliency == "none" else saliency, metadata,
                None if modality == "auto" else modality,
            )
        except PoolFull as e:
            return busy(e.retry_after)
        except ImageDecodeError as e:
            return error(decode_error_status(e), decode_error_message(e))
        return JSONResponse(body, headers=NO_STORE)

    return app


def _warm_up(predictor) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 140, 120)).save(buffer, format="PNG")
    analyse(predictor, buffer.getvalue(), "warm-up.png")


def _analyse(predictor, data, name, max_pixels, saliency, metadata, modality=None):
    return analyse(predictor, data, name, max_pixels=max_pixels, saliency=saliency, metadata=metadata,
                   modality=modality)
