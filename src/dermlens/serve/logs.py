"""The service's logs never hold the access token.

A phone opens the page once as ``/?token=TOKEN`` (see :mod:`dermlens.serve.guard`), and uvicorn's access log
writes every request line with its query string: the token would sit in clear in every log file and terminal
scroll-back. :func:`redact_tokens` puts a filter on uvicorn's loggers and their handlers that rewrites any
``token=`` query parameter, and the token itself wherever it appears, to ``[redacted]`` before a record is
formatted. Call it after ``uvicorn.Config(...)`` (which sets uvicorn's logging up) and before the server runs.
"""
from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
QUERY_TOKEN = re.compile(r"([?&;]token=)[^&;\s\"']*", re.IGNORECASE)
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "dermlens")


class TokenRedaction(logging.Filter):
    """Rewrites ``token=...`` query parameters and the token itself in a record's message and arguments (uvicorn's
    access formatter reads the request line from the arguments, so they are rewritten in place, not merged)."""

    def __init__(self, token: str | None = None):
        super().__init__()
        self.token = token or None

    def redact(self, text: str) -> str:
        text = QUERY_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
        return text.replace(self.token, REDACTED) if self.token else text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self.redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def redact_tokens(token: str | None) -> TokenRedaction:
    """Install the filter on uvicorn's and dermlens's loggers and on their handlers (records that propagate to a
    handler from a child logger pass its filters too)."""
    redaction = TokenRedaction(token)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addFilter(redaction)
        for handler in logger.handlers:
            handler.addFilter(redaction)
    return redaction
