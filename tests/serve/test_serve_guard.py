"""The web service on a network: an optional access token (401 without it), TLS passed through to uvicorn, a warning
when it listens beyond loopback without a token, stalled uploads timed out, the port bound before "serving on" is
printed, and HEAD / answered."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import serving
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.serve.guard import is_loopback

PREDICT = "/api/v1/predict"
TOKEN = "correct-horse-battery"


def test_head_of_the_page_is_200(client):
    assert client.head("/").status_code == 200
    assert client.get("/").status_code == 200


def test_with_a_token_every_route_but_healthz_needs_it(make_client, jpeg_bytes):
    client = make_client(token=TOKEN, warm_up=False)
    photo = {"image": ("a.jpg", jpeg_bytes, "image/jpeg")}
    for method, path, kwargs in (("get", "/", {}), ("get", "/api/v1/model", {}), ("post", PREDICT, {"files": photo}),
                                 ("get", "/docs", {}), ("head", "/", {})):
        refused = getattr(client, method)(path, **kwargs)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = getattr(client, method)(path, headers={"Authorization": "Bearer nope"}, **kwargs)
        assert wrong.status_code == 401, path
    assert client.get("/healthz").status_code == 200  # liveness probes need no token
    answered = client.post(PREDICT, files=photo, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200 and answered.json()["image"]


def test_a_phone_opens_the_page_once_with_the_token_and_the_cookie_carries_it(make_client, jpeg_bytes):
    client = make_client(token=TOKEN, warm_up=False)
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers["set-cookie"]
    # the page's own API calls now carry the cookie
    assert client.post(PREDICT, files={"image": ("a.jpg", jpeg_bytes, "image/jpeg")}).status_code == 200
    client.cookies.clear()
    assert client.get("/api/v1/model").status_code == 401


def test_a_stalled_upload_gets_408_and_its_connection_is_closed(serve_predictor):
    from dermlens.serve import create_app

    with serving(create_app(serve_predictor, warm_up=False, upload_timeout=1.0)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            started = time.monotonic()
            received = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                received += chunk
            waited = time.monotonic() - started
        assert received.startswith(b"HTTP/1.1 408"), received[:200]
        assert b"stalled" in received
        assert 0.9 < waited < 8
        assert httpx.get(f"{url}/healthz").status_code == 200  # the service goes on


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("::")


def test_a_taken_port_is_told_before_any_serving_on_and_open_binding_warns(serve_model_dir):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--model", str(serve_model_dir), "--host", "0.0.0.0",
                                          "--port", str(port)], env={"DERMLENS_TOKEN": ""})
    assert result.exit_code == 3
    assert "serving on" not in result.output
    assert f"cannot listen on 0.0.0.0:{port}" in result.stderr
    assert "without an access token" in result.stderr


def test_tls_key_without_certificate_is_one_line(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not used")
    result = CliRunner().invoke(app, ["serve", "--ssl-keyfile", str(key)])
    assert result.exit_code == 2 and "--ssl-certfile" in result.stderr


def test_serve_with_tls_and_a_token_end_to_end(serve_model_dir, tmp_path):
    """The real command: https with the given certificate, 401 without the token, 200 with it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                           str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr.decode()[:200]}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    trust = ssl.create_default_context(cafile=str(cert))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DERMLENS_TOKEN": TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "dermlens", "serve", "--model", str(serve_model_dir), "--port", str(port),
         "--ssl-keyfile", str(key), "--ssl-certfile", str(cert)],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        first_line = server.stderr.readline()
        assert first_line.startswith(f"dermlens serving on https://127.0.0.1:{port}/"), first_line
        deadline = time.monotonic() + 60
        while True:
            try:
                refused = httpx.get(f"https://127.0.0.1:{port}/api/v1/model", verify=trust, timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        assert refused.status_code == 401
        answered = httpx.get(f"https://127.0.0.1:{port}/api/v1/model", verify=trust, timeout=5,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert answered.status_code == 200 and "classes" in answered.json()
    finally:
        server.terminate()
        server.wait(timeout=30)
