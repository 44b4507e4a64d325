"""The HTTP service, a real uvicorn server on loopback (in this process, or ``main.py serve``) called over HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from funnel import Dataset, Recommender
from tests.conftest import with_string_ids

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
INT64_EDGES = [2**63 - 1, 2**63, -2**63 - 1, -2**63, 2**70]  # the last fits in no int64 either
# string artist ids a path must carry: "@", "-" and "." as they are; "/", " ", "%", "?", "#" and non-ASCII encoded
PLAIN_ID, ENCODED_ID, UNICODE_ID = "sigur.ros@label-x", "ac/dc 50% live?#", "Bj\u00f6rk (\u30d3\u30e7\u30fc\u30af)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: object | bytes | None = None, timeout: float = 30.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """``(status, JSON body)`` of a GET (no body) or a JSON POST."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def messages(payload: dict) -> str:
    """The words of an error answer: its ``detail``, or the ``msg`` of each of a 422's errors."""
    detail = payload["detail"]
    return detail if isinstance(detail, str) else " | ".join(error["msg"] for error in detail)


def ids(answer: dict) -> list:
    """The artist ids of a recommendations answer, best first."""
    return [r["artist_id"] for r in answer["recommendations"]]


def served_artist_ids(data: Dataset) -> dict[int, str]:
    """MusicBrainz-like artist ids for ``data``'s artists, three of them odd ones."""
    rng = random.Random(0)
    artists = {int(a): str(uuid.UUID(int=rng.getrandbits(128), version=4)) for a in data.artist_ids}
    artists.update({1: PLAIN_ID, 2: ENCODED_ID, 3: UNICODE_ID})
    return artists


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


PROCESSES: dict[str, subprocess.Popen] = {}  # base URL -> the server's process


@contextlib.contextmanager
def served(model, tmp_path_factory, *flags: str) -> Iterator[str]:
    """The base URL of ``python main.py serve`` of ``model`` (and ``flags``), a real uvicorn server on a free port."""
    model_dir = model.save(tmp_path_factory.mktemp("served") / "model")
    # the log goes to a file, not a pipe: unread, a pipe fills up (an access-log line a request) and blocks the server
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "main.py", "serve", "--artifacts", str(model_dir.parent), "--port", str(port),
             "--max-n", "50", *flags], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
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
    PROCESSES[base] = process
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = log.read_text()
    assert "Traceback" not in output, output


