"""The HTTP service, started as a real uvicorn server on loopback and called over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: object | bytes | None = None, timeout: float = 30.0
         ) -> tuple[int, dict]:
    """``(status, JSON body)`` of a GET (no body) or a JSON POST."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    model_dir = fitted.save(tmp_path_factory.mktemp("served") / "model")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--artifacts", str(model_dir.parent), "--port", str(port),
         "--max-n", "50"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            call(base, "/health", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not start:\n{process.communicate()[0]}")
            time.sleep(0.2)
    yield base
    process.terminate()
    output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output


def test_health_describes_the_model(server, fitted):
    status, body = call(server, "/health")
    assert status == 200
    assert body["data_fingerprint"] == fitted.fingerprint_
    assert body["n_users"] == len(fitted.user_ids_) and body["n_artists"] == len(fitted.artist_ids_)
    assert body["format_version"] >= 1 and body["max_n"] == 50


def test_recommend_known_user_with_explanations(server, fitted, synth):
    user = int(synth.user_ids[2])
    status, body = call(server, "/recommend", {"user_id": user, "n": 7})
    assert status == 200
    recs = body["recommendations"]
    expected = fitted.recommend(user, n=7)
    assert [r["artist_id"] for r in recs] == expected["artist_id"].tolist()
    assert [r["rank"] for r in recs] == list(range(1, 8))
    seen = set(synth.interactions.query("user_id == @user")["artist_id"])
    assert not seen & {r["artist_id"] for r in recs}
    explanation = recs[0]["explanation"]
    assert set(explanation) == {"sources", "because", "contributions", "reason"}
    assert {b["artist_id"] for b in explanation["because"]} <= seen


def test_recommend_for_a_new_listener(server):
    status, body = call(server, "/recommend/history", {"artists": [1, 5, 9, 999999], "n": 5})
    assert status == 200 and body["unknown_artists"] == [999999]
    assert len(body["recommendations"]) == 5
    status, body = call(server, "/recommend/history", {"artists": {"1": 30, "5": 2}, "n": 3, "explain": False})
    assert status == 200 and "explanation" not in body["recommendations"][0]


def test_similar_artists(server):
    status, body = call(server, "/artists/1/similar?n=4")
    assert status == 200 and len(body["similar"]) == 4
    assert 1 not in {a["artist_id"] for a in body["similar"]}


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend", {"user_id": 999999, "n": 5}, 404, "unknown user"),
    ("/recommend", {"user_id": 1, "n": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"user_id": 1, "n": 51}, 422, "between 1 and 50"),
    ("/recommend", {"user_id": 1, "n": 2.5}, 422, "valid integer"),
    ("/recommend", {"user_id": "one"}, 422, "valid integer"),
    ("/recommend", b'{"user_id": 1,', 422, "JSON decode error"),
    ("/recommend/history", {"artists": [999998, 999999]}, 422, "none of the history"),
    ("/recommend/history", {"artists": []}, 422, "empty"),
    ("/recommend/history", {"artists": {"x": 3}}, 422, "must be integers"),
    ("/recommend/history", {"artists": {"1": -3}}, 422, "> 0"),
    ("/recommend/history", b'{"artists": [' + b"1," * 600_000 + b'1]}', 413, "too large"),
    ("/artists/999999/similar", None, 404, "unknown artist"),
    ("/artists/1/similar?n=0", None, 422, "between 1 and 50"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_json_errors(server, path, body, status, message):
    got, payload = call(server, path, body)
    assert got == status
    assert message in json.dumps(payload)
    assert call(server, "/health")[0] == 200  # and it keeps serving


def test_openapi_docs(server):
    status, schema = call(server, "/openapi.json")
    assert status == 200
    assert {"/health", "/recommend", "/recommend/history", "/artists/{artist_id}/similar"} <= set(schema["paths"])
    with urllib.request.urlopen(server + "/docs", timeout=10) as response:
        assert response.status == 200


def test_concurrent_load_with_malformed_requests_gets_no_5xx(server, synth):
    rng = np.random.default_rng(0)
    good = [("/recommend", {"user_id": int(u), "n": 5}) for u in rng.choice(synth.user_ids, 120)]
    good += [("/recommend/history", {"artists": rng.choice(synth.artist_ids, 8).tolist(), "n": 5})
             for _ in range(60)]
    bad = [("/recommend", b'{"user_id":'), ("/recommend", {"user_id": -1}), ("/recommend/history", b"[1]"),
           ("/recommend/history", {"artists": {"a": "b"}}), ("/artists/0/similar?n=-3", None)] * 12
    requests = good + bad
    order = rng.permutation(len(requests))
    statuses: list[int] = []

    def worker(part: np.ndarray) -> None:
        for i in part:
            path, body = requests[i]
            statuses.append(call(server, path, body)[0])

    threads = [threading.Thread(target=worker, args=(order[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == len(requests)
    assert not [s for s in statuses if s >= 500]
    assert statuses.count(200) == len(good)
