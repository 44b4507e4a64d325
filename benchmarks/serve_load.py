"""A bounded load test of the HTTP service on loopback: throughput, latency, errors.

Starts ``python main.py serve`` on 127.0.0.1 (an ephemeral port) with a saved model, sends a
fixed number of requests from a few concurrent keep-alive clients (known users, new-listener
histories, similar artists, and a share of malformed requests), then stops the server.

    python main.py --runsvd True                  # once, to save artifacts/model
    python benchmarks/serve_load.py --requests 5000 --clients 4 --malformed 0.1
    python benchmarks/serve_load.py --requests 5000 --clients 4 --workers 2 \
        --output benchmarks/results/serve_load_2_workers.json

Exits non-zero if any response is a 5xx or a request gets no answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

MALFORMED = [
    ("POST", "/recommend", b'{"user_id": 2,'),
    ("POST", "/recommend", b'{"user_id": "two", "n": 10}'),
    ("POST", "/recommend", b'{"user_id": 2, "n": 0}'),
    ("POST", "/recommend", b'{"user_id": -5, "n": 10}'),
    ("POST", "/recommend/history", b'{"artists": []}'),
    ("POST", "/recommend/history", b'{"artists": {"abc": 1}}'),
    ("POST", "/recommend/history", b'{"artists": [-1, -2]}'),
    ("POST", "/recommend/history", b'[1, 2, 3]'),
    ("GET", "/artists/-1/similar?n=5", None),
    ("GET", "/artists/1/similar?n=100000", None),
    ("DELETE", "/recommend", None),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, port: int, workers: int = 1) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "main.py", "serve", "--artifacts", str(model_dir),
                                "--port", str(port), "--workers", str(workers)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def plan(n: int, malformed: float, users: list[int], artists: list[int], seed: int) -> list[tuple]:
    """The request list: method, path, body, kind."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        roll = rng.random()
        if roll < malformed:
            method, path, body = rng.choice(MALFORMED)
            requests.append((method, path, body, "malformed"))
        elif roll < malformed + (1 - malformed) * 0.7:
            body = json.dumps({"user_id": rng.choice(users), "n": 10}).encode()
            requests.append(("POST", "/recommend", body, "user"))
        elif roll < malformed + (1 - malformed) * 0.9:
            history = {str(a): rng.randint(1, 500) for a in rng.sample(artists, rng.randint(1, 30))}
            requests.append(("POST", "/recommend/history", json.dumps({"artists": history, "n": 10}).encode(),
                             "history"))
        else:
            requests.append(("GET", f"/artists/{rng.choice(artists)}/similar?n=10", None, "similar"))
    return requests


def client(port: int, requests: list[tuple], out: list[tuple]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for method, path, body, kind in requests:
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            status = response.status
            json.loads(payload)  # every answer, error or not, is JSON
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status = f"no answer ({type(exc).__name__})"
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append((kind, status, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts",
                        help="the saved model, or a main.py --artifacts directory (default: artifacts/)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (main.py serve --workers)")
    parser.add_argument("--output", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 1_000_000 and 0 <= args.malformed <= 1):
        raise SystemExit("need 1 <= --clients <= 64, 1 <= --requests <= 1,000,000, 0 <= --malformed <= 1")
    model_dir = args.artifacts if (args.artifacts / "manifest.json").is_file() else args.artifacts / "model"
    manifest = model_dir / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"no saved model at {model_dir}; run `python main.py --runsvd True` first")
    sys.path.insert(0, str(ROOT))
    from funnel import Recommender

    model = Recommender.load(model_dir)
    users, artists = model.user_ids_.tolist(), model.artist_ids_.tolist()
    del model
    port = free_port()
    server = start_server(model_dir, port, args.workers)
    try:
        requests = plan(args.requests, args.malformed, users, artists, args.seed)
        results: list[tuple] = []
        threads = [threading.Thread(target=client, args=(port, requests[i::args.clients], results))
                   for i in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        alive = connection.getresponse().status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    statuses = Counter(str(status) for _, status, _ in results)
    latency = {kind: np.array([s for k, _, s in results if k == kind]) * 1000 for kind in
               ("user", "history", "similar", "malformed")}
    failures = sum(n for status, n in statuses.items() if not status.isdigit() or status.startswith("5"))
    report = {
        "machine": f"{platform.machine()}, {platform.python_version()}", "requests": len(results),
        "clients": args.clients, "workers": args.workers, "malformed_share": args.malformed, "seconds": elapsed,
        "requests_per_second": len(results) / elapsed, "statuses": dict(statuses),
        "failures_5xx_or_unanswered": failures, "alive_after": alive,
        "latency_ms": {kind: {"count": int(len(v)), "p50": float(np.percentile(v, 50)),
                              "p99": float(np.percentile(v, 99))} for kind, v in latency.items() if len(v)},
    }
    print(json.dumps(report, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    if failures or not alive:
        raise SystemExit(f"{failures} request(s) got a 5xx or no answer; server alive after: {alive}")


if __name__ == "__main__":
    main()
