"""``POST /recommend``, ``/recommend/history`` and ``/recommend/batch``: artists for users and histories."""

# no ``from __future__ import annotations`` here: FastAPI reads the routes' per-model request types
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
from fastapi import APIRouter

from funnel.data.dataset import MAX_WEIGHT
from funnel.data.history import parse_history
from funnel.data.ids import lookup_ids
from funnel.errors import DataError
from funnel.recommender import Recommender
from funnel.serving.deps import UNPARSABLE, Auth, invalid_input, query_takes
from funnel.serving.middleware import Admission
from funnel.serving.schemas import (
    BatchRecommendations,
    BatchRequest,
    HistoryRecommendations,
    HistoryRequest,
    Recommendations,
    RecommendRequest,
    for_model,
    records,
    rules,
    shown,
)
from funnel.serving.state import Service


def add_routes(router: APIRouter, service: Service, auth: Auth, admission: Admission) -> None:
    """Add the recommendation routes of ``service`` to ``router``, their requests typed by its model's ids."""
    settings = service.settings
    user_kind, artist_kind, max_cost = service.user_kind, service.artist_kind, settings.max_cost
    recommend_request = for_model(RecommendRequest, user_kind, artist_kind, settings.max_n)
    history_request = for_model(HistoryRequest, user_kind, artist_kind, settings.max_n, settings.max_history)
    batch_request = for_model(BatchRequest, user_kind, artist_kind, settings.max_n, settings.max_history,
                              settings.max_batch)
    @router.post("/recommend", response_model=Recommendations, response_model_exclude_unset=True,
                 responses=auth.errors({400: UNPARSABLE, 404: "Unknown user id: not in the training data",
                                   503: admission.exceeded}),
                 dependencies=[*auth.guard, query_takes()])
    @admission.budgeted
    def recommend(payload: recommend_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a known user, under the request's rules; 404 for an unknown user."""
        model = service.model  # a reload during this request leaves it on the model it started with
        body = cast(RecommendRequest, payload)  # one user is never too costly: the model holds its history
        # an unknown user (an id past 64 bits too) raises UnknownUserError: 404
        if allows_nothing(model, body) and lookup_ids(model.user_ids_, [body.user_id])[0] >= 0:
            return {"user_id": body.user_id, "recommendations": []}
        frame = model.recommend(body.user_id, n=body.n, **rules(body))
        return {"user_id": body.user_id, "recommendations": records(frame, body.explain)}

    @router.post("/recommend/history", response_model=HistoryRecommendations, response_model_exclude_unset=True,
                 responses=auth.errors({400: UNPARSABLE, 404: "Not sent by this route: unknown artists are listed in "
                                   "unknown_artists", 503: admission.exceeded}),
                 dependencies=[*auth.guard, query_takes()])
    @admission.budgeted
    def recommend_history(payload: history_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for a new listener from a history of artist ids or id -> plays, under the rules."""
        model = service.model  # a reload during this request leaves it on the model it started with
        body = cast(HistoryRequest, payload)
        check_cost(model, [], [body.artists], max_cost)
        row, unknown = known_history(model, int_keys(body.artists, artist_kind), ("body", "artists"))
        if row is None or allows_nothing(model, body):
            return {"unknown_artists": unknown, "recommendations": []}
        history = dict(zip(model.artist_ids_[row.indices].tolist(), plays_of(row).tolist()))
        frame = model.recommend_for_history(history, n=body.n, **rules(body))
        return {"unknown_artists": unknown, "recommendations": records(frame, body.explain)}

    @router.post("/recommend/batch", response_model=BatchRecommendations, response_model_exclude_unset=True,
                 responses=auth.errors({400: UNPARSABLE, 404: "Not sent by this route: unknown users are listed in "
                                   "unknown_users", 503: admission.exceeded}),
                 dependencies=[*auth.guard, query_takes()])
    @admission.budgeted
    def recommend_batch(payload: batch_request) -> dict[str, Any]:  # type: ignore[valid-type]
        """Top-n artists for several known users and new listeners' histories in one call, under one set of rules."""
        model = service.model  # a reload during this request leaves it on the model it started with
        body = cast(BatchRequest, payload)
        users = list(dict.fromkeys(body.users))
        check_cost(model, users, [item.artists for item in body.histories], max_cost)
        rows = lookup_ids(model.user_ids_, users) if users else np.empty(0, np.int64)
        known = [u for u, r in zip(users, rows) if r >= 0]
        asked = {"n": body.n, **rules(body)}
        scored_at_all = not allows_nothing(model, body)  # else each user and history gets an empty list
        answer: dict[str, Any] = {"users": [], "histories": [],
                                  "unknown_users": [u for u, r in zip(users, rows) if r < 0]}
        if known:
            per_user: dict[Any, pd.DataFrame] = {}
            if scored_at_all:
                per_user = dict(tuple(model.recommend(users=known, **asked).groupby("user_id", sort=False)))
            answer["users"] = [{"user_id": u, "recommendations": records(per_user[u], body.explain)
                                if u in per_user else []} for u in known]
        parsed, plays = [], []
        for item in body.histories:
            row, unknown = known_history(model, int_keys(item.artists, artist_kind), ("body", "histories"),
                                         f"history {shown(item.id)}: ")
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
                scored = model.recommend_for_histories(frame, **asked)
                per_listener = dict(tuple(scored.groupby("user_id", sort=False)))
            answer["histories"] = [{"id": label, "unknown_artists": unknown,
                                    "recommendations": records(per_listener[i], body.explain)
                                    if i in per_listener else []} for i, (label, unknown) in enumerate(parsed)]
        return answer



def check_cost(model: Recommender, users: Any, histories: Sequence[Any], max_cost: int) -> None:
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


def int_keys(history: Any, artist_kind: str) -> Any:
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
