"""Request and answer models of the HTTP service, and the request models typed per served model.

Ids in requests and answers are of the served model's kind: JSON integers for a model
trained on integer ids, JSON strings for one trained on string ids. The request models are
therefore built per application (:func:`for_model`), from the generic ones below.
"""

# no ``from __future__ import annotations`` here: FastAPI reads the request models' annotations
import json
from typing import Annotated, Any, Literal, TypeVar

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

from funnel.data.dataset import MAX_WEIGHT
from funnel.errors import shorten
from funnel.serving.settings import DEFAULTS

MAX_N = DEFAULTS.max_n
MAX_HISTORY = DEFAULTS.max_history
MAX_BATCH = DEFAULTS.max_batch
MAX_RULE_IDS = 10_000  # 10,000 MBIDs are ~390 KB of JSON: both lists fit in the 1 MiB body limit
DEFAULT_N = 10
MAX_ID_CHARS = 512  # characters of a string id in a request (MBIDs have 36)

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


def shown(value: Any) -> str:
    """A request value as JSON, cut short."""
    try:
        return shorten(json.dumps(value))
    except (TypeError, ValueError):
        return type(value).__name__


def mismatch(what: str, kind: str, value: Any, got: str | None = None) -> str:
    """The message of an id of the wrong type: what the model's ids are, and what came (``got``: its type)."""
    return f"this model's {what} ids are {KIND_WORDS[kind]}; got {shown(value)} ({got or _json_type(value)})"


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
        raise PydanticCustomError("id_type", "{message}", {"message": mismatch(what, kind, value)})

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


class Ranked(Strict):
    """What every recommending body takes beside its listeners: the list's length, explanations and the rules."""

    n: JsonInt = _n_field()
    explain: StrictBool = True
    exclude: list[AnyId] | None = _exclude_field()
    allow: list[AnyId] | None = _allow_field()
    filter_known: StrictBool = Field(True, description=FILTER_KNOWN)


class RecommendRequest(Ranked):
    """Body of ``POST /recommend``."""

    user_id: AnyId = Field(..., description="a user of the training data")


class HistoryRequest(Ranked):
    """Body of ``POST /recommend/history``: artist ids, or artist id -> plays."""

    artists: _history_type(AnyId, str) = _artists_field()  # type: ignore[valid-type]


class BatchHistory(Strict):
    """One new listener of ``POST /recommend/batch``: a label of the caller's and a history."""

    id: AnyId = Field(..., description="the caller's label for this listener, echoed in the answer")
    artists: _history_type(AnyId, str) = _artists_field()  # type: ignore[valid-type]


class BatchRequest(Ranked):
    """Body of ``POST /recommend/batch``: known users and new listeners' histories, scored in one call."""

    users: list[AnyId] = Field(default_factory=list, description="users of the training data")
    histories: list[BatchHistory] = Field(default_factory=list, description="new listeners, with their histories")
    explain: StrictBool = False


Body = TypeVar("Body", RecommendRequest, HistoryRequest, BatchRequest, BatchHistory)


def for_model(request: type[Body], user_kind: str, artist_kind: str, max_n: int,
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
        item = for_model(BatchHistory, user_kind, artist_kind, max_n, max_history)
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
    # a str, not a Literal: a part of one's own may offer a space under its own name
    space: str = Field(
        description="what decided similarity: the tag embedding, else (a model without tags) ALS factors, "
                    "EASE weights, or the popularity and freshness blocks; a model with a part of its own "
                    "that offers an artist space may answer in that space",
        examples=["tags", "als", "ease", "popularity"])
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


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its error statuses (and 408, 413, 500) with ``ErrorMessage`` bodies."""
    common = {408: "The request body was not received within the time budget",
              413: "The request body is over the size limit", 500: "Unexpected error; details in the server log"}
    return {code: {"model": ErrorMessage, "description": text}
            for code, text in sorted({**descriptions, **common}.items())}


def rules(body: Any) -> dict[str, Any]:
    """The business rules and the explain flag of a request, as the model's keyword arguments."""
    return {"explain": body.explain, "exclude": body.exclude, "allow": body.allow, "filter_known": body.filter_known}


def scalar(value: Any) -> Any:
    """A numpy id (int64 or str_) as the Python int or str JSON encodes as the model's type."""
    return value.item() if hasattr(value, "item") else value


def records(frame: pd.DataFrame, explain: bool) -> list[dict[str, Any]]:
    """The rows of a recommendation frame as answer records, with their explanations when ``explain``."""
    records = []
    for row in frame.itertuples(index=False):
        record: dict[str, Any] = {"rank": int(row.rank), "artist_id": scalar(row.artist_id),
                                  "name": str(row.artist_name), "score": float(row.score)}
        if explain:
            record["explanation"] = {
                "sources": row.sources,
                "because": [{"artist_id": scalar(a), "name": b} for a, b in zip(row.because_ids, row.because)],
                "contributions": row.contributions, "reason": row.reason}
        records.append(record)
    return records

