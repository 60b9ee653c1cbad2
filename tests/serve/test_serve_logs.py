"""`dermlens serve --token`: the token never reaches a log, the access log included (captured from uvicorn's own
logging, set up as `dermlens serve` sets it up)."""
from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

import pytest
from serve_helpers import serving_with

TOKEN = "s3cret-Token_123"


@pytest.fixture()
def captured_log():
    """Every record uvicorn's loggers emit, formatted by uvicorn's own formatters, into one string buffer."""
    buffer = io.StringIO()
    added = []

    def attach():
        for name in ("uvicorn.access", "uvicorn.error"):
            logger = logging.getLogger(name)
            handler = logging.StreamHandler(buffer)
            handler.setFormatter(logger.handlers[0].formatter if logger.handlers else logging.Formatter())
            logger.addHandler(handler)
            added.append((logger, handler))

    yield buffer, attach
    for logger, handler in added:
        logger.removeHandler(handler)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_access_log_never_holds_the_token(serve_predictor, captured_log):
    from dermlens.serve import create_app
    from dermlens.serve.logs import redact_tokens

    buffer, attach = captured_log
    app = create_app(predictor=serve_predictor, token=TOKEN)
    with serving_with(app, log_level="info", after_config=lambda: (redact_tokens(TOKEN), attach())) as url:
        assert get(f"{url}/?token={TOKEN}") == 200  # the link a phone opens once
        assert get(f"{url}/api/v1/model?lang=en&token={TOKEN}") == 200
        assert get(f"{url}/api/v1/model?token=wrong-guess") == 401  # a wrong guess is nobody's business either
    log = buffer.getvalue()
    assert log.count("GET /") >= 3, log  # the requests were logged...
    assert "token=[redacted]" in log and "lang=en" in log
    assert TOKEN not in log and "wrong-guess" not in log  # ...without the token


def test_the_filter_redacts_the_token_anywhere_in_a_message():
    from dermlens.serve.logs import TokenRedaction

    redaction = TokenRedaction(TOKEN)
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "bad request %s from %s",
                               (f"/x?a=1&token={TOKEN}", "10.0.0.1"), None)
    redaction.filter(record)
    assert record.getMessage() == "bad request /x?a=1&token=[redacted] from 10.0.0.1"
    record = logging.LogRecord("dermlens", logging.INFO, __file__, 1, f"Authorization: Bearer {TOKEN}", None, None)
    redaction.filter(record)
    assert TOKEN not in record.getMessage()