class ErrorLog(logging.Handler):
    """The records of errors a server logs while the handler is installed (its thread's, not other tests')."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName.startswith("uvicorn-served-"):
            self.records.append(record)


@contextlib.contextmanager
def served_in_process(model, tmp_path_factory) -> Iterator[str]:
    """The base URL of ``model``'s service, saved and loaded back, on a uvicorn server in this process.

    The routes' tests run here, without a process to start; :func:`served` keeps the real
    ``main.py serve`` for keys, workers, reloads and signals. No error may be logged meanwhile.
    """
    from funnel.serving import create_app

    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        with in_process(create_app(model.save(tmp_path_factory.mktemp("served") / "model"), max_n=50),
                        "uvicorn-served-") as base:
            yield base
    finally:
        logging.getLogger().removeHandler(errors)
    assert not errors.records, [errors.format(record) for record in errors.records]


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    with served_in_process(fitted, tmp_path_factory) as base:
        yield base


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
    assert body["user_id_type"] == body["artist_id_type"] == "int"


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
    assert body["artist_id"] == 1 and body["space"] == "tags"


def test_rules_reach_the_library(server, openapi, fitted, synth):
    user = int(synth.user_ids[2])
    seen = set(synth.interactions.query("user_id == @user")["artist_id"])
    answers = []

    def recommend(path: str, **body: object) -> list:
        status, answer = call(server, path, {"n": 10, "explain": False, **body})
        assert status == 200, answer
        answers.append((path, answer))
        return ids(answer)

    top = recommend("/recommend", user_id=user)[0]
    # an exclude list was once silently ignored: the excluded artist came back first
    excluded = recommend("/recommend", user_id=user, exclude=[top, 999999])
    assert top not in excluded and excluded == fitted.recommend(user, n=10, exclude=[top])["artist_id"].tolist()
    allowed = sorted(set(synth.artist_ids.tolist()) - seen)[:6]
    restricted = recommend("/recommend", user_id=user, allow=allowed)
    assert restricted and set(restricted) <= set(allowed)
    known = recommend("/recommend", user_id=user, filter_known=False)
    assert set(known) & seen and known == fitted.recommend(user, n=10, filter_known=False)["artist_id"].tolist()
    history = recommend("/recommend/history", artists={"1": 30, "5": 3}, filter_known=False, exclude=[5])
    assert 5 not in history
    assert history == fitted.recommend_for_history({1: 30, 5: 3}, n=10, filter_known=False,
                                                   exclude=[5])["artist_id"].tolist()
    assert set(recommend("/recommend/history", artists=[1, 5], allow=allowed)) <= set(allowed)
    # a history of the whole catalogue leaves nothing to recommend: an empty list, not a 500
    assert recommend("/recommend/history", artists=synth.artist_ids.tolist()) == []
    for path, answer in answers:
        assert_documented(openapi, "post", path, 200, answer)


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend", {"user_id": 999999, "n": 5}, 404, "unknown user"),
    ("/recommend", {"user_id": 1, "n": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"user_id": 1, "n": 51}, 422, "less than or equal to 50"),
    ("/recommend", {"user_id": 1, "n": 2.5}, 422, "valid integer"),
    ("/recommend", {"user_id": "one"}, 422, "this model's user ids are integers; got \"one\" (str)"),
    ("/recommend", {"user_id": "2"}, 422, "this model's user ids are integers; got \"2\" (str)"),
    ("/recommend", {"user_id": True}, 422, "this model's user ids are integers; got true (bool)"),
    ("/recommend", {"user_id": 2, "exclude": ["1"]}, 422, "this model's artist ids are integers"),
    ("/recommend", {"user_id": 2, "allow": [1, None]}, 422, "this model's artist ids are integers; got null"),
    ("/recommend", {"user_id": 2, "exclud": [1]}, 422, "Extra inputs are not permitted"),
    ("/recommend", {"user_id": 2, "filter_known": "no"}, 422, "valid boolean"),
    ("/recommend", {"user_id": 2, "exclude": [1] * 10_001}, 422, "at most 10000 items"),
    ("/recommend", {"user_id": 2, "allow": []}, 422, "at least 1 item"),
    ("/recommend?exclude=1", {"user_id": 2}, 422, "unknown query parameter"),
    ("/recommend", b'{"user_id": 1,', 422, "JSON decode error"),
    ("/recommend", b"[1]", 422, "Content-Type: application/json"),
    ("/recommend", b'{"user_id": ' + b"9" * 5000 + b"}", 400, "error parsing the body"),

    ("/recommend/history", {"artists": []}, 422, "at least 1 item"),
    ("/recommend/history", {"artists": {}}, 422, "at least 1 item"),
    ("/recommend/history", {"artists": {"x": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"--1": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"\u00b2": 3}}, 422, "should match pattern"),  # a digit to str.isdigit
    ("/recommend/history", {"artists": list(range(5_001))}, 422, "at most 5000 items"),
    ("/recommend/history", {"artists": {"\u00b2": 3}}, 422, "should match pattern"),
    ("/recommend/history", {"artists": {"9" * 5000: 3}}, 422, "too many digits"),
    ("/recommend/history", {"artists": {"1": -3}}, 422, "from 1e-30 to 1e30"),
    ("/recommend/history", {"artists": {"1": 1e-150}}, 422, "from 1e-30 to 1e30 (float32's range); got 1e-150"),
    ("/recommend/history", {"artists": {"1": "3"}}, 422, "valid number"),
    ("/recommend/history", {"artists": {"1": 1e31}}, 422, "got 1e+31"),
    ("/recommend/history", {"artists": [1.5]}, 422, "this model's artist ids are integers; got 1.5 (float)"),
    ("/recommend/history", {"artists": ["1"]}, 422, "this model's artist ids are integers"),
    ("/recommend/history", {"artists": [1], "allow": list(range(10_001))}, 422, "at most 10000 items"),
    ("/recommend/history", {"artists": [1], "Exclude": [5]}, 422, "Extra inputs are not permitted"),
    ("/recommend/history", {"artists": [1], "n": 51}, 422, "less than or equal to 50"),
    ("/recommend/history", b'{"artists": [' + b"1," * 600_000 + b'1]}', 413, "too large"),
    ("/artists/999999/similar", None, 404, "unknown artist"),
    ("/artists/1/similar?n=0", None, 422, "greater than or equal to 1"),
    ("/artists/1/similar?n=51", None, 422, "less than or equal to 50"),
    ("/artists/one/similar", None, 422, "this model's artist ids are integers; got \"one\" (not an integer)"),
    ("/artists/1.5/similar", None, 422, "this model's artist ids are integers"),
    ("/artists/" + "9" * 5000 + "/similar", None, 404, "unknown artist"),
    ("/artists/1/similar?n=3&exclude=5", None, 422, "unknown query parameter; this endpoint takes only n"),
    ("/health?verbose=1", None, 422, "unknown query parameter"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_json_errors(server, openapi, path, body, status, message):
    check_error(server, openapi, path, body, status, message)


def check_error(server: str, openapi: dict, path: str, body: object, status: int, message: str) -> None:
    """``path`` with ``body`` gets ``status``, a documented JSON error saying ``message``; the server lives on."""
    got, payload = call(server, path, body)
    assert got == status, payload
    assert message in messages(payload)
    if path != "/nowhere":  # every error of a route is documented, and fits its documented schema
        assert_documented(openapi, "get" if body is None else "post", path, got, payload)
    if got == 422:  # where and what only, the input is not echoed back
        assert all(set(error) == {"loc", "msg", "type"} for error in payload["detail"])
    assert call(server, "/health")[0] == 200  # and it keeps serving


def test_nothing_to_score_is_an_empty_answer_not_an_error(server, openapi, fitted):
    """A history of no catalogue artist, or an allow-list of none, leaves nothing to rank: 200, no artists."""
    user = int(fitted.user_ids_[0])
    for path, body in (("/recommend/history", {"artists": [999998, 999999]}),
                       ("/recommend/history", {"artists": [1, 2], "allow": [999999]}),
                       ("/recommend", {"user_id": user, "allow": [999999]}),
                       ("/recommend/batch", {"users": [user], "histories": [{"id": 1, "artists": [3]}],
                                             "allow": [999999]})):
        status, answer = call(server, path, body)
        assert status == 200, (path, body, answer)
        assert_documented(openapi, "post", path, status, answer)
        lists = [answer] if "recommendations" in answer else [*answer["users"], *answer["histories"]]
        assert lists and all(item["recommendations"] == [] for item in lists)
    status, answer = call(server, "/recommend/history", {"artists": [999998, 2**70]})
    assert answer["unknown_artists"] == [999998, 2**70]
    status, answer = call(server, "/recommend/history", {"artists": {"1": 3, str(2**70): 2}, "n": 4})
    assert status == 200 and answer["unknown_artists"] == [2**70] and len(answer["recommendations"]) == 4
    status, _ = call(server, "/recommend", {"user_id": 999999, "allow": [999999]})
    assert status == 404  # an unknown user is still unknown


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
    for request in ("RecommendRequest", "HistoryRequest"):  # unknown fields are refused, and the schema says so
        properties = schemas[request]["properties"]
        assert schemas[request]["additionalProperties"] is False
        assert {"exclude", "allow", "filter_known"} <= set(properties)
        assert [option.get("maxItems") for option in properties["allow"]["anyOf"]] == [10_000, None]
    assert schemas["RecommendRequest"]["properties"]["user_id"]["type"] == "integer"
    parameters = openapi["paths"]["/artists/{artist_id}/similar"]["get"]["parameters"]
    assert [p["schema"]["type"] for p in parameters if p["name"] == "artist_id"] == ["integer"]
    assert id_types(schemas["Recommendation"]["properties"]["artist_id"]) == {"integer", "string"}
    assert schemas["ErrorMessage"]["required"] == ["detail"]
    assert schemas["HTTPValidationError"]["properties"]["detail"]["type"] == "array"
    assert {"loc", "msg", "type"} <= set(schemas["ValidationError"]["required"])
    with urllib.request.urlopen(server + "/docs", timeout=10) as response:
        assert response.status == 200


def id_types(schema: dict) -> set[str]:
    return {option["type"] for option in schema["anyOf"]}


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


# a model trained on string ids -----------------------------------------------------------

@pytest.fixture(scope="module")
def str_data(synth):
    return with_string_ids(synth, served_artist_ids(synth))


@pytest.fixture(scope="module")
def str_fitted(str_data, small_config):
    return Recommender(small_config).fit(str_data)


@pytest.fixture(scope="module")
def str_server(str_fitted, tmp_path_factory):
    with served_in_process(str_fitted, tmp_path_factory) as base:
        yield base


@pytest.fixture(scope="module")
def str_openapi(str_server):
    status, spec = call(str_server, "/openapi.json")
    assert status == 200
    return spec


def similar_path(artist_id: str, n: int = 4) -> str:
    return f"/artists/{urllib.parse.quote(artist_id, safe='@')}/similar?n={n}"


def test_string_ids_are_described(str_server, str_openapi):
    status, body = call(str_server, "/health")
    assert status == 200 and body["user_id_type"] == body["artist_id_type"] == "str"
    assert_documented(str_openapi, "get", "/health", status, body)
    schemas = str_openapi["components"]["schemas"]
    assert schemas["RecommendRequest"]["properties"]["user_id"]["type"] == "string"
    assert schemas["HistoryRequest"]["properties"]["exclude"]["anyOf"][0]["items"]["type"] == "string"
    parameters = str_openapi["paths"]["/artists/{artist_id}/similar"]["get"]["parameters"]
    assert [p["schema"]["type"] for p in parameters if p["name"] == "artist_id"] == ["string"]
    assert id_types(schemas["Recommendations"]["properties"]["user_id"]) == {"integer", "string"}


def test_recommend_for_a_string_user(str_server, str_openapi, str_fitted, str_data):
    user = "user_00002@example"
    status, body = call(str_server, "/recommend", {"user_id": user, "n": 7})
    assert status == 200 and body["user_id"] == user
    assert_documented(str_openapi, "post", "/recommend", status, body)
    assert ids(body) == str_fitted.recommend(user, n=7)["artist_id"].tolist()
    assert all(isinstance(artist, str) for artist in ids(body))
    seen = set(str_data.interactions.query("user_id == @user")["artist_id"])
    assert not seen & set(ids(body))
    assert {b["artist_id"] for b in body["recommendations"][0]["explanation"]["because"]} <= seen


def test_recommend_for_a_history_keyed_by_mbids(str_server, str_openapi, str_fitted, str_data):
    played = str_data.interactions.query("user_id == 'user_00005@example'")["artist_id"].tolist()
    played = [artist for artist in played if artist not in (PLAIN_ID, ENCODED_ID, UNICODE_ID)][:4]
    unknown = "00000000-0000-4000-8000-000000000000"
    history = {**{artist: 10.0 + i for i, artist in enumerate(played)}, unknown: 1.0}
    status, body = call(str_server, "/recommend/history", {"artists": history, "n": 6})
    assert status == 200 and body["unknown_artists"] == [unknown]
    assert_documented(str_openapi, "post", "/recommend/history", status, body)
    assert ids(body) == str_fitted.recommend_for_history(history, n=6)["artist_id"].tolist()
    assert not set(played) & set(ids(body))
    status, body = call(str_server, "/recommend/history", {"artists": played + played[:1], "n": 3, "explain": False})
    assert status == 200 and body["unknown_artists"] == [] and len(body["recommendations"]) == 3


@pytest.mark.parametrize("artist", ["mbid", PLAIN_ID, ENCODED_ID, UNICODE_ID])
def test_similar_artists_by_string_id(str_server, str_openapi, str_fitted, str_data, artist):
    artist = str_data.artist_ids[-1].item() if artist == "mbid" else artist
    status, body = call(str_server, similar_path(artist))
    assert status == 200 and body["artist_id"] == artist and body["space"] == "tags"
    assert_documented(str_openapi, "get", similar_path(artist), status, body)
    expected = str_fitted.similar_artists(artist, n=4)
    assert [a["artist_id"] for a in body["similar"]] == expected["artist_id"].tolist()
    assert artist not in {a["artist_id"] for a in body["similar"]}
    # characters a path may carry as they are mean the same percent-encoded
    assert call(str_server, similar_path(artist).replace("@", "%40").replace("-", "%2D")) == (status, body)


def test_rules_with_string_ids(str_server, str_openapi, str_fitted, str_data):
    user = "user_00002@example"
    seen = set(str_data.interactions.query("user_id == @user")["artist_id"])

    def recommend(path: str, **body: object) -> list:
        status, answer = call(str_server, path, {"n": 10, "explain": False, **body})
        assert status == 200, answer
        assert_documented(str_openapi, "post", path, status, answer)
        return ids(answer)

    top = recommend("/recommend", user_id=user)[:2]
    assert not set(top) & set(recommend("/recommend", user_id=user, exclude=[*top, "not-an-artist"]))
    allowed = sorted(set(str_data.artist_ids.tolist()) - seen)[:5]
    restricted = recommend("/recommend", user_id=user, allow=allowed)
    assert restricted and set(restricted) <= set(allowed)
    known = recommend("/recommend", user_id=user, filter_known=False)
    assert set(known) & seen and known == str_fitted.recommend(user, n=10, filter_known=False)["artist_id"].tolist()
    history = sorted(seen)[:3]
    again = recommend("/recommend/history", artists=history, filter_known=False, exclude=history[:1])
    assert history[0] not in again
    assert again == str_fitted.recommend_for_history(history, n=10, filter_known=False,
                                                     exclude=history[:1])["artist_id"].tolist()


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend", {"user_id": 2}, 422, "this model's user ids are strings; got 2 (int)"),
    ("/recommend", {"user_id": None}, 422, "this model's user ids are strings; got null (null)"),
    ("/recommend", {"user_id": "user_00002@example", "exclude": [1]}, 422,
     "this model's artist ids are strings; got 1 (int)"),
    ("/recommend", {"user_id": "user_00002@example", "allow": [PLAIN_ID, 2.5]}, 422,
     "this model's artist ids are strings; got 2.5 (float)"),
    ("/recommend", {"user_id": "user_00002@example", "excluded": [PLAIN_ID]}, 422, "Extra inputs are not permitted"),
    ("/recommend", {"user_id": "nobody@example"}, 404, "unknown user"),
    ("/recommend", {"user_id": "2"}, 404, "unknown user"),
    ("/recommend/history", {"artists": [1, 2]}, 422, "this model's artist ids are strings; got 1 (int)"),
    ("/recommend/history", {"artists": {PLAIN_ID: 3}, "filter_known": 0}, 422, "valid boolean"),
    ("/recommend/history", {"artists": {PLAIN_ID: 3}, "n": 5, "explains": False}, 422, "Extra inputs"),
    ("/recommend/history", {"artists": [PLAIN_ID], "exclude": [PLAIN_ID] * 10_001}, 422, "at most 10000 items"),
    ("/artists/not-an-artist/similar", None, 404, "unknown artist"),
    ("/artists/123/similar", None, 404, "unknown artist"),  # a string of digits is just an unknown string id
    (similar_path(PLAIN_ID) + "&allow=x", None, 422, "unknown query parameter"),
])
def test_bad_requests_with_string_ids(str_server, str_openapi, path, body, status, message):
    check_error(str_server, str_openapi, path, body, status, message)


@PROPERTY
@given(some_id=st.one_of(st.text(max_size=30), st.integers(0, 200).map("user_{:05d}@example".format),
                         st.sampled_from([PLAIN_ID, ENCODED_ID, UNICODE_ID])))
@example(some_id="")
@example(some_id="..")
@example(some_id="a/../b")
def test_any_string_id_is_known_or_a_404(str_server, str_fitted, some_id):
    status, _ = call(str_server, "/recommend", {"user_id": some_id, "n": 3, "explain": False})
    assert status == (200 if some_id in set(str_fitted.user_ids_.tolist()) else 404)
    status, _ = call(str_server, f"/artists/{urllib.parse.quote(some_id, safe='')}/similar?n=3")
    assert status == (200 if some_id in set(str_fitted.artist_ids_.tolist()) else 404)


# access control ---------------------------------------------------------------------------
KEY, ADMIN_KEY = "k3y-for-tests", "another key, admin"


@pytest.fixture(scope="module")
def keyed_server(fitted, tmp_path_factory):
    from funnel.serving.auth import digest

    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# service keys\n{digest(KEY)}\n\n{digest(ADMIN_KEY).upper()} admin\n")
    with served(fitted, tmp_path_factory, "--api-key-file", str(key_file), "--cors-origin",
                "https://app.example.com") as base:
        yield base, Path(tmp_path_factory.getbasetemp())


def test_api_keys_guard_every_endpoint_but_health(keyed_server, fitted):
    base, _ = keyed_server
    user = int(fitted.user_ids_[0])
    artist = int(fitted.artist_ids_[0])
    requests = [("/recommend", {"user_id": user}), ("/recommend/history", {"artists": [artist]}),
                (f"/artists/{artist}/similar", None)]
    for path, body in requests:
        status, answer = call(base, path, body)
        assert status == 401 and "API key" in answer["detail"], (path, answer)
        assert call(base, path, body, headers={"X-API-Key": "wrong"})[0] == 401
        assert call(base, path, body, headers={"Authorization": f"Basic {KEY}"})[0] == 401
        assert call(base, path, body, headers={"X-API-Key": KEY})[0] == 200
        assert call(base, path, body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})[0] == 200
        # every credential presented must hold: a wrong or foreign one beside a right key is refused
        assert call(base, path, body, headers={"X-API-Key": KEY, "Authorization": "Bearer wrong"})[0] == 401
        assert call(base, path, body, headers={"X-API-Key": KEY, "Authorization": "Basic dXNlcjpwdw=="})[0] == 401
        assert call(base, path, body, headers={"X-API-Key": KEY, "Authorization": f"Bearer {ADMIN_KEY}"})[0] == 200
    assert call(base, "/health")[0] == 200
    status, spec = call(base, "/openapi.json")
    assert status == 200 and "401" in spec["paths"]["/recommend"]["post"]["responses"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert "401" not in spec["paths"]["/health"]["get"]["responses"]


def test_cors_answers_the_configured_origin_only(keyed_server):
    base, _ = keyed_server

    def preflight(origin: str) -> str | None:
        request = urllib.request.Request(base + "/recommend", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.headers.get("access-control-allow-origin")
        except urllib.error.HTTPError as error:
            return error.headers.get("access-control-allow-origin")

    assert preflight("https://app.example.com") == "https://app.example.com"
    assert preflight("https://evil.example.com") is None


def test_key_files_are_checked_and_keys_never_logged(keyed_server, tmp_path, caplog):
    from funnel import ConfigError
    from funnel.serving.auth import APIKeys, digest, is_loopback

    _, base_temp = keyed_server
    logs = "".join(p.read_text() for p in base_temp.glob("server-log*/server.log"))
    assert KEY not in logs and ADMIN_KEY not in logs and "1 of them admin" in logs
    keys = APIKeys.from_file(next(base_temp.glob("keys*/keys.txt")))
    assert keys.role(KEY) == "user" and keys.role(ADMIN_KEY) == "admin"
    assert keys.role("") is None and keys.role(KEY + "x") is None and keys.role(None) is None
    bad = tmp_path / "bad.txt"
    for text, message in ((f"{KEY}\n", "line 1: not a SHA-256 hex digest"), ("", "lists no key"),
                          (f"{digest(KEY)} root\n", "only the word 'admin'")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message) as error:
            APIKeys.from_file(bad)
        assert KEY not in str(error.value)
    with pytest.raises(ConfigError, match="cannot read"):
        APIKeys.from_file(tmp_path / "missing.txt")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("example.com")


def test_serving_beyond_loopback_without_keys_warns(fitted, tmp_path, monkeypatch, caplog):
    import uvicorn

    from funnel.serving import serve
    from funnel.serving.auth import KEY_FILE_ENV, digest

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(
        (self.config.app, {"host": self.config.host, "sockets": sockets})))
    model_dir = fitted.save(tmp_path / "model")
    with caplog.at_level("WARNING", logger="funnel"):
        serve(str(model_dir), host="0.0.0.0", port=free_port())
    assert "without API keys" in caplog.text and ran[-1][1]["host"] == "0.0.0.0"
    caplog.clear()
    (tmp_path / "keys").write_text(digest(KEY) + "\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys"))
    with caplog.at_level("WARNING", logger="funnel"):
        serve(str(model_dir), host="0.0.0.0", port=free_port())
    assert "without API keys" not in caplog.text
    spec = ran[-1][0].openapi()
    assert "401" in spec["paths"]["/recommend"]["post"]["responses"]


def test_metrics_count_requests_by_route_template_and_status(server, fitted):
    artist = int(fitted.artist_ids_[0])
    call(server, f"/artists/{artist}/similar")
    call(server, "/recommend", {"user_id": 999999})
    call(server, "/no/such/route")
    request = urllib.request.Request(server + "/metrics")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    assert re.search(r'funnel_requests_total\{endpoint="/artists/\{artist_id:path\}/similar",method="GET",'
                     r'status="200"\} [1-9]', text), text[:2000]
    assert re.search(r'funnel_requests_total\{endpoint="/recommend",method="POST",status="404"\} [1-9]', text)
    assert re.search(r'funnel_requests_total\{endpoint="unmatched",method="GET",status="404"\} [1-9]', text)
    assert 'funnel_request_duration_seconds_bucket{endpoint="/recommend",le="0.005"}' in text
    assert f'data_fingerprint="{fitted.fingerprint_}"' in text and str(artist) + "/" not in text


def test_metrics_need_a_key_where_keys_are_set(keyed_server):
    base, _ = keyed_server
    request = urllib.request.Request(base + "/metrics")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 401
    request = urllib.request.Request(base + "/metrics", headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert b"funnel_requests_total" in response.read()


def test_batch_answers_as_the_single_endpoints(server, openapi, fitted):
    users = [int(u) for u in fitted.user_ids_[:3]]
    artists = [int(a) for a in fitted.artist_ids_[:4]]
    body = {"users": [*users, 999999, users[0]], "n": 5, "exclude": [artists[3]],
            "histories": [{"id": "walk-in", "artists": {str(artists[0]): 3.0, str(artists[1]): 1.0}},
                          {"id": 7, "artists": [artists[2], 999998]},
                          {"id": "ghost", "artists": [999997]}]}
    status, answer = call(server, "/recommend/batch", body)
    assert status == 200, answer
    assert_documented(openapi, "post", "/recommend/batch", status, answer)
    assert [u["user_id"] for u in answer["users"]] == users and answer["unknown_users"] == [999999]
    for got in answer["users"]:
        want = fitted.recommend(got["user_id"], n=5, exclude=[artists[3]])
        assert ids(got) == want["artist_id"].tolist()
        np.testing.assert_allclose([r["score"] for r in got["recommendations"]], want["score"], rtol=1e-5, atol=1e-6)
    by_id = {h["id"]: h for h in answer["histories"]}
    assert list(by_id) == ["walk-in", 7, "ghost"]
    walk_in = fitted.recommend_for_history({artists[0]: 3.0, artists[1]: 1.0}, n=5, exclude=[artists[3]])
    assert ids(by_id["walk-in"]) == walk_in["artist_id"].tolist()
    assert ids(by_id[7]) == fitted.recommend_for_history([artists[2]], n=5, exclude=[artists[3]])["artist_id"].tolist()
    assert by_id[7]["unknown_artists"] == [999998]
    assert by_id["ghost"] == {"id": "ghost", "unknown_artists": [999997], "recommendations": []}


@pytest.mark.parametrize("body, message", [
    ({"users": list(range(101))}, "at most 100 items"),
    ({"histories": [{"id": i, "artists": [1]} for i in range(101)]}, "at most 100 items"),
    ({"histories": [{"id": 1, "artists": []}]}, "at least 1 item"),
    ({"histories": [{"id": 1, "artists": [1], "n": 3}]}, "Extra inputs are not permitted"),
    ({"users": ["2"]}, "this model's user ids are integers"),
    ({"users": [2], "n": 0}, "greater than or equal to 1"),
])
def test_bad_batches_are_422(server, openapi, body, message):
    check_error(server, openapi, "/recommend/batch", body, 422, message)


def test_several_workers_serve_from_the_app_factory(fitted, tmp_path_factory):
    with served(fitted, tmp_path_factory, "--workers", "2") as base:
        children = Path(f"/proc/{PROCESSES[base].pid}/task/{PROCESSES[base].pid}/children").read_text().split()
        workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()]
        assert len(workers) == 2, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
        user = int(fitted.user_ids_[0])
        want = fitted.recommend(user, n=5)["artist_id"].tolist()
        for _ in range(20):  # spread over both workers by the kernel
            status, answer = call(base, "/recommend", {"user_id": user, "n": 5, "explain": False})
            assert status == 200 and ids(answer) == want
        status, health = call(base, "/health")
        assert status == 200 and health["max_batch"] == 100


def test_the_factory_reads_the_environment(fitted, tmp_path, monkeypatch):
    from funnel import ConfigError
    from funnel.serving import create_app

    monkeypatch.delenv("FUNNEL_MODEL_DIR", raising=False)
    with pytest.raises(ConfigError, match="FUNNEL_MODEL_DIR"):
        create_app()
    monkeypatch.setenv("FUNNEL_MODEL_DIR", str(fitted.save(tmp_path / "model")))
    monkeypatch.setenv("FUNNEL_MAX_HISTORY", "7")
    app = create_app()
    schema = app.openapi()["components"]["schemas"]
    assert "1 to 7 entries" in json.dumps(schema)
    monkeypatch.setenv("FUNNEL_TIME_BUDGET", "inf")
    with pytest.raises(ConfigError, match="FUNNEL_TIME_BUDGET='inf' must be a number of seconds above 0"):
        create_app()
    monkeypatch.setenv("FUNNEL_TIME_BUDGET", "2.5")
    monkeypatch.setenv("FUNNEL_MAX_BATCH", "zero")
    with pytest.raises(ConfigError, match="FUNNEL_MAX_BATCH='zero' must be a whole number of at least 1"):
        create_app()


# model swaps -------------------------------------------------------------------------------
def post(base: str, path: str, body: object, key: str | None = None) -> tuple[int, dict]:
    return call(base, path, body, headers={"X-API-Key": key} if key else None)


@contextlib.contextmanager
def under_load(base: str, request: dict, clients: int = 3) -> Iterator[tuple[list[int], list[int]]]:
    """Within the block, ``clients`` threads send ``request`` to ``/recommend`` without pause.

    Yields the statuses other than 200 and (in a one-item list) the number of answers, both
    complete once the block has ended and the clients stopped.
    """
    failures: list[int] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, _ = post(base, "/recommend", request, KEY)
            answered[0] += 1
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield failures, answered
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_reload_swaps_models_without_failed_requests(keyed_server, fitted, small_config, tmp_path):
    from funnel.data.synthetic import synthetic
    from tests.conftest import SYNTH

    base, _ = keyed_server
    other = Recommender(small_config).fit(synthetic(**{**SYNTH, "seed": 4})).save(tmp_path / "other")
    assert post(base, "/admin/reload", {})[0] == 401
    assert post(base, "/admin/reload", {}, KEY)[0] == 403  # a user key is not an admin key
    status, health = call(base, "/health")
    assert health["trained"]["saved_at"] and health["trained"]["versions"]["funnel"]
    with under_load(base, {"user_id": int(fitted.user_ids_[0]), "n": 5, "explain": False}) as (failures, answered):
        status, swapped = post(base, "/admin/reload", {"model_dir": str(other)}, ADMIN_KEY)
        assert status == 200, swapped
        assert swapped["data_fingerprint"] != swapped["previous_data_fingerprint"]
        assert call(base, "/health")[1]["data_fingerprint"] == swapped["data_fingerprint"]
        status, back = post(base, "/admin/reload", {"model_dir": str(Path(other).parent / "missing")}, ADMIN_KEY)
        assert status == 409 and "old model still serves" in back["detail"]
        assert call(base, "/health")[1]["data_fingerprint"] == swapped["data_fingerprint"]
        status, again = post(base, "/admin/reload", b"", ADMIN_KEY)  # no body: the directory served now, again
        assert status == 200 and again["model_dir"] == str(other)
    assert answered[0] > 0 and failures == []
    status, restored = post(base, "/admin/reload", {"model_dir": str(fitted.save(tmp_path / "back"))}, ADMIN_KEY)
    assert status == 200 and restored["data_fingerprint"] == fitted.fingerprint_


def test_an_update_saved_in_place_reloads_under_load_without_failed_requests(keyed_server, fitted, tmp_path):
    import pandas as pd

    base, _ = keyed_server
    served_dir = fitted.save(tmp_path / "daily")
    assert post(base, "/admin/reload", {"model_dir": str(served_dir)}, ADMIN_KEY)[0] == 200
    newcomer = int(fitted.user_ids_.max()) + 1
    assert post(base, "/recommend", {"user_id": newcomer}, KEY)[0] == 404
    with under_load(base, {"user_id": int(fitted.user_ids_[1]), "n": 5}) as (failures, answered):
        model = Recommender.load(served_dir, mmap=False)
        model.update(pd.DataFrame({"user_id": [newcomer, newcomer, int(fitted.user_ids_[1])],
                                   "artist_id": fitted.artist_ids_[[3, 4, 5]]}))
        model.save(served_dir)  # in place: the manifest swapped last, the served files untouched
        status, swapped = post(base, "/admin/reload", b"", ADMIN_KEY)
        assert status == 200 and swapped["data_fingerprint"] == model.fingerprint_ != fitted.fingerprint_
    assert answered[0] > 0 and failures == []
    status, answer = post(base, "/recommend", {"user_id": newcomer, "n": 5}, KEY)
    played = set(fitted.artist_ids_[[3, 4]].tolist())
    assert status == 200 and len(answer["recommendations"]) == 5
    assert not played & {item["artist_id"] for item in answer["recommendations"]}
    assert post(base, "/admin/reload", {"model_dir": str(fitted.save(tmp_path / "back"))}, ADMIN_KEY)[0] == 200


def test_reload_refuses_a_model_of_other_ids_and_needs_keys(keyed_server, server, str_fitted, tmp_path):
    base, _ = keyed_server
    status, answer = post(base, "/admin/reload", {"model_dir": str(str_fitted.save(tmp_path / "strings"))}, ADMIN_KEY)
    assert status == 409 and "restart the service" in answer["detail"]
    status, answer = post(server, "/admin/reload", {})
    assert status == 403 and "--api-key-file" in answer["detail"]
    status, answer = call(base, "/admin/reload", {}, headers={"X-API-Key": KEY, "Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 403 and "admin key" in answer["detail"]  # a user key beside an admin key: the lesser role


def test_sighup_reloads_the_served_directory(keyed_server):
    import os
    import signal

    base, base_temp = keyed_server
    process = PROCESSES[base]
    logs = list(Path(base_temp).glob("server-log*/server.log"))
    before = sum(p.read_text().count("now serving") for p in logs)
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while sum(p.read_text().count("now serving") for p in logs) == before:
        assert time.monotonic() < deadline, "no reload after SIGHUP"
        time.sleep(0.2)
    assert call(base, "/health")[0] == 200


# threads, time budget, errors ----------------------------------------------------------------
@contextlib.contextmanager
def in_process(app, name: str = "uvicorn-") -> Iterator[str]:
    """The base URL of a real uvicorn server of ``app`` on a thread of this process (``name`` and its port)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name=f"{name}{server.config.port}")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def own_model(fitted, tmp_path):
    """A model of its own, whose methods a test may replace."""
    return Recommender.load(fitted.save(tmp_path / "model"))


