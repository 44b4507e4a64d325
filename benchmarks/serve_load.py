"""A bounded load test of the HTTP service on loopback: workers, throughput, latency, memory, a reload.

For each ``--workers`` count in turn (one run, so that the counts are compared on the same
machine state), starts ``python main.py serve`` on 127.0.0.1 (an ephemeral port) with API
keys, sends the same fixed list of requests from concurrent keep-alive clients (known users,
new-listener histories, batch calls, similar artists, and a share of malformed requests),
reloads the model halfway through (``POST /admin/reload`` with one worker; ``SIGHUP`` to the
supervisor, which replaces its workers one by one, with several), reads each worker's
proportional set size (PSS: shared pages divided among the processes that map them), then
stops the server.

    python main.py --runsvd True                  # once, to save artifacts/model
    python benchmarks/serve_load.py --requests 5000 --clients 4 --workers 1 2

Writes ``benchmarks/results/serve_load.json`` and ``serve_load.png``; exits non-zero if any
response is a 5xx or a request gets no answer. A client whose kept-alive connection was
closed by a retiring worker before it answered sends the request again on a new
connection, as HTTP clients do; such retries are counted. Each client opens a new
connection every ``--requests-per-connection`` requests (100, the ``keepalive_requests`` of
nginx before 1.19.10): which worker accepts a connection is the kernel's draw, and
connections opened in one burst tend to land on one worker, so without reconnections one
draw would decide the whole run.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("user", "history", "batch", "similar", "malformed")

MALFORMED = [
    ("POST", "/recommend", b'{"user_id": 2,'),
    ("POST", "/recommend", b'{"user_id": "two", "n": 10}'),
    ("POST", "/recommend", b'{"user_id": 2, "n": 0}'),
    ("POST", "/recommend", b'{"user_id": -5, "n": 10}'),
    ("POST", "/recommend/history", b'{"artists": []}'),
    ("POST", "/recommend/history", b'{"artists": {"abc": 1}}'),
    ("POST", "/recommend/history", b'{"artists": [-1, -2]}'),
    ("POST", "/recommend/history", b'[1, 2, 3]'),
    ("POST", "/recommend/batch", b'{"users": []}'),
    ("POST", "/recommend/batch", b'{"users": [1], "histories": [{"artists": [1]}]}'),
    ("GET", "/artists/-1/similar?n=5", None),
    ("GET", "/artists/1/similar?n=100000", None),
    ("DELETE", "/recommend", None),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, port: int, workers: int, key_file: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "main.py", "serve", "--artifacts", str(model_dir),
                                "--port", str(port), "--workers", str(workers), "--api-key-file", str(key_file)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def plan(n: int, malformed: float, users: list, artists: list, seed: int) -> list[tuple]:
    """The request list: method, path, body, kind. Of the well-formed ones: 55% known users,
    15% histories, 10% batches (8 users and 2 histories), 20% similar artists."""
    rng = random.Random(seed)

    def history() -> dict:
        return {str(a): rng.randint(1, 500) for a in rng.sample(artists, rng.randint(1, 30))}

    requests = []
    for _ in range(n):
        if rng.random() < malformed:
            requests.append((*rng.choice(MALFORMED), "malformed"))
            continue
        roll = rng.random()
        if roll < 0.55:
            requests.append(("POST", "/recommend", json.dumps({"user_id": rng.choice(users), "n": 10}).encode(),
                             "user"))
        elif roll < 0.70:
            requests.append(("POST", "/recommend/history", json.dumps({"artists": history(), "n": 10}).encode(),
                             "history"))
        elif roll < 0.80:
            body = {"users": rng.sample(users, 8), "histories": [{"id": i, "artists": history()} for i in range(2)],
                    "n": 10}
            requests.append(("POST", "/recommend/batch", json.dumps(body).encode(), "batch"))
        else:
            requests.append(("GET", f"/artists/{rng.choice(artists)}/similar?n=10", None, "similar"))
    return requests


def client(port: int, key: str, requests: list[tuple], out: list[tuple], done: list[int], origin: float,
           per_connection: int) -> None:
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    connection, fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=60), True
    for number, (method, path, body, kind) in enumerate(requests):
        if number and number % per_connection == 0:
            connection.close()
            connection, fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=60), True
        started = time.perf_counter()
        retried = False
        while True:
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                status: int | str = response.status
                json.loads(payload)  # every answer, error or not, is JSON
                fresh = False
                break
            except (OSError, http.client.HTTPException, ValueError) as exc:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                # a kept-alive connection closed by a retiring worker: send once more, as HTTP clients do
                if not fresh and not retried and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
                    retried, fresh = True, True
                    continue
                status = f"no answer ({type(exc).__name__})"
                fresh = True
                break
        out.append((kind, status, time.perf_counter() - started, started - origin, retried))
        done[0] += 1


def pss_mb(pid: int) -> float:
    """The proportional set size of a process, MB (Linux ``smaps_rollup``)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no Pss in /proc/{pid}/smaps_rollup")


