"""The HTTP service: a FastAPI app around one loaded :class:`funnel.Recommender` (never retrains).

The model is read-only while serving and every call's state lives in that call, so requests
run side by side on the server's threads with no lock around scoring; a model loaded from a
directory is memory-mapped, so worker processes serving the same directory share its pages.
Each request runs within a time budget, and a request past it answers 503 at once.

Ids in requests and answers are of the served model's kind: JSON integers for a model
trained on integer ids, JSON strings for one trained on string ids. The request models are
therefore built per application (:func:`create_app`), from the generic ones below.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the request models' annotations
import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, cast

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
    WithJsonSchema,
    create_model,
)
from pydantic.json_schema import JsonDict, SkipJsonSchema
from pydantic_core import PydanticCustomError

from funnel import __version__
from funnel.data.dataset import MAX_WEIGHT
from funnel.data.history import parse_history
from funnel.data.ids import id_kind, lookup_ids
from funnel.errors import ConfigError, DataError, FunnelError, UnknownUserError, shorten
from funnel.persistence.files import load_json
from funnel.persistence.model import FORMAT_VERSION
from funnel.recommender import Recommender
from funnel.serving.auth import ADMIN, KEY_FILE_ENV, APIKeys, is_loopback, key_file_setting

logger = logging.getLogger("funnel")

MAX_N = 100
MAX_BODY_BYTES = 1 << 20
MAX_HISTORY = 5_000  # artists in one history: the cost of a request grows with it
MAX_BATCH = 100  # users and histories in one batch request
MAX_RULE_IDS = 10_000  # 10,000 MBIDs are ~390 KB of JSON: both lists fit in the 1 MiB body limit
DRAIN_BYTES = 64 << 20
DEFAULT_N = 10
TIME_BUDGET = 10.0  # seconds a request may take: a backstop, the limits above bound the cost
MAX_ID_CHARS = 512  # characters of a string id in a request (MBIDs have 36)
QUEUE_PER_THREAD = 4  # default requests admitted to wait, per scoring thread
INT_ID = re.compile(r"-?[0-9]+")
INT64_DIGITS = 19  # a longer run of digits is beyond 64 bits, so in no catalogue

IdKind = Literal["int", "str"]
KIND_WORDS = {"int": "integers", "str": "strings"}


def _integral(value: Any) -> Any:
    """JSON has one number type: 36.0 is the integer 36 (as JSON Schema's "integer" says), 36.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _json_type(value: Any) -> str:
    """The type of a parsed JSON value, as the messages name it."""
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"),
                       (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _shown(value: Any) -> str:
    """A request value as JSON, cut short."""
    try:
        return shorten(json.dumps(value))
    except (TypeError, ValueError):
        return type(value).__name__


def _mismatch(what: str, kind: str, value: Any, got: str | None = None) -> str:
    """The message of an id of the wrong type: what the model's ids are, and what came (``got``: its type)."""
    return f"this model's {what} ids are {KIND_WORDS[kind]}; got {_shown(value)} ({got or _json_type(value)})"


def _id_type(kind: str, what: str) -> Any:
    """The request type of a ``what`` id of a model whose ids are of ``kind``.

    A value of the other type gets a 422 naming the model's id type, rather than pydantic's
    "Input should be a valid integer", which does not say that the model decides.
    """
    def check(value: Any) -> Any:
        if kind == "int":
            value = _integral(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif isinstance(value, str):
            return value
        raise PydanticCustomError("id_type", "{message}", {"message": _mismatch(what, kind, value)})

    return Annotated[StrictInt if kind == "int" else StrIdText, BeforeValidator(check)]


# a longer string id is a 422: it is in no catalogue, and the request's cost should not depend on it
StrIdText = Annotated[StrictStr, StringConstraints(max_length=MAX_ID_CHARS)]


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]  # no strings, no bools, no 36.5
AnyId = Annotated[StrictInt | StrictStr, BeforeValidator(_integral)]  # the generic models; each app narrows it
IntKey = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+$")]
# the bounds of float32, in which plays are stored: a smaller count would become 0
MIN_PLAYS = 1e-30


def _plays_in_range(value: float) -> float:
    if not MIN_PLAYS <= value <= MAX_WEIGHT:
        raise PydanticCustomError("plays_range", "a play count must be from 1e-30 to 1e30 (float32's range); got {v}",
                                  {"v": value})
    return value


Plays = Annotated[StrictFloat, Field(allow_inf_nan=False), AfterValidator(_plays_in_range),
                  WithJsonSchema({"type": "number", "minimum": MIN_PLAYS, "maximum": MAX_WEIGHT})]
Finite = Annotated[float, Field(allow_inf_nan=False)]  # a NaN score is a 500, not a null
ResponseId = int | str


def _history_form(value: Any) -> str:
    return "dict" if isinstance(value, dict) else "list"


def _history_type(artist_id: Any, key: Any, max_history: int = MAX_HISTORY) -> Any:
    """``artists`` of a history request: a list of ``artist_id`` or an object of ``key`` -> plays."""
    # pydantic documents pattern-checked keys as patternProperties, which let any other key through
    closed: JsonDict = {"additionalProperties": False}
    return Annotated[
        Annotated[list[artist_id], Field(min_length=1, max_length=max_history), Tag("list")]
        | Annotated[dict[key, Plays], Field(min_length=1, max_length=max_history,
                                            json_schema_extra=closed if key is IntKey else None), Tag("dict")],
        Discriminator(_history_form),  # errors name the one form sent, not both
    ]


def _id_list(artist_id: Any) -> Any:
    """``exclude`` and ``allow``: a list of ``artist_id``, or null for no rule."""
    return list[artist_id] | None


def _n_field(max_n: int = MAX_N) -> Any:
    return Field(min(DEFAULT_N, max_n), ge=1, le=max_n, description=f"number of artists (1..{max_n})")


def _artists_field(max_history: int = MAX_HISTORY) -> Any:
    return Field(..., description=f"artist ids (a repeated id counts once more), or artist id -> plays (> 0); "
                                  f"1 to {max_history:,} entries")


def _exclude_field() -> Any:
    return Field(None, max_length=MAX_RULE_IDS,
                 description=f"artist ids never to recommend (at most {MAX_RULE_IDS:,}; ids not in the catalogue "
                             "are ignored); null or absent: none")


def _allow_field() -> Any:
    return Field(None, min_length=1, max_length=MAX_RULE_IDS,
                 description=f"only these artists may be recommended (1 to {MAX_RULE_IDS:,} ids, at least one "
                             "in the catalogue; others are ignored); null or absent: the whole catalogue")


FILTER_KNOWN = ("leave out the artists the listener knows (a user's played and tagged artists, a history's "
                "artists); false lets them come back")


class Strict(BaseModel):
    """A request body: a field it does not define is a 422, never ignored (a misspelt rule would be)."""

    model_config = ConfigDict(extra="forbid")


class RecommendRequest(Strict):
    """Body of ``POST /recommend``."""

    user_id: AnyId = Field(..., description="a user of the training data")
    n: JsonInt = _n_field()
    explain: StrictBool = True
    exclude: list[AnyId] | None = _exclude_field()
    allow: list[AnyId] | None = _allow_field()
    filter_known: StrictBool = Field(True, description=FILTER_KNOWN)


class HistoryRequest(Strict):
    """Body of ``POST /recommend/history``: artist ids, or artist id -> plays."""

    artists: _history_type(AnyId, str) = _artists_field()  # type: ignore[valid-type]
    n: JsonInt = _n_field()
    explain: StrictBool = True
    exclude: list[AnyId] | None = _exclude_field()
    allow: list[AnyId] | None = _allow_field()
    filter_known: StrictBool = Field(True, description=FILTER_KNOWN)


class BatchHistory(Strict):
    """One new listener of ``POST /recommend/batch``: a label of the caller's and a history."""

    id: AnyId = Field(..., description="the caller's label for this listener, echoed in the answer")
    artists: _history_type(AnyId, str) = _artists_field()  # type: ignore[valid-type]


class BatchRequest(Strict):
    """Body of ``POST /recommend/batch``: known users and new listeners' histories, scored in one call."""

    users: list[AnyId] = Field(default_factory=list, description="users of the training data")
    histories: list[BatchHistory] = Field(default_factory=list, description="new listeners, with their histories")
    n: JsonInt = _n_field()
    explain: StrictBool = False
    exclude: list[AnyId] | None = _exclude_field()
    allow: list[AnyId] | None = _allow_field()
    filter_known: StrictBool = Field(True, description=FILTER_KNOWN)


Body = TypeVar("Body", RecommendRequest, HistoryRequest, BatchRequest, BatchHistory)


def _for_model(request: type[Body], user_kind: str, artist_kind: str, max_n: int,
               max_history: int = MAX_HISTORY, max_batch: int = MAX_BATCH) -> type[Body]:
    """``request`` with its ids typed as the model's, ``n`` checked as 1..max_n and histories bounded (per app)."""
    artist_id = _id_type(artist_kind, "artist")
    fields: dict[str, Any] = {
        "n": (JsonInt, _n_field(max_n)),
        "exclude": (_id_list(artist_id), _exclude_field()),
        "allow": (_id_list(artist_id), _allow_field()),
    }
    if "n" not in request.model_fields:  # a batch's history item: only its artists are typed here
        fields = {}
    if "user_id" in request.model_fields:
        fields["user_id"] = (_id_type(user_kind, "user"), Field(..., description="a user of the training data"))
    if "artists" in request.model_fields:
        # for integer ids an object's keys are strings of digits; for string ids they are the ids
        key = IntKey if artist_kind == "int" else StrIdText
        fields["artists"] = (_history_type(artist_id, key, max_history), _artists_field(max_history))
    if "users" in request.model_fields:  # the batch: its own ids, bounded lists, its histories typed alike
        item = _for_model(BatchHistory, user_kind, artist_kind, max_n, max_history)
        fields["users"] = (list[_id_type(user_kind, "user")],  # type: ignore[misc]
                           Field(default_factory=list, max_length=max_batch, description=(
                               f"users of the training data (at most {max_batch:,})")))
        fields["histories"] = (list[item], Field(default_factory=list, max_length=max_batch,  # type: ignore[valid-type]
                                                 description=f"new listeners, with their histories (at most "
                                                             f"{max_batch:,}; ids echoed back in order)"))
    return create_model(request.__name__, __base__=request, __doc__=request.__doc__, **fields)


class ErrorMessage(BaseModel):
    """Every error but a validation error (422): what went wrong, in words."""

    detail: str


class Because(BaseModel):
    artist_id: ResponseId
    name: str


class Explanation(BaseModel):
    sources: dict[str, int] = Field(description="candidate source -> the artist's rank in it")
    because: list[Because] = Field(description="the listener's artists closest to this one")
    contributions: dict[str, Finite] = Field(description="the ranker's largest feature contributions")
    reason: str


class Recommendation(BaseModel):
    rank: int
    artist_id: ResponseId
    name: str
    score: Finite
    explanation: Explanation | SkipJsonSchema[None] = Field(None, description="when explain is true")


class Recommendations(BaseModel):
    """Answer of ``POST /recommend``."""

    user_id: ResponseId
    recommendations: list[Recommendation] = Field(description="best first; fewer than n only when the rules "
                                                              "leave fewer")


class HistoryRecommendations(BaseModel):
    """Answer of ``POST /recommend/history``."""

    unknown_artists: list[ResponseId] = Field(description="history artist ids not in the catalogue (ignored)")
    recommendations: list[Recommendation] = Field(description="best first; fewer than n only when the rules "
                                                              "leave fewer")


class UserRecommendations(BaseModel):
    user_id: ResponseId
    recommendations: list[Recommendation]


class ListenerRecommendations(BaseModel):
    id: ResponseId = Field(description="the label the request gave this history")
    unknown_artists: list[ResponseId] = Field(description="history artist ids not in the catalogue (ignored)")
    recommendations: list[Recommendation] = Field(description="best first; empty when no artist of the history "
                                                              "is in the catalogue")


class BatchRecommendations(BaseModel):
    """Answer of ``POST /recommend/batch``, in the order of the request."""

    users: list[UserRecommendations] = Field(description="each known user of the request")
    histories: list[ListenerRecommendations]
    unknown_users: list[ResponseId] = Field(description="user ids not in the training data (no answer for them)")


class SimilarArtist(BaseModel):
    rank: int
    artist_id: ResponseId
    name: str
    similarity: Finite


class SimilarArtists(BaseModel):
    """Answer of ``GET /artists/{artist_id}/similar``."""

    artist_id: ResponseId
    name: str
    space: Literal["tags", "als", "ease", "popularity"] = Field(
        description="what decided similarity: the tag embedding, else (a model without tags) ALS factors, "
                    "EASE weights, or the popularity and freshness blocks")
    similar: list[SimilarArtist]


class Health(BaseModel):
    """Answer of ``GET /health``."""

    status: str
    funnel_version: str
    format_version: int
    data_fingerprint: str
    n_users: int
    n_artists: int
    user_id_type: IdKind = Field(description="JSON type of user ids in requests and answers: integers or strings")
    artist_id_type: IdKind = Field(description="JSON type of artist ids in requests and answers")
    sources: list[str]
    max_n: int
    max_history: int = Field(description="most artists a history may hold")
    max_batch: int = Field(description="most users, and most histories, in one batch request")
    max_cost: int = Field(description="most artist entries one request may make the model read (its histories' "
                                      "artists and its known users' training histories)")
    trained: dict[str, Any] = Field(description="the served model's provenance from its manifest: saved_at, "
                                                "format_version, versions (funnel and libraries at training time); "
                                                "empty for a model served from memory")


class ReloadRequest(Strict):
    """Body of ``POST /admin/reload`` (optional): another model directory to serve instead."""

    model_dir: StrictStr | None = Field(None, description="a saved model's directory on the server; default: the "
                                                          "one being served, loaded again")


class Reloaded(BaseModel):
    """Answer of ``POST /admin/reload``."""

    status: Literal["reloaded"]
    model_dir: str
    data_fingerprint: str
    previous_data_fingerprint: str


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its error statuses (and 413, 500) with ``ErrorMessage`` bodies."""
    common = {408: "The request body was not received within the time budget",
              413: "The request body is over the size limit", 500: "Unexpected error; details in the server log"}
    return {code: {"model": ErrorMessage, "description": text}
            for code, text in sorted({**descriptions, **common}.items())}


class BodyLimit:
    """ASGI middleware answering 413 to request bodies over ``max_bytes`` (declared or streamed).

    A body not received within ``max_seconds`` answers 408: a client that sends slowly does
    not keep its admission slot (:class:`Admit`) for longer than a request may take.
    """

    def __init__(self, app: Any, max_bytes: int, max_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes)
        import anyio

        body, received, more = b"", 0, True
        # read the body to its end even when too large (discarding it), so that the client,
        # still sending, gets the 413 instead of a reset connection; give up past DRAIN_BYTES
        with anyio.move_on_after(self.max_seconds) as reading:
            while more and received <= DRAIN_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                more = message.get("more_body", False)
                too_large = too_large or received > self.max_bytes
                if not too_large:
                    body += chunk
        if reading.cancelled_caught:
            await _send_json(send, 408, b'{"detail":"the request body was not received within %g s; send it '
                                        b'at once"}' % self.max_seconds)
            return
        if too_large:
            await self._too_large(send)
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        await _send_json(send, 413, b'{"detail":"request body too large: the limit is %d bytes"}' % self.max_bytes)


async def _send_json(send: Any, status: int, payload: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``status`` with the JSON ``payload`` from an ASGI middleware."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


class CatchErrors:
    """ASGI middleware answering an unhandled exception with a 500 and logging its traceback once.

    Starlette's own last handler re-raises after answering, so the server logs the same
    traceback a second time; this one, inside it, does not.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # the answer is under way: nothing better to do than to end it
                return
            await _send_json(send, 500, b'{"detail":"internal error; see the server log"}')


# the routes whose requests are admitted (:class:`Admit`) and run within the time budget
SCORING_ROUTES = {"/recommend", "/recommend/history", "/recommend/batch", "/artists/{artist_id:path}/similar"}
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class Metrics:
    """ASGI middleware counting answers by endpoint and status, and timing them, for ``GET /metrics``.

    The endpoint is the route's path template (``/artists/{artist_id}/similar``), so ids do
    not become labels; requests no route matched are ``unmatched``, and a method HTTP does
    not define is ``other``. Each application has
    its own registry (prometheus-client's ``CollectorRegistry``).
    """

    def __init__(self, app: Any, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.app = app
        self.requests = Counter("funnel_requests", "HTTP requests answered", ["endpoint", "method", "status"],
                                registry=registry)
        self.latency = Histogram("funnel_request_duration_seconds", "Time to answer a request, by endpoint",
                                 ["endpoint"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recorded(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"  # labels stay bounded
            self.requests.labels(endpoint, method, str(status)).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - started)


class _Ticket:
    """A request's admission: its slot is given back when the request has answered *and* its work has ended."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._holders = 1  # the request itself
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Keep the slot for work that may outlive the request (released by that work's end)."""
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._slots.release()


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar("funnel_admission", default=None)


class Admission:
    """The bound on scoring requests in the service, and the pool of threads that scores them.

    At most ``threads`` requests are scored at once, on a pool of that many threads, and at
    most ``queue`` more wait for one; a request beyond both answers 503 with ``Retry-After``
    before its body is read. A request holds its slot until its answer has gone *and* its
    computation has ended: one that answered 503 past the time budget keeps its slot while
    Python finishes the work it cannot interrupt, so clients that retry cannot stack up work
    (or memory, or threads) beyond the bound. Only the scoring routes are admitted this way;
    ``/health``, ``/metrics`` and the documents always answer (:class:`Admit` is the middleware).
    """

    def __init__(self, threads: int, queue: int) -> None:
        self.threads, self.queue = threads, queue
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="funnel-score")
        self.slots = threading.BoundedSemaphore(threads + queue)

    def run(self, work: Any) -> asyncio.Future:
        """``work()`` on the scoring pool, keeping the calling request's slot until it ends."""
        future = self.executor.submit(work)
        ticket = _TICKET.get()
        if ticket is not None:
            ticket.hold()
            future.add_done_callback(lambda _: ticket.release())
        return asyncio.wrap_future(future)


class Admit:
    """ASGI middleware admitting scoring requests into an :class:`Admission`, or answering 503.

    ``router``'s routes whose path is in ``scoring`` are admitted; a request without a valid
    credential (``authorized``, None: no keys) takes no slot and goes on to its 401.
    """

    def __init__(self, app: Any, admission: Admission, router: Any, scoring: set[str],
                 authorized: Callable[[dict], bool] | None) -> None:
        self.app = app
        self.slots = admission.slots
        self.router, self.scoring, self.authorized = router, scoring, authorized

    def scoring_route(self, scope: dict) -> Any:
        """The scoring route ``scope`` calls, or None (another route, or no route)."""
        from starlette.routing import Match

        if scope["type"] != "http":
            return None
        for route in self.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                return route if getattr(route, "path", None) in self.scoring else None
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = self.scoring_route(scope)
        if route is None or (self.authorized is not None and not self.authorized(scope)):
            await self.app(scope, receive, send)
            return
        if not self.slots.acquire(blocking=False):
            scope["route"] = route  # for the metrics: answered here, before routing
            await _send_json(send, 503, b'{"detail":"the service is at capacity: every scoring slot is taken; '
                                        b'retry later"}', [(b"retry-after", b"1")])
            return
        ticket = _Ticket(self.slots)
        token = _TICKET.set(ticket)
        try:
            await self.app(scope, receive, send)
        finally:
            _TICKET.reset(token)
            ticket.release()


def _rules(body: Any) -> dict[str, Any]:
    """The business rules and the explain flag of a request, as the model's keyword arguments."""
    return {"explain": body.explain, "exclude": body.exclude, "allow": body.allow, "filter_known": body.filter_known}


def _scalar(value: Any) -> Any:
    """A numpy id (int64 or str_) as the Python int or str JSON encodes as the model's type."""
    return value.item() if hasattr(value, "item") else value


def _records(frame: pd.DataFrame, explain: bool) -> list[dict[str, Any]]:
    records = []
    for row in frame.itertuples(index=False):
        record: dict[str, Any] = {"rank": int(row.rank), "artist_id": _scalar(row.artist_id),
                                  "name": str(row.artist_name), "score": float(row.score)}
        if explain:
            record["explanation"] = {
                "sources": row.sources,
                "because": [{"artist_id": _scalar(a), "name": b} for a, b in zip(row.because_ids, row.because)],
                "contributions": row.contributions, "reason": row.reason}
        records.append(record)
    return records


@dataclass(frozen=True)
class _Served:
    """The model being served, its directory (None: given as an object) and its manifest's provenance."""

    model: Recommender
    directory: str | None
    provenance: dict[str, Any]


def _model_dir(directory: str) -> str:
    """A saved model's directory: ``directory`` itself, or the ``model/`` of a main.py ``--artifacts`` one."""
    path = os.path.join(directory, "model")
    return path if not os.path.isfile(os.path.join(directory, "manifest.json")) and os.path.isdir(path) else directory


def _load(directory: str) -> Recommender:
    # one thread per call: the server's threads, each on a request, are the parallelism
    model = Recommender.load(directory, mmap=True, n_threads=1, show_progress=False)
    logger.info("loaded model from %s (%d users with %s ids, %d artists with %s ids)", directory,
                len(model.user_ids_), id_kind(model.user_ids_), len(model.artist_ids_), id_kind(model.artist_ids_))
    return model


def _provenance(directory: str | None) -> dict[str, Any]:
    """What the manifest says of the training run: when it was saved, its format and library versions."""
    if directory is None:
        return {}
    manifest = load_json(os.path.join(directory, "manifest.json"))
    return {key: manifest[key] for key in ("saved_at", "format_version", "versions") if key in manifest}


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ENV = {"model": "FUNNEL_MODEL_DIR", "max_n": "FUNNEL_MAX_N", "max_history": "FUNNEL_MAX_HISTORY",
       "max_batch": "FUNNEL_MAX_BATCH", "cors_origins": "FUNNEL_CORS_ORIGINS", "time_budget": "FUNNEL_TIME_BUDGET",
       "max_cost": "FUNNEL_MAX_COST", "threads": "FUNNEL_THREADS", "queue": "FUNNEL_QUEUE"}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _env_number(name: str, default: Any, parse: Any = int, least: int = 1) -> Any:
    """The number in setting ``name``'s environment variable (``parse``: int from ``least``, or float seconds)."""
    text = os.environ.get(ENV[name])
    if text is None or text == "":
        return default
    try:
        value = parse(text)
    except ValueError:
        value = least - 1
    if not (value >= least if parse is int else 0 < value < float("inf")):
        raise ConfigError(f"{ENV[name]}={text!r} must be " + (f"a whole number of at least {least}" if parse is int
                                                              else "a number of seconds above 0"))
    return value


def create_app(model: Recommender | str | os.PathLike | None = None, max_n: int | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, api_keys: APIKeys | None = None,
               cors_origins: Sequence[str] | None = None, max_history: int | None = None,
               max_batch: int | None = None, time_budget: float | None = None, max_cost: int | None = None,
               threads: int | None = None, queue: int | None = None) -> Any:
    """A FastAPI application serving ``model``; called with no arguments, the app of the environment.

    ``uvicorn --factory funnel.serving:create_app --workers 2`` (or gunicorn with uvicorn's
    worker, ``'funnel.serving:create_app()'``) builds one app per worker process from
    ``FUNNEL_MODEL_DIR``, ``FUNNEL_MAX_N``, ``FUNNEL_MAX_HISTORY``, ``FUNNEL_MAX_BATCH``,
    ``FUNNEL_TIME_BUDGET``, ``FUNNEL_MAX_COST``, ``FUNNEL_THREADS``, ``FUNNEL_QUEUE``,
    ``FUNNEL_CORS_ORIGINS`` (comma-separated) and ``FUNNEL_API_KEY_FILE``; an argument
    given here wins over its variable.

    Parameters
    ----------
    model : Recommender or path, optional
        A fitted or loaded model, or the directory of a saved one (default:
        ``$FUNNEL_MODEL_DIR``), with integer or string ids; requests must send ids of the
        same type (anything else is a 422 saying which type the model's ids are).
    max_n : int
        Largest ``n`` a request may ask for (capped at the catalogue size).
    max_body_bytes : int
        Larger request bodies get 413.
    api_keys : APIKeys, optional
        With keys, every endpoint but ``/health`` (and the API description, ``/docs`` and
        ``/openapi.json``) answers 401 unless the request carries one of them, as
        ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. None: no access control.
    cors_origins : sequence of str
        Origins a browser may call the service from (CORS); none by default.
    max_history : int
        Most artists a history may hold (longer ones are a 422): a request's cost grows
        with its history.
    max_batch : int
        Most users, and most histories, in one ``POST /recommend/batch``.
    time_budget : float
        Seconds a request may take (default 10): past it the request answers 503 with
        ``Retry-After`` at once. The abandoned computation cannot be interrupted: it ends on
        its thread and keeps its request's admission slot until then.
    max_cost : int
        Most artist entries one request may make the model read: the artists of its
        histories plus the training histories of its known users (default
        ``4 * max_history``); more is a 422.
    threads : int
        Requests scored at once, each on a thread of the service's pool (default: the
        cores this process may use, at least 2).
    queue : int
        Requests admitted to wait for a scoring thread (default ``4 * threads``); a request
        beyond ``threads + queue`` answers 503 with ``Retry-After`` before its body is read.

    Returns
    -------
    fastapi.FastAPI
        With ``GET /health``, ``POST /recommend``, ``POST /recommend/history`` and
        ``GET /artists/{artist_id}/similar``; OpenAPI docs at ``/docs``.
    """
    from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

    if model is None:
        model = os.environ.get(ENV["model"]) or None
        if model is None:
            raise ConfigError(f"no model to serve: pass create_app(model) or set {ENV['model']} to a saved "
                              "model's directory")
    directory: str | None = None
    if not isinstance(model, Recommender):
        directory = _model_dir(os.fspath(model))
        model = _load(directory)
    if api_keys is None:
        api_keys = APIKeys.from_env()
    if cors_origins is None:
        cors_origins = [o.strip() for o in os.environ.get(ENV["cors_origins"], "").split(",") if o.strip()]
    max_n = max_n if max_n is not None else _env_number("max_n", MAX_N)
    max_history = max_history if max_history is not None else _env_number("max_history", MAX_HISTORY)
    max_batch = max_batch if max_batch is not None else _env_number("max_batch", MAX_BATCH)
    time_budget = time_budget if time_budget is not None else _env_number("time_budget", TIME_BUDGET, float)
    max_cost = max_cost if max_cost is not None else _env_number("max_cost", 4 * max_history)
    # two at least: on one core a cheap request still need not wait for a costly one to end
    threads = threads if threads is not None else _env_number("threads", max(2, usable_cores()))
    queue = queue if queue is not None else _env_number("queue", QUEUE_PER_THREAD * threads, int, 0)
    for name, value in (("max_cost", max_cost), ("threads", threads), ("queue", queue)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (name != "queue"):
            raise ConfigError(f"{name} must be a whole number of at least {int(name != 'queue')}, not {value!r}")
    if not time_budget > 0:
        raise ConfigError(f"time_budget must be a number of seconds above 0, not {time_budget!r}")
    model.check_fitted()
    max_n = min(max_n, len(model.artist_ids_) - 1)
    user_kind, artist_kind = id_kind(model.user_ids_), id_kind(model.artist_ids_)
    # what is served; a reload replaces it in one assignment, and a request reads it once, at its start
    current = _Served(model, directory, _provenance(directory))
    reloading = threading.Lock()  # one reload at a time; requests never wait for it
    admission = Admission(threads, queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        admission.executor.shutdown(wait=False, cancel_futures=True)  # work under way ends on its own

    # no ReDoc and no OAuth2 redirect page: /docs and /openapi.json are the documents, API keys the only scheme
    app = FastAPI(title="funnel", version=__version__, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  lifespan=lifespan,
                  description="Two-stage music-artist recommendations from a saved funnel model. "
                              f"User ids are {KIND_WORDS[user_kind]}, artist ids {KIND_WORDS[artist_kind]}.")
    app.add_middleware(CatchErrors)  # innermost of these: the metrics count its 500s
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, max_seconds=time_budget)

    def authorized(scope: dict) -> bool:
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        return api_keys is not None and api_keys.request_role(headers.getlist("x-api-key"),
                                                              headers.getlist("authorization")) is not None

    # before the body is read (a refused request costs nothing), within CORS (a browser reads the 503)
    app.add_middleware(Admit, admission=admission, router=app.router, scoring=SCORING_ROUTES,
                       authorized=authorized if api_keys is not None else None)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    from prometheus_client import CollectorRegistry, Info

    registry = CollectorRegistry()
    model_info = Info("funnel_model", "The served model's provenance", registry=registry)

    def describe(served: _Served) -> None:
        model_info.info({"format_version": str(FORMAT_VERSION), "funnel_version": __version__,
                         "data_fingerprint": served.model.fingerprint_,
                         "n_artists": str(len(served.model.artist_ids_)),
                         "saved_at": str(served.provenance.get("saved_at", ""))})
    describe(current)
    app.add_middleware(Metrics, registry=registry)  # outermost: it counts the 413s of BodyLimit too
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")

    def role_of(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                key: Annotated[str | None, Depends(header)]) -> str:
        """The role of the request's key; 401 without one of the service's keys.

        Every header sent is read (:meth:`APIKeys.request_role`); ``credentials`` and ``key``
        (the first of each header) are there for the OpenAPI document.
        """
        role = api_keys.request_role(request.headers.getlist("x-api-key"),
                                     request.headers.getlist("authorization")) if api_keys else None
        if role is None:
            raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                detail="missing or unknown API key: send Authorization: Bearer KEY or X-API-Key: KEY")
        return role

    guard: list[Any] = [Depends(role_of)] if api_keys is not None else []

    def no_keys() -> None:
        if api_keys is None:  # checked before the key: without keys an admin endpoint is closed, not open
            raise HTTPException(status_code=403, detail="admin endpoints need API keys: start the service with "
                                                        "--api-key-file FILE holding an admin key")

    def require_admin(role: Annotated[str, Depends(role_of)]) -> None:
        if role != ADMIN:
            raise HTTPException(status_code=403, detail="this endpoint needs an admin key")

    def errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
        keys = {401: "No API key, or not one of the service's keys"} if api_keys is not None else {}
        return _errors({**descriptions, **keys})
    recommend_request = _for_model(RecommendRequest, user_kind, artist_kind, max_n)
    history_request = _for_model(HistoryRequest, user_kind, artist_kind, max_n, max_history)
    batch_request = _for_model(BatchRequest, user_kind, artist_kind, max_n, max_history, max_batch)

    def unprocessable(loc: tuple, message: str) -> JSONResponse:
        """A 422 shaped like FastAPI's (the documented ``HTTPValidationError``)."""
        return JSONResponse(status_code=422,
                            content={"detail": [{"loc": list(loc), "msg": message, "type": "value_error"}]})

    def invalid_input(loc: tuple, message: str, kind: str = "value_error") -> RequestValidationError:
        return RequestValidationError([{"loc": loc, "msg": message, "type": kind}])

    def query_takes(*names: str) -> Any:
        """A dependency refusing query parameters but ``names``: FastAPI would ignore them silently."""
        takes = f"this endpoint takes only {', '.join(names)}" if names else "this endpoint takes none"

        def check(request: Request) -> None:
            unknown = [name for name in request.query_params if name not in names]
            if unknown:
                raise RequestValidationError(
                    [{"loc": ("query", name), "msg": f"unknown query parameter; {takes}", "type": "extra_forbidden"}
                     for name in dict.fromkeys(unknown)])
        return Depends(check)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the whole input back; report where and what only
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()[:20]]
        if any(e["loc"] == ["body"] for e in errors):
            errors.append({"loc": ["body"], "type": "hint",
                           "msg": "send a JSON object with the header Content-Type: application/json"})
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(UnknownUserError)
    async def unknown_user(request: Request, exc: UnknownUserError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(FunnelError)
    async def bad_input(request: Request, exc: FunnelError) -> JSONResponse:
        if isinstance(exc, (DataError, ConfigError)):  # e.g. an allow-list naming no catalogue artist
            return unprocessable(("body",) if request.method == "POST" else ("query",), str(exc))
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    from threadpoolctl import ThreadpoolController

    openmp = ThreadpoolController().select(user_api="openmp")  # FAISS's runtime among them, loaded with the model

    def one_thread(handler: Any, *args: Any, **kwargs: Any) -> Any:
        # OpenMP's thread count is per calling thread: without this each of the server's threads
        # keeps a team of its own, whose idle threads spin and take the cores from the others
        with openmp.limit(limits=1):
            return handler(*args, **kwargs)

    def budgeted(handler: Any) -> Any:
        """``handler`` run on a thread of the server's pool, answering 503 once past the time budget."""
        import anyio

        @functools.wraps(handler)
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                with anyio.fail_after(time_budget):
                    # cancelled past the budget: work not yet started never starts, work under way
                    # ends on its thread and keeps the request's admission slot until it does
                    return await admission.run(functools.partial(one_thread, handler, *args, **kwargs))
            except TimeoutError:
                raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                    detail=f"the request took longer than the service's {time_budget:g} s budget; "
                                           "send a shorter history or a smaller batch, or retry later") from None
        return run

    budget_exceeded = (f"The service is at capacity ({threads} requests scored at once, {queue} waiting), or the "
                       f"request took longer than its time budget ({time_budget:g} s); retry after Retry-After "
                       "seconds")

    def check_cost(model: Recommender, users: Any, histories: Sequence[Any]) -> None:
        """422 for a request that would make the model read more than ``max_cost`` artist entries."""
        rows = lookup_ids(model.user_ids_, list(users)) if len(users) else np.empty(0, np.int64)
        rows = rows[rows >= 0]
        indptr = model.history_.indptr
        cost = int((indptr[rows + 1] - indptr[rows]).sum()) + sum(len(history) for history in histories)
        if cost > max_cost:
            raise invalid_input(("body",), f"this request reads {cost:,} artist entries (the histories it sends and "
                                           f"its users' training histories); the service's limit is {max_cost:,}: "
                                           "split it into smaller requests (POST /recommend takes any one user)",
                                 "request_cost")

    unparsable = "The body is not JSON that FastAPI can parse (not UTF-8, or a number too long to convert)"

    # FastAPI documents a 422 only for routes with parameters; /health has none, yet refuses a query
    refused_query: dict[int | str, dict[str, Any]] = {422: {
        "description": "A query parameter (this endpoint takes none)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}

    @app.get("/health", response_model=Health, responses=dict(sorted({**_errors({}), **refused_query}.items())),
             dependencies=[query_takes()])
    def health() -> dict[str, Any]:
        """Model format version, training-data fingerprint, provenance, sizes and id types."""
        served = current
        model = served.model
        return {"status": "ok", "trained": served.provenance, "funnel_version": __version__,
                "format_version": FORMAT_VERSION,
                "data_fingerprint": model.fingerprint_, "n_users": len(model.user_ids_),
                "n_artists": len(model.artist_ids_), "user_id_type": user_kind, "artist_id_type": artist_kind,
                "sources": model.stages_.source_names, "max_n": max_n, "max_history": max_history,
                "max_batch": max_batch, "max_cost": max_cost}

    @app.post("/recommend", response_model=Recommendations, response_model_exclude_unset=True,
              responses=errors({400: unparsable, 404: "Unknown user id: not in the training data",
                                503: budget_exceeded}),
              dependencies=[*guard, query_takes()])
    @budgeted
    def recommend(payload: recommend_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a known user, under the request's rules; 404 for an unknown user."""
        model = current.model  # a reload during this request leaves it on the model it started with
        body = cast(RecommendRequest, payload)  # one user is never too costly: the model holds its history
        # an unknown user (an id past 64 bits too) raises UnknownUserError: 404
        if allows_nothing(model, body) and lookup_ids(model.user_ids_, [body.user_id])[0] >= 0:
            return {"user_id": body.user_id, "recommendations": []}
        frame = model.recommend(body.user_id, n=body.n, **_rules(body))
        return {"user_id": body.user_id, "recommendations": _records(frame, body.explain)}

    def int_keys(history: Any) -> Any:
        """An object history's keys as the integer ids they spell (they match -?[0-9]+).

        Keys that spell one id (``"289"``, ``"0289"``) add their plays, as a repeated id of a
        list history counts once more.
        """
        if isinstance(history, dict) and artist_kind == "int":
            plays: dict[int, float] = {}
            try:
                for key, value in history.items():
                    plays[int(key)] = plays.get(int(key), 0.0) + value
            except ValueError:  # over sys.get_int_max_str_digits() digits
                raise invalid_input(("body", "artists"), "an artist id has too many digits") from None
            return plays
        return history

    def known_history(model: Recommender, history: Any, loc: tuple, label: str = "") -> tuple[Any, list]:
        """A history's catalogue artists as one CSR row of plays (None if it has none), and its other ids.

        Ids in no catalogue, those beyond 64 bits too, are listed, not an error; with none
        known there is nothing to score, which is an empty answer.
        """
        listed = list(dict.fromkeys(history))
        columns = lookup_ids(model.artist_ids_, listed)
        unknown = [artist for artist, column in zip(listed, columns) if column < 0]
        if len(unknown) == len(listed):
            return None, unknown
        if unknown:
            drop = set(unknown)
            history = ({a: v for a, v in history.items() if a not in drop} if isinstance(history, dict)
                       else [a for a in history if a not in drop])
        try:
            return parse_history(history, model.artist_ids_)[0], unknown
        except DataError as exc:
            raise invalid_input(loc, f"{label}{exc}") from None

    def plays_of(row: Any) -> np.ndarray:
        """A parsed history's plays as float64 within the bound (float32 rounds 1e30 up to 1.0000000150e30)."""
        return np.minimum(row.data.astype(np.float64), MAX_WEIGHT)

    def allows_nothing(model: Recommender, body: Any) -> bool:
        """An allow-list naming no catalogue artist: nothing may be recommended (an empty answer)."""
        return body.allow is not None and bool((lookup_ids(model.artist_ids_, list(body.allow)) < 0).all())

    @app.post("/recommend/history", response_model=HistoryRecommendations, response_model_exclude_unset=True,
              responses=errors({400: unparsable, 404: "Not sent by this route: unknown artists are listed in "
                                "unknown_artists", 503: budget_exceeded}),
              dependencies=[*guard, query_takes()])
    @budgeted
    def recommend_history(payload: history_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a new listener from a history of artist ids or id -> plays, under the rules."""
        model = current.model  # a reload during this request leaves it on the model it started with
        body = cast(HistoryRequest, payload)
        check_cost(model, [], [body.artists])
        row, unknown = known_history(model, int_keys(body.artists), ("body", "artists"))
        if row is None or allows_nothing(model, body):
            return {"unknown_artists": unknown, "recommendations": []}
        history = dict(zip(model.artist_ids_[row.indices].tolist(), plays_of(row).tolist()))
        frame = model.recommend_for_history(history, n=body.n, **_rules(body))
        return {"unknown_artists": unknown, "recommendations": _records(frame, body.explain)}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[*guard, query_takes()],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"},
                        # errors are JSON here too, which FastAPI would document as the route's text/plain
                        **{code: {"description": error["description"], "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}
                           for code, error in errors({}).items()}})
    def metrics() -> PlainTextResponse:
        """Requests by endpoint, method and status; latency histograms by endpoint; the model's provenance."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/recommend/batch", response_model=BatchRecommendations, response_model_exclude_unset=True,
              responses=errors({400: unparsable, 404: "Not sent by this route: unknown users are listed in "
                                "unknown_users", 503: budget_exceeded}),
              dependencies=[*guard, query_takes()])
    @budgeted
    def recommend_batch(payload: batch_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for several known users and new listeners' histories in one call, under one set of rules."""
        model = current.model  # a reload during this request leaves it on the model it started with
        body = cast(BatchRequest, payload)
        users = list(dict.fromkeys(body.users))
        check_cost(model, users, [item.artists for item in body.histories])
        rows = lookup_ids(model.user_ids_, users) if users else np.empty(0, np.int64)
        known = [u for u, r in zip(users, rows) if r >= 0]
        rules = {"n": body.n, **_rules(body)}
        scored_at_all = not allows_nothing(model, body)  # else each user and history gets an empty list
        answer: dict[str, Any] = {"users": [], "histories": [],
                                  "unknown_users": [u for u, r in zip(users, rows) if r < 0]}
        if known:
            per_user: dict[Any, pd.DataFrame] = {}
            if scored_at_all:
                per_user = dict(tuple(model.recommend(users=known, **rules).groupby("user_id", sort=False)))
            answer["users"] = [{"user_id": u, "recommendations": _records(per_user[u], body.explain)
                                if u in per_user else []} for u in known]
        parsed, plays = [], []
        for item in body.histories:
            row, unknown = known_history(model, int_keys(item.artists), ("body", "histories"),
                                         f"history {_shown(item.id)}: ")
            if row is None:
                parsed.append((item.id, unknown))
                continue
            # the model sees each history under its position, so labels of any JSON type may mix
            plays.append(pd.DataFrame({"user_id": np.full(row.nnz, len(parsed)),
                                       "artist_id": model.artist_ids_[row.indices],
                                       "weight": plays_of(row)}))
            parsed.append((item.id, unknown))
        if parsed:
            frame = pd.concat(plays, ignore_index=True) if plays else pd.DataFrame()
            per_listener: dict[Any, pd.DataFrame] = {}
            if len(frame) and scored_at_all:
                scored = model.recommend_for_histories(frame, **rules)
                per_listener = dict(tuple(scored.groupby("user_id", sort=False)))
            answer["histories"] = [{"id": label, "unknown_artists": unknown,
                                    "recommendations": _records(per_listener[i], body.explain)
                                    if i in per_listener else []} for i, (label, unknown) in enumerate(parsed)]
        return answer

    # ``:path``: a string id may hold "/" (sent as %2F, which the server decodes before routing)
    path_id = Path(description=f"an artist id of the catalogue ({KIND_WORDS[artist_kind]}); percent-encode "
                               "characters such as / ? # % and spaces")
    path_schema = WithJsonSchema({"type": "integer"} if artist_kind == "int"
                                 else {"type": "string", "maxLength": MAX_ID_CHARS})

    @app.get("/artists/{artist_id:path}/similar", response_model=SimilarArtists,
             responses=errors({404: "Unknown artist id: not in the catalogue", 503: budget_exceeded}),
             dependencies=[*guard, query_takes("n")])
    @budgeted
    def similar(artist_id: Annotated[str, path_id, path_schema],
                n: Annotated[int, Query(ge=1, le=max_n, description=f"number of artists (1..{max_n})")
                             ] = min(DEFAULT_N, max_n)) -> dict[str, Any]:
        """Nearest artists (the tag embedding, else co-listening); 404 for an unknown artist."""
        model = current.model
        wanted: int | str | None = artist_id
        if artist_kind == "int":
            if not INT_ID.fullmatch(artist_id):
                raise invalid_input(("path", "artist_id"), _mismatch("artist", "int", artist_id, "not an integer"),
                                    "id_type")
            # past 19 digits an id is beyond 64 bits, so unknown (and int() of thousands of digits would raise)
            wanted = int(artist_id) if len(artist_id.lstrip("-")) <= INT64_DIGITS else None
        elif len(artist_id) > MAX_ID_CHARS:
            raise invalid_input(("path", "artist_id"), f"a string id has at most {MAX_ID_CHARS} characters; got "
                                                       f"{len(artist_id):,}", "string_too_long")
        column = -1 if wanted is None else int(lookup_ids(model.artist_ids_, [wanted])[0])
        if column < 0:
            label = shorten(artist_id) if artist_kind == "int" else _shown(artist_id)
            raise HTTPException(status_code=404, detail=f"unknown artist id {label}: not in the catalogue")
        frame = model.similar_artists(wanted, n=n)
        return {"artist_id": _scalar(model.artist_ids_[column]), "name": str(model.artist_names_[column]),
                "space": str(frame["space"].iloc[0]) if len(frame) else "tags",
                "similar": [{"rank": int(r.rank), "artist_id": _scalar(r.artist_id), "name": str(r.artist_name),
                             "similarity": float(r.similarity)} for r in frame.itertuples(index=False)]}

    def smoke_test(new: Recommender, old: Recommender, target: str) -> None:
        """Score a history, and a few users when the served model answers for users: all scores finite.

        ConfigError when the new model cannot serve what the served one serves (users, for a
        model saved artist-side only) or scores a non-finite value.
        """
        frames = [new.recommend_for_history([new.artist_ids_[0]], n=min(DEFAULT_N, max_n))]
        if len(old.user_ids_):
            if not len(new.user_ids_):
                raise ConfigError(f"the model in {target} was saved artist-side only and knows no user, while the "
                                  "served one answers POST /recommend for its users: save a full model, or "
                                  "restart the service to serve this one")
            picked = new.user_ids_[np.unique(np.linspace(0, len(new.user_ids_) - 1, 3).astype(np.int64))]
            frames.append(new.recommend(users=picked, n=min(DEFAULT_N, max_n)))
        if not all(np.isfinite(frame["score"].to_numpy(np.float64)).all() for frame in frames):
            raise ConfigError(f"the model in {target} scores non-finite values (NaN or infinity): it is corrupt or "
                              "was trained on broken data; retrain it")

    def reload_model(directory: str | None) -> dict[str, Any]:
        """Load ``directory`` (default: the served one) beside the served model, check it, then swap it in.

        Raises ConfigError (nothing to reload, ids of another kind, a catalogue too small for
        ``max_n``) or what loading raises (ArtifactError); the old model stays served.
        """
        nonlocal current
        with reloading:
            old = current
            target = directory or old.directory
            if target is None:
                raise ConfigError("this service was given a model object, not a directory: name one (model_dir)")
            target = _model_dir(target)
            new = _load(target)
            kinds = (id_kind(new.user_ids_), id_kind(new.artist_ids_))
            if kinds != (user_kind, artist_kind):
                raise ConfigError(f"the model in {target} has {KIND_WORDS[kinds[0]]} user and {KIND_WORDS[kinds[1]]} "
                                  f"artist ids, the served one {KIND_WORDS[user_kind]} and {KIND_WORDS[artist_kind]}: "
                                  "requests are typed by them, so restart the service to serve it")
            if len(new.artist_ids_) - 1 < max_n:
                raise ConfigError(f"the model in {target} has {len(new.artist_ids_)} artists, too few for max_n "
                                  f"{max_n}: restart the service with a lower --max-n")
            smoke_test(new, old.model, target)  # before anyone depends on it
            current = _Served(new, target, _provenance(target))
            describe(current)
            logger.info("now serving %s (data fingerprint %s, was %s)", target, new.fingerprint_,
                        old.model.fingerprint_)
            return {"status": "reloaded", "model_dir": target, "data_fingerprint": new.fingerprint_,
                    "previous_data_fingerprint": old.model.fingerprint_}

    app.state.reload_model = reload_model  # for SIGHUP (serve)

    @app.post("/admin/reload", response_model=Reloaded,
              dependencies=[Depends(no_keys), Depends(require_admin), query_takes()],
              responses=dict(sorted({**_errors({400: unparsable}),
                                     401: {"model": ErrorMessage, "description": "No API key, or an unknown one"},
                                     403: {"model": ErrorMessage, "description": "Not an admin key, or the service "
                                                                                 "has no API keys"},
                                     409: {"model": ErrorMessage, "description": "The model could not be loaded or "
                                                                                 "checked; the old one still serves"}
                                     }.items())))
    def reload(payload: ReloadRequest | None = None) -> dict[str, Any]:
        """Load the served model directory again (or ``model_dir``), check it, and swap it in without downtime."""
        try:
            return reload_model(payload.model_dir if payload is not None else None)
        except (FunnelError, OSError) as exc:
            logger.warning("reload failed, still serving %s: %s", current.directory, exc)
            raise HTTPException(status_code=409, detail=f"reload failed, the old model still serves: {exc}") from None

    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket the server listens on, bound now: ConfigError, before the model loads, if it cannot be.

    Made with ``IPPROTO_TCP`` as its protocol, which asyncio reads to turn Nagle's algorithm
    off on every connection it accepts; uvicorn's own socket for several workers leaves it 0,
    and each keep-alive request then waits about 40 ms for a delayed ACK (Kludex/uvicorn#3149).
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      proto=socket.IPPROTO_TCP)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {host}: {exc.strerror}; pass --host with an address of this "
                          "machine") from None
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; stop what uses that port "
                          "or pass another --port") from None
    sock.set_inheritable(True)  # the workers listen on it
    return sock


def _reload_on_sighup(app: Any) -> None:
    """SIGHUP reloads the served directory, on a thread of its own (a signal handler must return quickly)."""
    import signal

    if not hasattr(signal, "SIGHUP"):  # Windows
        return

    def reload() -> None:
        try:
            app.state.reload_model(None)
        except (FunnelError, OSError) as exc:
            logger.warning("reload on SIGHUP failed, the old model still serves: %s", exc)

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(target=reload, daemon=True).start())


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, max_n: int = MAX_N,
          log_level: str = "info", api_key_file: str | None = None, cors_origins: Sequence[str] = (),
          max_history: int = MAX_HISTORY, max_batch: int = MAX_BATCH, workers: int = 1,
          time_budget: float = TIME_BUDGET, max_cost: int | None = None, threads: int | None = None,
          queue: int | None = None) -> None:
    """Serve the model saved in ``model_dir`` with uvicorn until interrupted.

    ``api_key_file`` (default: the ``FUNNEL_API_KEY_FILE`` environment variable) turns on
    access control (:class:`APIKeys`); serving beyond loopback without it logs a warning.
    With ``workers`` > 1, uvicorn's supervisor starts that many worker processes on one
    socket, each building its app with :func:`create_app` from the environment, which this
    function sets; each worker's ``threads`` default to its share of the cores.
    ``max_cost``, ``threads`` and ``queue`` are :func:`create_app`'s.

    Raises
    ------
    ConfigError
        The address cannot be bound (the port is in use, or the host is not this machine's).
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    key_file = key_file_setting(api_key_file)
    api_keys = APIKeys.from_file(key_file) if key_file else None  # a bad file fails here, before any worker
    if api_keys is None and not is_loopback(host):
        logger.warning("serving on %s without API keys: anyone who reaches this address can call the service; "
                       "pass --api-key-file FILE (or set %s)", host, KEY_FILE_ENV)
    if api_keys is not None:
        logger.info("access control: %d API key(s), %d of them admin", len(api_keys.digests),
                    sum(role == ADMIN for _, role in api_keys.digests))
    sock = _listening_socket(host, port)
    logger.info("starting %d worker(s) on http://%s:%d (docs at /docs)", workers, host, port)
    if workers == 1:
        app = create_app(model_dir, max_n=max_n, api_keys=api_keys, cors_origins=list(cors_origins),
                         max_history=max_history, max_batch=max_batch, time_budget=time_budget, max_cost=max_cost,
                         threads=threads, queue=queue)
        _reload_on_sighup(app)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run(sockets=[sock])
        return
    os.environ.update({ENV["model"]: os.fspath(model_dir), ENV["max_n"]: str(max_n),
                       ENV["max_history"]: str(max_history), ENV["max_batch"]: str(max_batch),
                       ENV["time_budget"]: repr(float(time_budget)), ENV["cors_origins"]: ",".join(cors_origins)})
    if key_file:
        os.environ[KEY_FILE_ENV] = os.fspath(key_file)
    # the workers share the cores: each one's BLAS and OpenMP (read when a worker imports them) get its share
    share = str(max(1, usable_cores() // workers))
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, share)
    os.environ.setdefault(ENV["threads"], str(max(2, int(share))))
    for name, value in (("max_cost", max_cost), ("threads", threads), ("queue", queue)):
        if value is not None:
            os.environ[ENV[name]] = str(value)
    config = uvicorn.Config("funnel.serving:create_app", factory=True, host=host, port=port, log_level=log_level,
                            workers=workers)
    Multiprocess(config, sockets=[sock]).run()