def test_requests_are_scored_side_by_side(own_model):
    from funnel.serving import create_app

    first_started, second_done = threading.Event(), threading.Event()
    real = own_model.recommend

    def recommend(user, **kwargs):
        if user == own_model.user_ids_[0]:  # the first request waits inside the model for the second one
            first_started.set()
            assert second_done.wait(timeout=20), "the second request never ran beside the first"
        else:
            assert first_started.wait(timeout=20)
        try:
            return real(user, **kwargs)
        finally:
            if user != own_model.user_ids_[0]:
                second_done.set()

    own_model.recommend = recommend
    with in_process(create_app(own_model, max_n=50)) as base:
        answers: dict[str, tuple[int, dict]] = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", call(
            base, "/recommend", {"user_id": int(own_model.user_ids_[0]), "n": 3})))
        first.start()
        assert first_started.wait(timeout=20)
        answers["second"] = call(base, "/recommend", {"user_id": int(own_model.user_ids_[1]), "n": 3})
        first.join(timeout=30)
    assert answers["first"][0] == answers["second"][0] == 200
    assert len(answers["first"][1]["recommendations"]) == 3


def test_a_request_past_the_time_budget_answers_503(own_model):
    from funnel.serving import create_app

    release = threading.Event()
    real = own_model.recommend_for_history

    def slow(history, **kwargs):
        release.wait(timeout=30)
        return real(history, **kwargs)

    own_model.recommend_for_history = slow
    app = create_app(own_model, max_n=50, time_budget=2.0)  # the normal request below needs far less
    spec = app.openapi()
    with in_process(app) as base:
        try:
            status, answer = call(base, "/recommend/history", {"artists": [int(own_model.artist_ids_[0])]})
            assert status == 503 and "2 s budget" in answer["detail"]
            assert_documented(spec, "post", "/recommend/history", status, answer)
            status, _ = call(base, "/recommend", {"user_id": int(own_model.user_ids_[0]), "n": 3})
            assert status == 200  # the abandoned call, still waiting, holds its own thread only
        finally:
            release.set()
    with pytest.raises(Exception, match="above 0"):
        create_app(own_model, time_budget=0)


