"""What stands between the network and the app: an optional access token, and a timeout for uploads that stall.

Both are plain ASGI middleware, so they hold for every route (page, API, docs, static files) alike.

- Access token: a request needs ``Authorization: Bearer <token>``, or the ``dermlens_token`` cookie. Phones open the
  page as ``http://host:8000/?token=<token>`` once; the page answers with that cookie (HttpOnly, SameSite=Strict),
  so the page's own API calls carry it. ``/healthz`` stays open for liveness probes. Anything else: 401.
- Stalled uploads: a client that stops sending its request body for ``idle_seconds`` gets 408 and its connection is
  closed, instead of holding a connection (and a server slot) for as long as it likes.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import socket
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

TOKEN_COOKIE = "dermlens_token"
OPEN_PATHS = frozenset({"/healthz"})


async def _send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """401 for every request without the access token (see the module docstring for how it may be given)."""

    def __init__(self, app, token: str):
        if not token:
            raise ValueError("the access token must not be empty")
        self.app = app
        self.token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
            pass
        from_cookie = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if self._matches(bearer) or self._matches(from_cookie):
            return await self.app(scope, receive, send)
        if self._matches(from_query):  # the link a phone opens once: remember the token in a cookie
            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    value = f"{TOKEN_COOKIE}={from_query}; Path=/; HttpOnly; SameSite=Strict"
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
                await send(message)

            return await self.app(scope, receive, send_with_cookie)
        await _send_json(send, 401, "this dermlens service needs its access token: open the page as /?token=TOKEN "
                         "or send the header 'Authorization: Bearer TOKEN'", [(b"www-authenticate", b"Bearer")])


class StalledUploadGuard:
    """408 (and the connection closed) when a request body stops arriving for ``idle_seconds``."""

    def __init__(self, app, idle_seconds: float = 30.0):
        self.app = app
        self.idle_seconds = idle_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"stalled": False, "started": False}

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), self.idle_seconds)
            except asyncio.TimeoutError:
                state["stalled"] = True
                return {"type": "http.disconnect"}  # the app stops reading, as if the client had gone

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                if state["stalled"]:  # our 408 goes out instead of the app's answer to a "disconnect"
                    return
                state["started"] = True
            if state["stalled"] and not state["started"]:
                return
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except Exception:
            if not state["stalled"]:
                raise
        if state["stalled"] and not state["started"]:
            await _send_json(send, 408, f"the upload stalled (nothing received for {self.idle_seconds:g} s)",
                             [(b"connection", b"close")])


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, or OSError (port taken, no such address) before anything is said."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
