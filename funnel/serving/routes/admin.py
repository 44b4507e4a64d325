"""Operations: ``GET /health``, ``GET /metrics`` and ``POST /admin/reload`` (admin keys only)."""

# no ``from __future__ import annotations`` here: FastAPI reads the routes' annotations
import logging
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse

from funnel.errors import FunnelError
from funnel.persistence.model import FORMAT_VERSION
from funnel.serving.deps import Auth, query_takes
from funnel.serving.schemas import Health, Reloaded, ReloadRequest, error_responses
from funnel.serving.state import Service
from funnel.version import __version__

logger = logging.getLogger("funnel")

# FastAPI documents a 422 only for routes with parameters; /health has none, yet refuses a query
REFUSED_QUERY: dict[int | str, dict[str, Any]] = {422: {
    "description": "A query parameter (this endpoint takes none)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}


def add_routes(router: APIRouter, service: Service, auth: Auth, registry: Any) -> None:
    """Add the operations routes of ``service`` to ``router``; ``/metrics`` publishes ``registry``."""
    settings = service.settings

    @router.get("/health", response_model=Health,
                responses=dict(sorted({**error_responses({}), **REFUSED_QUERY}.items())),
                dependencies=[query_takes()])
    def health() -> dict[str, Any]:
        """Model format version, training-data fingerprint, provenance, sizes and id types."""
        served = service.current
        model = served.model
        return {"status": "ok", "trained": served.provenance, "funnel_version": __version__,
                "format_version": FORMAT_VERSION,
                "data_fingerprint": model.fingerprint_, "n_users": len(model.user_ids_),
                "n_artists": len(model.artist_ids_), "user_id_type": service.user_kind,
                "artist_id_type": service.artist_kind, "sources": model.stages_.source_names,
                "max_n": settings.max_n, "max_history": settings.max_history, "max_batch": settings.max_batch,
                "max_cost": settings.max_cost}

    @router.get("/metrics", response_class=PlainTextResponse, dependencies=[*auth.guard, query_takes()],
                responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                 "description": "Prometheus text format"},
                           # errors are JSON here too, which FastAPI would document as the route's text/plain
                           **{code: {"description": error["description"], "content": {"application/json": {
                               "schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}
                              for code, error in auth.errors({}).items()}})
    def metrics() -> PlainTextResponse:
        """Requests by endpoint, method and status; latency histograms by endpoint; the model's provenance."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @router.post("/admin/reload", response_model=Reloaded, dependencies=[*auth.admin, query_takes()],
                 responses=auth.admin_errors())
    def reload(payload: ReloadRequest | None = None) -> dict[str, Any]:
        """Load the served model directory again (or ``model_dir``), check it, and swap it in without downtime."""
        try:
            return service.reload(payload.model_dir if payload is not None else None)
        except (FunnelError, OSError) as exc:
            logger.warning("reload failed, still serving %s: %s", service.current.directory, exc)
            raise HTTPException(status_code=409, detail=f"reload failed, the old model still serves: {exc}") from None