def test_an_unexpected_error_is_a_500_logged_once(own_model, caplog):
    from funnel.serving import create_app

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep in scoring")

    own_model.similar_artists = broken
    with caplog.at_level("INFO"), in_process(create_app(own_model, max_n=50)) as base:
        status, answer = call(base, f"/artists/{int(own_model.artist_ids_[0])}/similar")
    assert status == 500 and answer == {"detail": "internal error; see the server log"}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "a bug deep in scoring" in str(tracebacks[0].exc_info[1])
    assert "a bug deep in scoring" not in answer["detail"]


def test_a_port_in_use_is_a_clear_error_before_loading(fitted, tmp_path):
    from funnel import ConfigError
    from funnel.serving import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}.*another --port"):
            serve(str(tmp_path / "no-model-needed"), port=port)
    result = subprocess.run([sys.executable, "main.py", "serve", "--artifacts", str(tmp_path),
                             "--host", "no.such.host."], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "cannot serve on no.such.host." in result.stderr
    assert "Traceback" not in result.stderr


# the OpenAPI document against the live service ----------------------------------------------
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("which", ["server", "str_server", "keyed_server"])
def test_the_live_service_keeps_to_its_openapi_document(request, which, mode):
    """schemathesis, every check it has, on every operation, with valid and with invalid requests.

    Integer ids, string ids, and a service with API keys (called with a user key: the admin
    endpoint must answer 403, and requests without the key 401).
    """
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.generation.modes import GenerationMode

    base = request.getfixturevalue(which)
    base, headers = (base[0], {"X-API-Key": KEY}) if which == "keyed_server" else (base, None)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    if headers:  # the valid key, known to schemathesis as such: its checks send none, or a wrong one, beside
        schema.config.update(headers=headers)
    # a body over the size limit (a long invalid list) is refused with 413, before it is parsed
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:
        raw = operation.definition.raw
        if mode == "negative" and not raw.get("parameters") and "requestBody" not in raw:
            continue  # GET /health takes nothing, so nothing can be sent wrong

        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        check()


def test_the_listening_socket_turns_nagle_off_on_each_connection():
    """asyncio sets TCP_NODELAY on an accepted connection only when the listener says IPPROTO_TCP."""
    import asyncio

    from funnel.serving.server import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) == 1