def worker_pids(server: subprocess.Popen, workers: int) -> list[int]:
    """The processes that serve: the server itself with one worker, else its children."""
    if workers == 1:
        return [server.pid]
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def reload(port: int, admin_key: str, server: subprocess.Popen, workers: int) -> dict:
    """Reload the served directory halfway through the load."""
    started = time.perf_counter()
    if workers == 1:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("POST", "/admin/reload", headers={"X-API-Key": admin_key})
        response = connection.getresponse()
        answer = json.loads(response.read())
        return {"how": "POST /admin/reload", "status": response.status, "seconds": time.perf_counter() - started,
                "answer": answer}
    before = set(worker_pids(server, workers))
    os.kill(server.pid, signal.SIGHUP)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the supervisor replaces every worker, each ready before the old one goes
        now = worker_pids(server, workers)
        if len(now) == workers and not before & set(now):
            return {"how": "SIGHUP to the supervisor", "status": "replaced", "seconds": time.perf_counter() - started}
        time.sleep(0.2)
    return {"how": "SIGHUP to the supervisor", "status": "workers not replaced within 180 s",
            "seconds": time.perf_counter() - started}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(model_dir: Path, workers: int, requests: list[tuple], clients: int, keys: tuple[str, str, Path],
        per_connection: int) -> dict:
    key, admin_key, key_file = keys
    port = free_port()
    server = start_server(model_dir, port, workers, key_file)
    try:
        results: list[tuple] = []
        done = [0]
        origin, client_cpu = time.perf_counter(), time.process_time()
        threads = [threading.Thread(target=client, args=(port, key, requests[i::clients], results, done, origin,
                                                         per_connection)) for i in range(clients)]
        for thread in threads:
            thread.start()
        while done[0] < len(requests) // 2:
            time.sleep(0.05)
        reloaded_at = time.perf_counter() - origin
        reloaded = reload(port, admin_key, server, workers)
        pids = worker_pids(server, workers)  # after the reload: the workers that serve the second half
        cpu_from, cpu_at = {pid: cpu_seconds(pid) for pid in pids}, time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - origin
        client_cpu = time.process_time() - client_cpu
        cores = [round((cpu_seconds(pid) - cpu_from[pid]) / (time.perf_counter() - cpu_at), 2) for pid in pids]
        memory = {"workers_pss_mb": [round(pss_mb(pid), 1) for pid in pids]}
        if workers > 1:
            memory["supervisor_pss_mb"] = round(pss_mb(server.pid), 1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        alive = connection.getresponse().status == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    statuses = Counter(str(status) for _, status, *_ in results)
    latency = {kind: np.array([s for k, _, s, *_ in results if k == kind]) * 1000 for kind in KINDS}
    failures = sum(n for status, n in statuses.items() if not status.isdigit() or status.startswith("5"))
    return {
        "workers": workers, "requests": len(results), "seconds": elapsed,
        "requests_per_second": len(results) / elapsed, "statuses": dict(statuses),
        "failures_5xx_or_unanswered": failures, "retried_on_a_closed_connection": sum(r[4] for r in results),
        "alive_after": alive, "reload": {**reloaded, "at_second": reloaded_at}, **memory,
        "load_generator_cores": client_cpu / elapsed,  # what the clients of this process took from the machine
        "worker_cores_after_reload": cores,  # how the load spread over the workers
        "workers_pss_mb_total": round(sum(memory["workers_pss_mb"]), 1),
        "latency_ms": {kind: {"count": int(len(v)), "p50": float(np.percentile(v, 50)),
                              "p99": float(np.percentile(v, 99))} for kind, v in latency.items() if len(v)},
        "timeline": [(round(t, 3), round(s * 1000, 2), k) for k, _, s, t, _ in sorted(results, key=lambda r: r[3])],
    }


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for run_ in runs:
        times = np.array([t for t, _, _ in run_["timeline"]])
        millis = np.array([m for _, m, _ in run_["timeline"]])
        edges = np.arange(0, times.max() + 1.0, 1.0)
        which = np.digitize(times, edges)
        medians = [np.median(millis[which == b]) if (which == b).any() else np.nan for b in range(1, len(edges) + 1)]
        line, = axes[0].plot(edges, medians, label=f"{run_['workers']} worker(s): median per second")
        axes[0].axvline(run_["reload"]["at_second"], color=line.get_color(), linestyle=":", linewidth=1)
    axes[0].set(xlabel="seconds into the run (dotted: the reload)", ylabel="latency, ms", title="Latency over the run")
    axes[0].legend()
    kinds = [k for k in KINDS if all(k in r["latency_ms"] for r in runs)]
    width = 0.8 / len(runs)
    for i, run_ in enumerate(runs):
        x = np.arange(len(kinds)) + i * width
        axes[1].bar(x, [run_["latency_ms"][k]["p50"] for k in kinds], width, label=f"{run_['workers']} worker(s) p50")
        axes[1].scatter(x, [run_["latency_ms"][k]["p99"] for k in kinds], marker="_", s=300, color="black",
                        label="p99" if i == 0 else None, zorder=3)
    axes[1].set_xticks(np.arange(len(kinds)) + width * (len(runs) - 1) / 2, kinds)
    axes[1].set(ylabel="latency, ms", title="Latency by endpoint")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts",
                        help="the saved model, or a main.py --artifacts directory (default: artifacts/)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests-per-connection", type=int, default=100, dest="per_connection",
                        help="requests each client sends on one kept-alive connection (default: 100)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="server worker counts to run in turn (main.py serve --workers; default: 1 2)")
    parser.add_argument("--output", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 2 <= args.requests <= 1_000_000 and 0 <= args.malformed <= 1):
        raise SystemExit("need 1 <= --clients <= 64, 2 <= --requests <= 1,000,000, 0 <= --malformed <= 1")
    if args.per_connection < 1:
        raise SystemExit("--requests-per-connection must be at least 1")
    if not all(1 <= w <= 16 for w in args.workers):
        raise SystemExit("each --workers count must be between 1 and 16")
    model_dir = args.artifacts if (args.artifacts / "manifest.json").is_file() else args.artifacts / "model"
    if not (model_dir / "manifest.json").is_file():
        raise SystemExit(f"no saved model at {model_dir}; run `python main.py --runsvd True` first")
    sys.path.insert(0, str(ROOT))
    from funnel import Recommender

    model = Recommender.load(model_dir)
    users, artists = model.user_ids_.tolist(), model.artist_ids_.tolist()
    del model
    requests = plan(args.requests, args.malformed, users, artists, args.seed)
    key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as scratch:
        key_file = Path(scratch) / "keys"
        key_file.write_text(f"{hashlib.sha256(key.encode()).hexdigest()}\n"
                            f"{hashlib.sha256(admin_key.encode()).hexdigest()} admin\n")
        runs = []
        for workers in args.workers:
            runs.append(run(model_dir, workers, requests, args.clients, (key, admin_key, key_file),
                            args.per_connection))
            summary = {k: v for k, v in runs[-1].items() if k != "timeline"}
            print(json.dumps(summary, indent=1), flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
              "clients": args.clients, "requests_per_connection": args.per_connection,
              "malformed_share": args.malformed, "runs": runs}
    by_workers = {r["workers"]: r for r in runs}
    if 1 in by_workers and 2 in by_workers:
        report["two_workers_vs_one"] = {
            "throughput": by_workers[2]["requests_per_second"] / by_workers[1]["requests_per_second"],
            "summed_pss": by_workers[2]["workers_pss_mb_total"] / by_workers[1]["workers_pss_mb_total"]}
        print(json.dumps(report["two_workers_vs_one"], indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    plot(runs, args.output.with_suffix(".png"))
    failures = sum(r["failures_5xx_or_unanswered"] for r in runs)
    if failures or not all(r["alive_after"] for r in runs):
        raise SystemExit(f"{failures} request(s) got a 5xx or no answer")


if __name__ == "__main__":
    main()
