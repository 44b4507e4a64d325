"""The HTTP service, started as a real uvicorn server on loopback and called over HTTP."""

from __future__ import annotations

import json
import re
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
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
INT64_EDGES = [2**63 - 1, 2**63, -2**63 - 1, -2**63, 2**70]  # the last fits in no int64 either


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


def conforms(value: object, schema: dict, spec: dict) -> bool:
    """Whether ``value`` fits ``schema`` (the subset of JSON Schema FastAPI writes for responses)."""
    if "$ref" in schema:
        return conforms(value, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec)
    if "anyOf" in schema:
        return any(conforms(value, option, spec) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict) or not set(schema.get("required", ())) <= set(value):
            return False
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for key, item in value.items():
            inner = properties.get(key, extra)
            if inner is False or (inner is not True and not conforms(item, inner, spec)):
                return False
        return True
    if kind == "array":
        return isinstance(value, list) and all(conforms(item, schema.get("items", {}), spec) for item in value)
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    if kind in types:
        return isinstance(value, types[kind]) and (kind == "boolean" or not isinstance(value, bool))
    return True


def assert_documented(spec: dict, method: str, path: str, status: int, body: object) -> None:
    """The answer ``status, body`` to ``method path`` is documented, and its body fits its schema."""
    path = path.split("?")[0]
    routes = [route for route in spec["paths"] if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", route), path)]
    assert len(routes) == 1, f"no route for {path}"
    responses = spec["paths"][routes[0]][method]["responses"]
    assert str(status) in responses, f"{status} is not documented for {method.upper()} {routes[0]}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    assert conforms(body, schema, spec), f"{method.upper()} {path} -> {status} {body} does not fit {schema}"


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    model_dir = fitted.save(tmp_path_factory.mktemp("served") / "model")
    # the log goes to a file, not a pipe: unread, a pipe fills up (an access-log line a request) and blocks the server
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "main.py", "serve", "--artifacts", str(model_dir.parent), "--port", str(port),
             "--max-n", "50"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            call(base, "/health", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=30)
                pytest.fail(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield base
    process.terminate()
    process.wait(timeout=30)
    output = log.read_text()
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def openapi(server):
    status, spec = call(server, "/openapi.json")
    assert status == 200
    return spec


def test_health_describes_the_model(server, openapi, fitted):
    status, body = call(server, "/health")
    assert status == 200
    assert_documented(openapi, "get", "/health", status, body)
    assert body["data_fingerprint"] == fitted.fingerprint_
    assert body["n_users"] == len(fitted.user_ids_) and body["n_artists"] == len(fitted.artist_ids_)
    assert body["format_version"] >= 1 and body["max_n"] == 50


def test_recommend_known_user_with_explanations(server, openapi, fitted, synth):
    user = int(synth.user_ids[2])
    status, body = call(server, "/recommend", {"user_id": user, "n": 7})
    assert status == 200
    assert_documented(openapi, "post", "/recommend", status, body)
    recs = body["recommendations"]
    expected = fitted.recommend(user, n=7)
    assert [r["artist_id"] for r in recs] == expected["artist_id"].tolist()
    assert [r["rank"] for r in recs] == list(range(1, 8))
    seen = set(synth.interactions.query("user_id == @user")["artist_id"])
    assert not seen & {r["artist_id"] for r in recs}
    explanation = recs[0]["explanation"]
    assert set(explanation) == {"sources", "because", "contributions", "reason"}
    assert {b["artist_id"] for b in explanation["because"]} <= seen
    # JSON has one number type: 7.0 is the integer 7 (so says the documented "integer")
    assert call(server, "/recommend", {"user_id": float(user), "n": 7.0}) == (status, body)


def test_recommend_for_a_new_listener(server, openapi):
    status, body = call(server, "/recommend/history", {"artists": [1, 5, 9, 999999], "n": 5})
    assert status == 200 and body["unknown_artists"] == [999999]
    assert len(body["recommendations"]) == 5
    assert_documented(openapi, "post", "/recommend/history", status, body)
    status, body = call(server, "/recommend/history", {"artists": {"1": 30, "5": 2.5}, "n": 3, "explain": False})
    assert status == 200 and "explanation" not in body["recommendations"][0]
    assert_documented(openapi, "post", "/recommend/history", status, body)


def test_similar_artists(server, openapi):
    status, body = call(server, "/artists/1/similar?n=4")
    assert status == 200 and len(body["similar"]) == 4
    assert_documented(openapi, "get", "/artists/1/similar", status, body)
    assert 1 not in {a["artist_id"] for a in body["similar"]}


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend", {"user_id": 999999, "n": 5}, 404, "unknown user"),
    ("/recommend", {"user_id": 1, "n": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"user_id": 1, "n": 51}, 422, "less than or equal to 50"),
    ("/recommend", {"user_id": 1, "n": 2.5}, 422, "valid integer"),
    ("/recommend", {"user_id": "one"}, 422, "valid integer"),
    ("/recommend", b'{"user_id": 1,', 422, "JSON decode error"),
    ("/recommend", b"[1]", 422, "Content-Type: application/json"),
    ("/recommend", b'{"user_id": ' + b"9" * 5000 + b"}", 400, "error parsing the body"),
    ("/recommend/history", {"artists": [999998, 999999]}, 422, "none of the history"),
    ("/recommend/history", {"artists": []}, 422, "at least 1 item"),
    ("/recommend/history", {"artists": {}}, 422, "at least 1 item"),
    ("/recommend/history", {"artists": {"x": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"--1": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"\u00b2": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"9" * 5000: 3}}, 422, "too many digits"),
    ("/recommend/history", {"artists": {"1": -3}}, 422, "greater than 0"),
    ("/recommend/history", {"artists": {"1": "3"}}, 422, "valid number"),
    ("/recommend/history", {"artists": {"1": 1e31}}, 422, "less than or equal to 1000000000000000000000000000000"),
    ("/recommend/history", {"artists": [1.5]}, 422, "valid integer"),
    ("/recommend/history", {"artists": [2**70]}, 422, "64 bits"),
    ("/recommend/history", {"artists": [1], "n": 51}, 422, "less than or equal to 50"),
    ("/recommend/history", b'{"artists": [' + b"1," * 600_000 + b'1]}', 413, "too large"),
    ("/artists/999999/similar", None, 404, "unknown artist"),
    ("/artists/1/similar?n=0", None, 422, "greater than or equal to 1"),
    ("/artists/1/similar?n=51", None, 422, "less than or equal to 50"),
    ("/artists/one/similar", None, 422, "valid integer"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_json_errors(server, openapi, path, body, status, message):
    got, payload = call(server, path, body)
    assert got == status
    assert message in json.dumps(payload)
    if path != "/nowhere":  # every error of a route is documented, and fits its documented schema
        assert_documented(openapi, "get" if body is None else "post", path, got, payload)
    if got == 422:  # where and what only, the input is not echoed back
        assert all(set(error) == {"loc", "msg", "type"} for error in payload["detail"])
    assert call(server, "/health")[0] == 200  # and it keeps serving


@pytest.mark.parametrize("unknown", INT64_EDGES)
def test_ids_at_and_past_the_int64_edges_are_unknown_not_errors(server, openapi, unknown):
    status, body = call(server, "/recommend", {"user_id": unknown, "n": 5})
    assert status == 404 and "unknown user" in body["detail"]
    assert_documented(openapi, "post", "/recommend", status, body)
    status, body = call(server, f"/artists/{unknown}/similar?n=5")
    assert status == 404 and "unknown artist" in body["detail"]
    assert_documented(openapi, "get", f"/artists/{unknown}/similar", status, body)


@PROPERTY
@given(some_id=st.one_of(st.integers(-3, 250), st.integers()))
@example(some_id=INT64_EDGES[0])
@example(some_id=INT64_EDGES[1])
@example(some_id=INT64_EDGES[2])
@example(some_id=INT64_EDGES[3])
@example(some_id=INT64_EDGES[4])
def test_any_integer_id_is_known_or_a_404(server, fitted, some_id):
    status, _ = call(server, "/recommend", {"user_id": some_id, "n": 3, "explain": False})
    assert status == (200 if some_id in set(fitted.user_ids_.tolist()) else 404)
    status, _ = call(server, f"/artists/{some_id}/similar?n=3")
    assert status == (200 if some_id in set(fitted.artist_ids_.tolist()) else 404)


def test_openapi_docs(server, openapi):
    assert {"/health", "/recommend", "/recommend/history", "/artists/{artist_id}/similar"} <= set(openapi["paths"])
    for path, method in [("/recommend", "post"), ("/recommend/history", "post"),
                         ("/artists/{artist_id}/similar", "get")]:
        responses = openapi["paths"][path][method]["responses"]
        assert {"200", "404", "413", "422", "500"} <= set(responses), path
        schema = {status: responses[status]["content"]["application/json"]["schema"] for status in responses}
        assert schema["422"] == {"$ref": "#/components/schemas/HTTPValidationError"}
        assert schema["404"] == schema["413"] == schema["500"] == {"$ref": "#/components/schemas/ErrorMessage"}
    schemas = openapi["components"]["schemas"]
    assert schemas["ErrorMessage"]["required"] == ["detail"]
    assert schemas["HTTPValidationError"]["properties"]["detail"]["type"] == "array"
    assert {"loc", "msg", "type"} <= set(schemas["ValidationError"]["required"])
    with urllib.request.urlopen(server + "/docs", timeout=10) as response:
        assert response.status == 200


def test_concurrent_load_with_malformed_requests_gets_no_5xx(server, openapi, synth):
    rng = np.random.default_rng(0)
    good = [("/recommend", {"user_id": int(u), "n": 5}) for u in rng.choice(synth.user_ids, 120)]
    good += [("/recommend/history", {"artists": rng.choice(synth.artist_ids, 8).tolist(), "n": 5})
             for _ in range(60)]
    bad = [("/recommend", b'{"user_id":'), ("/recommend", {"user_id": -1}), ("/recommend/history", b"[1]"),
           ("/recommend/history", {"artists": {"a": "b"}}), ("/artists/0/similar?n=-3", None)] * 12
    requests = good + bad
    order = rng.permutation(len(requests))
    answers: list[tuple[str, object, int, dict]] = []

    def worker(part: np.ndarray) -> None:
        for i in part:
            path, body = requests[i]
            answers.append((path, body, *call(server, path, body)))

    threads = [threading.Thread(target=worker, args=(order[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [status for _, _, status, _ in answers]
    assert len(statuses) == len(requests)
    assert not [s for s in statuses if s >= 500]
    assert statuses.count(200) == len(good)
    for path, body, status, payload in answers:
        assert_documented(openapi, "get" if body is None else "post", path, status, payload)