# bounded cost, access edges, contract edges ---------------------------------------------------
def raw(base: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, bytes]:
    """``(status, body)`` of a request sent as given: any method, any headers, repeated ones too."""
    import http.client

    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    try:
        connection.putrequest(method, path)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_request_keeps_its_slot_until_its_work_ends(own_model):
    from funnel.serving import create_app

    release, started = threading.Event(), threading.Event()
    real = own_model.recommend_for_history

    def slow(history, **kwargs):
        started.set()
        release.wait(timeout=30)
        return real(history, **kwargs)

    own_model.recommend_for_history = slow
    app = create_app(own_model, max_n=50, time_budget=0.5, threads=1, queue=0)
    history = {"artists": [int(own_model.artist_ids_[0])], "n": 3}
    threads_before = threads_named("funnel-score")
    with in_process(app) as base:
        try:
            status, answer = call(base, "/recommend/history", history)
            assert status == 503 and "budget" in answer["detail"] and started.is_set()
            began = time.monotonic()
            status, answer = call(base, "/recommend/history", history)  # the first one's work still runs
            assert status == 503 and "at capacity" in answer["detail"]
            assert time.monotonic() - began < 0.4  # refused at once, not after the budget
            assert call(base, "/health")[0] == 200  # the probes always answer
            assert threads_named("funnel-score") - threads_before == 1  # the pool's one thread
        finally:
            release.set()
        deadline = time.monotonic() + 10
        while (status := call(base, "/recommend/history", history)[0]) == 503:
            assert time.monotonic() < deadline, "the slot never came back"
            time.sleep(0.05)
        assert status == 200


