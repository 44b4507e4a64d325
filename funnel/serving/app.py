"""The HTTP service: a FastAPI app around one loaded :class:`funnel.Recommender` (never retrains).

The model is read-only while serving (per-call state lives in each call's batch), but model
calls are still serialised with a lock so that one process never runs several scorings, each
with its own BLAS and OpenMP threads, on the same cores; concurrency comes from request
parsing.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the request models' annotations
import logging
import threading
from typing import Annotated, Any, TypeVar, cast

import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    create_model,
)
from pydantic.json_schema import SkipJsonSchema

from funnel import __version__
from funnel.data.dataset import MAX_WEIGHT, lookup_ids
from funnel.data.history import parse_history
from funnel.errors import ConfigError, DataError, FunnelError, UnknownUserError
from funnel.persistence.model import FORMAT_VERSION
from funnel.recommender import Recommender

logger = logging.getLogger("funnel")

MAX_N = 100
MAX_BODY_BYTES = 1 << 20
MAX_HISTORY = 50_000
DRAIN_BYTES = 64 << 20
DEFAULT_N = 10


def _integral(value: Any) -> Any:
    """JSON has one number type: 36.0 is the integer 36 (as JSON Schema's "integer" says), 36.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]  # no strings, no bools, no 36.5
ArtistKey = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+$")]
Plays = Annotated[StrictFloat, Field(gt=0, le=MAX_WEIGHT, allow_inf_nan=False)]  # the bound of training plays
Finite = Annotated[float, Field(allow_inf_nan=False)]  # a NaN score is a 500, not a null


def _history_form(value: Any) -> str:
    return "dict" if isinstance(value, dict) else "list"


class RecommendRequest(BaseModel):
    """Body of ``POST /recommend``."""

    user_id: JsonInt
    n: JsonInt = Field(DEFAULT_N, ge=1, description="number of artists (1..max_n)")
    explain: StrictBool = True


class HistoryRequest(BaseModel):
    """Body of ``POST /recommend/history``: artist ids, or artist id -> plays."""

    artists: Annotated[
        Annotated[list[JsonInt], Field(min_length=1, max_length=MAX_HISTORY), Tag("list")]
        | Annotated[dict[ArtistKey, Plays], Field(min_length=1, max_length=MAX_HISTORY,
                                                  json_schema_extra={"additionalProperties": False}), Tag("dict")],
        Discriminator(_history_form),  # errors name the one form sent, not both
    ] = Field(..., description="artist ids (a repeated id counts once more), or artist id -> plays (> 0)")
    n: JsonInt = Field(DEFAULT_N, ge=1, description="number of artists (1..max_n)")
    explain: StrictBool = True


Body = TypeVar("Body", RecommendRequest, HistoryRequest)


class ErrorMessage(BaseModel):
    """Every error but a validation error (422): what went wrong, in words."""

    detail: str


class Because(BaseModel):
    artist_id: int
    name: str


class Explanation(BaseModel):
    sources: dict[str, int] = Field(description="candidate source -> the artist's rank in it")
    because: list[Because] = Field(description="the listener's artists closest to this one")
    contributions: dict[str, Finite] = Field(description="the ranker's largest feature contributions")
    reason: str


class Recommendation(BaseModel):
    rank: int
    artist_id: int
    name: str
    score: Finite
    explanation: Explanation | SkipJsonSchema[None] = Field(None, description="when explain is true")


class Recommendations(BaseModel):
    """Answer of ``POST /recommend``."""

    user_id: int
    recommendations: list[Recommendation]


class HistoryRecommendations(BaseModel):
    """Answer of ``POST /recommend/history``."""

    unknown_artists: list[int] = Field(description="history artist ids not in the catalogue (ignored)")
    recommendations: list[Recommendation]


class SimilarArtist(BaseModel):
    rank: int
    artist_id: int
    name: str
    similarity: Finite


class SimilarArtists(BaseModel):
    """Answer of ``GET /artists/{artist_id}/similar``."""

    artist_id: int
    name: str
    similar: list[SimilarArtist]


class Health(BaseModel):
    """Answer of ``GET /health``."""

    status: str
    funnel_version: str
    format_version: int
    data_fingerprint: str
    n_users: int
    n_artists: int
    sources: list[str]
    max_n: int


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its error statuses (and 413, 500) with ``ErrorMessage`` bodies."""
    common = {413: "The request body is over the size limit", 500: "Unexpected error; details in the server log"}
    return {code: {"model": ErrorMessage, "description": text}
            for code, text in sorted({**descriptions, **common}.items())}


def _bounded(model: type[Body], max_n: int) -> type[Body]:
    """``model`` with ``n`` documented and checked as 1..max_n (max_n is known per app only)."""
    n = Field(min(DEFAULT_N, max_n), ge=1, le=max_n, description=f"number of artists (1..{max_n})")
    return create_model(model.__name__, __base__=model, __doc__=model.__doc__, n=(JsonInt, n))


class BodyLimit:
    """ASGI middleware answering 413 to request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes)
        body, received, more = b"", 0, True
        # read the body to its end even when too large (discarding it), so that the client,
        # still sending, gets the 413 instead of a reset connection; give up past DRAIN_BYTES
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
        payload = (b'{"detail":"request body too large: the limit is %d bytes"}' % self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _records(frame: pd.DataFrame, explain: bool) -> list[dict[str, Any]]:
    records = []
    for row in frame.itertuples(index=False):
        record: dict[str, Any] = {"rank": int(row.rank), "artist_id": int(row.artist_id),
                                  "name": str(row.artist_name), "score": float(row.score)}
        if explain:
            record["explanation"] = {
                "sources": row.sources,
                "because": [{"artist_id": int(a), "name": b} for a, b in zip(row.because_ids, row.because)],
                "contributions": row.contributions, "reason": row.reason}
        records.append(record)
    return records


def create_app(model: Recommender, max_n: int = MAX_N, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """A FastAPI application serving ``model``.

    Parameters
    ----------
    model : Recommender
        A fitted or loaded model.
    max_n : int
        Largest ``n`` a request may ask for (capped at the catalogue size).
    max_body_bytes : int
        Larger request bodies get 413.

    Returns
    -------
    fastapi.FastAPI
        With ``GET /health``, ``POST /recommend``, ``POST /recommend/history`` and
        ``GET /artists/{artist_id}/similar``; OpenAPI docs at ``/docs``.
    """
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    model.check_fitted()
    max_n = min(max_n, len(model.artist_ids_) - 1)
    lock = threading.Lock()
    app = FastAPI(title="funnel", version=__version__,
                  description="Two-stage music-artist recommendations from a saved funnel model.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    recommend_request, history_request = _bounded(RecommendRequest, max_n), _bounded(HistoryRequest, max_n)

    def unprocessable(loc: tuple, message: str) -> JSONResponse:
        """A 422 shaped like FastAPI's (the documented ``HTTPValidationError``)."""
        return JSONResponse(status_code=422,
                            content={"detail": [{"loc": list(loc), "msg": message, "type": "value_error"}]})

    def invalid_input(loc: tuple, message: str) -> RequestValidationError:
        return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])

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
        if isinstance(exc, (DataError, ConfigError)):
            return unprocessable(("body",) if request.method == "POST" else ("query",), str(exc))
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})

    unparsable = "The body is not JSON that FastAPI can parse (not UTF-8, or a number too long to convert)"

    @app.get("/health", response_model=Health, responses=_errors({}))
    def health() -> dict[str, Any]:
        """Model format version, training-data fingerprint and sizes."""
        return {"status": "ok", "funnel_version": __version__, "format_version": FORMAT_VERSION,
                "data_fingerprint": model.fingerprint_, "n_users": len(model.user_ids_),
                "n_artists": len(model.artist_ids_), "sources": model.stages_.source_names,
                "max_n": max_n}

    @app.post("/recommend", response_model=Recommendations, response_model_exclude_unset=True,
              responses=_errors({400: unparsable, 404: "Unknown user id: not in the training data"}))
    def recommend(payload: recommend_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a known user; 404 for an unknown one."""
        body = cast(RecommendRequest, payload)
        with lock:  # an unknown user (an id past 64 bits too) raises UnknownUserError: 404
            frame = model.recommend(body.user_id, n=body.n, explain=body.explain)
        return {"user_id": body.user_id, "recommendations": _records(frame, body.explain)}

    @app.post("/recommend/history", response_model=HistoryRecommendations, response_model_exclude_unset=True,
              responses=_errors({400: unparsable, 404: "Not sent by this route: unknown artists are listed in "
                                "unknown_artists, and a history without a known one is a 422"}))
    def recommend_history(payload: history_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a new listener from a history of artist ids or id -> plays."""
        body = cast(HistoryRequest, payload)
        history: Any = body.artists
        if isinstance(history, dict):  # the keys match -?[0-9]+
            try:
                history = {int(key): value for key, value in history.items()}
            except ValueError:  # over sys.get_int_max_str_digits() digits
                raise invalid_input(("body", "artists"), "an artist id has too many digits") from None
        try:
            _, unknown = parse_history(history, model.artist_ids_)  # the model ignores these, with a warning
        except DataError as exc:
            raise invalid_input(("body", "artists"), str(exc)) from None
        with lock:
            frame = model.recommend_for_history(history, n=body.n, explain=body.explain)
        return {"unknown_artists": unknown.tolist(), "recommendations": _records(frame, body.explain)}

    @app.get("/artists/{artist_id}/similar", response_model=SimilarArtists,
             responses=_errors({404: "Unknown artist id: not in the catalogue"}))
    def similar(artist_id: int,
                n: Annotated[int, Query(ge=1, le=max_n, description=f"number of artists (1..{max_n})")
                             ] = min(DEFAULT_N, max_n)) -> dict[str, Any]:
        """Nearest artists in the stage-one embedding; 404 for an unknown artist."""
        column = int(lookup_ids(model.artist_ids_, [artist_id])[0])
        if column < 0:
            raise HTTPException(status_code=404, detail=f"unknown artist id {artist_id}: not in the catalogue")
        with lock:
            frame = model.similar_artists(artist_id, n=n)
        return {"artist_id": artist_id, "name": str(model.artist_names_[column]),
                "similar": [{"rank": int(r.rank), "artist_id": int(r.artist_id), "name": str(r.artist_name),
                             "similarity": float(r.similarity)} for r in frame.itertuples(index=False)]}

    return app


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, max_n: int = MAX_N,
          log_level: str = "info") -> None:
    """Load the model saved in ``model_dir`` and serve it with uvicorn until interrupted."""
    import uvicorn

    model = Recommender.load(model_dir)
    logger.info("loaded model from %s (%d users, %d artists); serving on http://%s:%d (docs at /docs)",
                model_dir, len(model.user_ids_), len(model.artist_ids_), host, port)
    uvicorn.run(create_app(model, max_n=max_n), host=host, port=port, log_level=log_level, workers=1)
