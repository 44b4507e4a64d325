"""``GET /artists/{artist_id}/similar``: the nearest artists of one in the catalogue."""

# no ``from __future__ import annotations`` here: FastAPI reads the route's annotations
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import WithJsonSchema

from funnel.data.ids import lookup_ids
from funnel.errors import shorten
from funnel.serving.deps import Auth, invalid_input, query_takes
from funnel.serving.middleware import Admission
from funnel.serving.schemas import DEFAULT_N, KIND_WORDS, MAX_ID_CHARS, SimilarArtists, mismatch, scalar, shown
from funnel.serving.state import Service

INT_ID = re.compile(r"-?[0-9]+")
INT64_DIGITS = 19  # a longer run of digits is beyond 64 bits, so in no catalogue


def add_routes(router: APIRouter, service: Service, auth: Auth, admission: Admission) -> None:
    """Add the artist routes of ``service`` to ``router``, the path id typed by its model's artist ids."""
    artist_kind, max_n = service.artist_kind, service.settings.max_n
    # ``:path``: a string id may hold "/" (sent as %2F, which the server decodes before routing)
    path_id = Path(description=f"an artist id of the catalogue ({KIND_WORDS[artist_kind]}); percent-encode "
                               "characters such as / ? # % and spaces")
    path_schema = WithJsonSchema({"type": "integer"} if artist_kind == "int"
                                 else {"type": "string", "maxLength": MAX_ID_CHARS})
    @router.get("/artists/{artist_id:path}/similar", response_model=SimilarArtists,
                responses=auth.errors({404: "Unknown artist id: not in the catalogue", 503: admission.exceeded}),
                dependencies=[*auth.guard, query_takes("n")])
    @admission.budgeted
    def similar(artist_id: Annotated[str, path_id, path_schema],
                n: Annotated[int, Query(ge=1, le=max_n, description=f"number of artists (1..{max_n})")
                             ] = min(DEFAULT_N, max_n)) -> dict[str, Any]:
        """Nearest artists (the tag embedding, else co-listening); 404 for an unknown artist."""
        model = service.model
        wanted: int | str | None = artist_id
        if artist_kind == "int":
            if not INT_ID.fullmatch(artist_id):
                raise invalid_input(("path", "artist_id"), mismatch("artist", "int", artist_id, "not an integer"),
                                    "id_type")
            # past 19 digits an id is beyond 64 bits, so unknown (and int() of thousands of digits would raise)
            wanted = int(artist_id) if len(artist_id.lstrip("-")) <= INT64_DIGITS else None
        elif len(artist_id) > MAX_ID_CHARS:
            raise invalid_input(("path", "artist_id"), f"a string id has at most {MAX_ID_CHARS} characters; got "
                                                       f"{len(artist_id):,}", "string_too_long")
        column = -1 if wanted is None else int(lookup_ids(model.artist_ids_, [wanted])[0])
        if column < 0:
            label = shorten(artist_id) if artist_kind == "int" else shown(artist_id)
            raise HTTPException(status_code=404, detail=f"unknown artist id {label}: not in the catalogue")
        frame = model.similar_artists(wanted, n=n)
        return {"artist_id": scalar(model.artist_ids_[column]), "name": str(model.artist_names_[column]),
                "space": str(frame["space"].iloc[0]) if len(frame) else "tags",
                "similar": [{"rank": int(r.rank), "artist_id": scalar(r.artist_id), "name": str(r.artist_name),
                             "similarity": float(r.similarity)} for r in frame.itertuples(index=False)]}