def threads_named(prefix: str) -> int:
    return sum(thread.name.startswith(prefix) for thread in threading.enumerate())


def test_the_cost_of_a_request_is_capped_up_front(own_model):
    from funnel.errors import ConfigError
    from funnel.serving import create_app

    app = create_app(own_model, max_n=50, max_cost=15)
    spec = app.openapi()
    artists = [int(a) for a in own_model.artist_ids_[:10]]
    user = int(own_model.user_ids_[0])  # 20 artists in its training history (synthetic data)
    with in_process(app) as base:
        assert call(base, "/recommend/history", {"artists": artists})[0] == 200
        assert call(base, "/recommend", {"user_id": user})[0] == 200  # one user is never too costly
        status, answer = call(base, "/recommend/batch", {"histories": [{"id": 1, "artists": artists},
                                                                       {"id": 2, "artists": artists}]})
        assert status == 422 and "20 artist entries" in messages(answer) and "limit is 15" in messages(answer)
        assert_documented(spec, "post", "/recommend/batch", status, answer)
        status, answer = call(base, "/recommend/batch", {"users": [user], "histories": [{"id": 1, "artists": artists}]})
        assert status == 422 and answer["detail"][0]["type"] == "request_cost"
    with pytest.raises(ConfigError, match="at least 1"):
        create_app(own_model, threads=0)


