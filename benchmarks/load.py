"""Load run against `dermlens serve`: POST /api/v1/predict at concurrency 1, 8 and 32 from 127.0.0.1.

    python benchmarks/load.py                       # starts `dermlens serve` with the bundled model on a free port
    python benchmarks/load.py --model runs/x/model  # ... with another model
    python benchmarks/load.py --url http://127.0.0.1:8000   # targets a running server
    python benchmarks/load.py --synthetic-model     # a tiny 64 px model trained on the spot (a smoke run only)

Each level sends ``--requests`` photos (synthetic lesions rendered at ``--size``, JPEG, like a downscaled phone photo)
from ``concurrency`` client threads with keep-alive connections, after a short warm-up, and prints requests/s, p50,
p95 and p99 latency of the answered requests, and what happened to the others: ``refused`` (503 with Retry-After: the
server's queue was full and it said when to come back, which a client handles), ``errors`` (any other answer but 200)
and ``dropped`` (no answer at all: a reset or time-out). Targets: no errors and none dropped at every level, every
refusal a 503 with Retry-After.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def photos(n: int, size: tuple[int, int]) -> list[bytes]:
    from dermlens.data.synthetic import SYNTHETIC_CLASSES, render_lesion

    out = []
    for k in range(n):
        image = render_lesion(SYNTHETIC_CLASSES[k % len(SYNTHETIC_CLASSES)], np.random.default_rng(k), size=max(size))
        buffer = io.BytesIO()
        image.resize(size).save(buffer, format="JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_model(folder: Path) -> Path:
    from dermlens.data.datasets import load_records
    from dermlens.data.splits import grouped_split
    from dermlens.data.synthetic import make_synthetic_dataset
    from dermlens.train.recipe import TrainConfig, train

    labels = make_synthetic_dataset(folder / "data", n_per_class=12, size=64, seed=0)
    parts = grouped_split(load_records(labels), val_fraction=0.3, test_fraction=0.0, seed=0)
    cfg = TrainConfig(image_size=64, epochs=1, batch_size=16, max_steps_per_epoch=2, num_workers=0, max_class_size=1)
    return train(parts["train"], parts["val"], folder / "run", cfg, progress=False).model_dir


def start_server(model: Path | None, port: int, args, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "dermlens", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-concurrency", str(args.max_concurrency), "--max-queue", str(args.max_queue)]
    if model is not None:
        command += ["--model", str(model)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not answer /healthz within 120 s")


def run_level(url: str, images: list[bytes], concurrency: int, n_requests: int, saliency: str, timeout: float) -> dict:
    latencies: list[float] = []
    statuses: Counter = Counter()
    server_ms: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))

    def worker():
        with httpx.Client(timeout=timeout) as client:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                started = time.perf_counter()
                try:
                    response = client.post(f"{url}/api/v1/predict", params={"saliency": saliency},
                                           files={"image": (f"photo{k}.jpg", images[k % len(images)], "image/jpeg")})
                    status = response.status_code
                    if status == 503 and "retry-after" in response.headers:
                        status = "refused"
                    timing = response.json().get("timing_ms") if status == 200 else None
                except httpx.HTTPError as error:
                    status, timing = f"dropped:{type(error).__name__}", None
                elapsed = time.perf_counter() - started
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    statuses[status] += 1
                    if timing:
                        server_ms.append(timing)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ok = statuses.get(200, 0)
    quantiles = (statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1
                 else (latencies or [float("nan")]) * 99)
    dropped = sum(v for k, v in statuses.items() if str(k).startswith("dropped"))
    refused = statuses.get("refused", 0)
    return {
        "concurrency": concurrency, "requests": sum(statuses.values()), "rps": ok / wall, "p50": quantiles[49],
        "p95": quantiles[94], "p99": quantiles[98], "refused": refused, "dropped": dropped,
        "errors": sum(statuses.values()) - ok - refused - dropped,
        "error_kinds": {str(k): v for k, v in statuses.items() if k not in (200, "refused")},
        "server_ms": {
            key: statistics.mean(t[key] for t in server_ms) for key in ("decode", "predict", "saliency", "total")
        } if server_ms else {},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="A running server, e.g. http://127.0.0.1:8000 (must be on 127.0.0.1).")
    target.add_argument("--model", type=Path, help="Model folder for the server this script starts.")
    target.add_argument("--synthetic-model", action="store_true", help="Train a tiny model first (smoke run).")
    parser.add_argument("--levels", default="1,8,32", help="Concurrency levels, comma-separated.")
    parser.add_argument("--requests", type=int, default=48, help="Requests per level (after warm-up).")
    parser.add_argument("--size", default="640x480", help="Photo size WxH.")
    parser.add_argument("--saliency", default="gradcam", choices=["gradcam", "input_gradient", "none"])
    parser.add_argument("--max-concurrency", type=int, default=1, help="Server inference threads (started server).")
    parser.add_argument("--max-queue", type=int, default=32, help="Server queue length (started server).")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    levels = [int(v) for v in args.levels.split(",")]

    process = None
    scratch = tempfile.TemporaryDirectory(prefix="dermlens-load-")
    log = open(Path(scratch.name) / "server.log", "w")
    try:
        if args.url:
            url = args.url.rstrip("/")
            if not url.startswith(("http://127.0.0.1", "http://localhost")):
                raise SystemExit("--url must point at 127.0.0.1: this is a local load test")
        else:
            model = tiny_model(Path(scratch.name)) if args.synthetic_model else args.model
            port = free_port()
            process = start_server(model, port, args, log)
            url = f"http://127.0.0.1:{port}"
        info = httpx.get(f"{url}/api/v1/model", timeout=30).json()
        print(f"server {url}: {info['arch']} at {info['input_size']} px, {len(info['classes'])} classes; "
              f"server pool {info['service']['max_concurrency']} running + {info['service']['max_queue']} queued; "
              f"{os.cpu_count()} CPUs")
        print(f"photos {width}x{height} JPEG, saliency {args.saliency}, {args.requests} requests per level")
        images = photos(8, (width, height))
        run_level(url, images, 1, 3, args.saliency, args.timeout)  # warm-up: first-call allocations, caches
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'refused':>7} {'errors':>6} {'dropped':>7}   server ms (decode/predict/saliency)")
        for level in levels:
            r = run_level(url, images, level, args.requests, args.saliency, args.timeout)
            server = r["server_ms"]
            breakdown = f"{server['decode']:.0f}/{server['predict']:.0f}/{server['saliency']:.0f}" if server else "-"
            kinds = f" {r['error_kinds']}" if r["errors"] or r["dropped"] else ""
            print(f"{r['concurrency']:>11} {r['requests']:>8} {r['rps']:>7.2f} {1000 * r['p50']:>7.0f} "
                  f"{1000 * r['p95']:>7.0f} {1000 * r['p99']:>7.0f} {r['refused']:>7} {r['errors']:>6} "
                  f"{r['dropped']:>7}{kinds}   {breakdown}", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        log.close()
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