def test_invented_methods_share_one_metrics_label(server):
    for number in range(30):
        assert raw(server, f"INVENTED{number}", "/health", [])[0] in (400, 405)
    status, _ = raw(server, "PATCH", "/health", [])
    text = urllib.request.urlopen(server + "/metrics", timeout=30).read().decode()
    assert "INVENTED" not in text and 'method="other"' in text and 'method="PATCH"' in text


def test_every_header_sent_twice_is_checked(keyed_server):
    base, _ = keyed_server
    body = b"{}"
    json_type = ("Content-Type", "application/json")
    assert raw(base, "POST", "/recommend/history", [json_type, ("X-API-Key", KEY)],
               b'{"artists": [1]}')[0] == 200
    for headers in ([("X-API-Key", KEY), ("X-API-Key", "wrong")],
                    [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer wrong")],
                    [("Authorization", f"Bearer {KEY}"), ("Authorization", "Basic dXNlcjpwYXNz")],
                    [("X-API-Key", KEY), ("X-API-Key", "")]):
        assert raw(base, "POST", "/recommend/history", [json_type, *headers], b'{"artists": [1]}')[0] == 401, headers
    status, answer = raw(base, "POST", "/admin/reload", [json_type, ("X-API-Key", ADMIN_KEY), ("X-API-Key", KEY)],
                         body)
    assert status == 403 and b"admin key" in answer  # an admin key and a user key: the lesser role


def test_only_the_documented_pages_are_served(server):
    assert call(server, "/openapi.json")[0] == 200
    assert urllib.request.urlopen(server + "/docs", timeout=30).status == 200
    for page in ("/redoc", "/docs/oauth2-redirect"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server + page, timeout=30)
        assert error.value.code == 404


def test_a_long_string_id_is_a_422_and_costs_no_copy_of_the_catalogue(str_server, str_openapi, str_fitted):
    from funnel.serving.schemas import MAX_ID_CHARS

    long_id = "x" * 30_000
    known = str(str_fitted.artist_ids_[0])
    for path, body in ((similar_path(long_id), None),
                       ("/recommend/history", {"artists": [known], "exclude": [long_id]}),
                       ("/recommend/history", {"artists": [known, long_id]}),
                       ("/recommend/history", {"artists": {known: 1, long_id: 2}})):
        status, answer = call(str_server, path, body)
        assert status == 422 and str(MAX_ID_CHARS) in messages(answer), (path, answer)
        assert_documented(str_openapi, "get" if body is None else "post", path, status, answer)
    status, answer = call(str_server, "/recommend/history", {"artists": [known, "y" * MAX_ID_CHARS]})
    assert status == 200 and answer["unknown_artists"] == ["y" * MAX_ID_CHARS]


def test_library_lookups_of_a_long_id_do_not_widen_the_catalogue(str_fitted):
    import tracemalloc

    from funnel.data.ids import lookup_ids

    catalogue = np.sort(np.array([f"{i:036d}" for i in range(2_000)]))
    queries = [*catalogue[:1_000].tolist(), "z" * 10_000]
    tracemalloc.start()
    try:
        found = lookup_ids(catalogue, queries)
        found_array = lookup_ids(catalogue, np.array(["z" * 10_000, catalogue[5]]))
        answer = str_fitted.recommend_for_history([str(str_fitted.artist_ids_[0]), "z" * 10_000], n=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found[:1_000].tolist() == list(range(1_000)) and found[-1] == -1
    assert found_array.tolist() == [-1, 5] and len(answer) == 3
    assert peak < 20e6, f"{peak / 1e6:.0f} MB for lookups that need well under 1 MB"  # 80+ MB when widened


def test_the_play_count_bound_is_the_documented_one(server, openapi, fitted):
    artists = [str(a) for a in fitted.artist_ids_[:2]]
    for plays in (1e30, 9.999999999999999e29, 1e-30):
        body = {"artists": {artists[0]: plays, artists[1]: 1}}
        status, answer = call(server, "/recommend/history", body)
        assert status == 200, (plays, answer)
        status, answer = call(server, "/recommend/batch", {"histories": [{"id": 1, **body}]})
        assert status == 200, (plays, answer)
    schema = openapi["components"]["schemas"]
    assert any('"maximum": 1e+30' in json.dumps(s) or '"maximum": 1e30' in json.dumps(s) for s in schema.values())
    status, answer = call(server, "/recommend/history", {"artists": {artists[0]: 1.0000001e30}})
    assert status == 422


def test_a_huge_number_as_a_user_id_is_named_short_and_keys_of_one_id_add_up(own_model, server):
    from funnel.serving import create_app

    status, answer = call(server, "/recommend", {"user_id": 1e300})
    assert status == 404 and len(answer["detail"]) < 300 and "..." in answer["detail"]
    seen = []
    real = own_model.recommend_for_history

    def spy(history, **kwargs):
        seen.append(history)
        return real(history, **kwargs)

    own_model.recommend_for_history = spy
    a, b = (int(x) for x in own_model.artist_ids_[1:3])
    with in_process(create_app(own_model, max_n=50)) as base:
        status, _ = call(base, "/recommend/history", {"artists": {str(a): 1, f"0{a}": 50, str(b): 2}})
    assert status == 200 and seen[-1] == {a: 51.0, b: 2.0}


def test_a_reload_refuses_a_model_that_cannot_serve_what_is_served(own_model, fitted, tmp_path, monkeypatch):
    from funnel.errors import ConfigError
    from funnel.serving import create_app

    app = create_app(fitted.save(tmp_path / "served"), max_n=50)
    with pytest.raises(ConfigError, match="artist-side only"):
        app.state.service.reload(str(fitted.save(tmp_path / "artists", artist_side_only=True)))
    real = Recommender.recommend

    def nan_scores(self, *args, **kwargs):
        frame = real(self, *args, **kwargs)
        return frame.assign(score=np.nan)

    monkeypatch.setattr(Recommender, "recommend", nan_scores)
    with pytest.raises(ConfigError, match="non-finite"):
        app.state.service.reload(str(tmp_path / "served"))
    monkeypatch.undo()
    assert app.state.service.reload(str(tmp_path / "served"))["status"] == "reloaded"


def test_a_slow_or_keyless_client_holds_no_slot_and_a_refusal_is_readable_and_counted(own_model):
    from funnel.serving import create_app
    from funnel.serving.auth import USER, APIKeys, digest

    app = create_app(own_model, max_n=50, time_budget=1.0, threads=1, queue=0,
                     api_keys=APIKeys(((digest(KEY), USER),)), cors_origins=["https://app.example.com"])
    spec = app.openapi()
    assert "408" in spec["paths"]["/recommend/history"]["post"]["responses"]
    history = json.dumps({"artists": [int(own_model.artist_ids_[0])], "n": 3}).encode()
    keyed = {"X-API-Key": KEY}

    def partial(headers: str) -> socket.socket:
        """A request whose headers and first byte of body are sent, the rest never."""
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(f"POST /recommend/history HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 100\r\n{headers}\r\n{{".encode())
        return sock

    with in_process(app) as base:
        keyless = partial("")
        assert call(base, "/recommend/history", history, headers=keyed)[0] == 200  # the keyless one took no slot
        slow = partial(f"X-API-Key: {KEY}\r\n")  # holds the only slot while its body does not come
        time.sleep(0.2)
        refused = urllib.request.Request(base + "/recommend/history", data=history, method="POST", headers={
            "Content-Type": "application/json", "Origin": "https://app.example.com", **keyed})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(refused, timeout=30)
        assert error.value.code == 503 and b"at capacity" in error.value.read()
        # a browser may read it: the refusal carries CORS headers and Retry-After
        assert error.value.headers["access-control-allow-origin"] == "https://app.example.com"
        assert error.value.headers["retry-after"] == "1"
        first_line = slow.recv(200).split(b"\r\n")[0]
        assert b" 408 " in first_line  # within the time budget the body must come
        slow.close()
        keyless.close()
        assert call(base, "/recommend/history", history, headers=keyed)[0] == 200  # the slot came back
        metrics = urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=keyed), timeout=30)
        text = metrics.read().decode()
    assert re.search(r'funnel_requests_total\{endpoint="/recommend/history",method="POST",status="503"\} 1', text)
