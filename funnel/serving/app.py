"""The HTTP service's application factory: a FastAPI app around one loaded :class:`funnel.Recommender`.

The model is read-only while serving and every call's state lives in that call, so requests
run side by side on the server's threads with no lock around scoring; a model loaded from a
directory is memory-mapped, so worker processes serving the same directory share its pages.
Each request runs within a time budget, and a request past it answers 503 at once.

The parts: :mod:`~funnel.serving.settings` (every setting and its default),
:mod:`~funnel.serving.schemas` (requests typed per model, answers),
:mod:`~funnel.serving.state` (the served model and its reload), :mod:`~funnel.serving.deps`
(API keys, query checks, error handlers), :mod:`~funnel.serving.middleware`,
:mod:`~funnel.serving.routes` and :mod:`~funnel.serving.server` (uvicorn, signals).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from funnel.errors import ConfigError
from funnel.persistence.model import model_directory
from funnel.recommender import Recommender
from funnel.serving.auth import APIKeys
from funnel.serving.middleware import SCORING_ROUTES, Admission, Admit, BodyLimit, CatchErrors, Metrics
from funnel.serving.schemas import KIND_WORDS
from funnel.serving.settings import ServiceSettings, env_name
from funnel.serving.state import Service, load
from funnel.version import __version__


def create_app(model: Recommender | str | os.PathLike | None = None, *, api_keys: APIKeys | None = None,
               **overrides: Any) -> Any:
    """A FastAPI application serving ``model``; called with no arguments, the app of the environment.

    ``uvicorn --factory funnel.serving:create_app --workers 2`` (or gunicorn with uvicorn's
    worker, ``'funnel.serving:create_app()'``) builds one app per worker process from the
    ``FUNNEL_*`` variables of :class:`ServiceSettings` (``FUNNEL_MODEL_DIR``,
    ``FUNNEL_MAX_N``, ``FUNNEL_THREADS``, ``FUNNEL_CORS_ORIGINS`` comma-separated,
    ``FUNNEL_API_KEY_FILE``, ...); a setting given here wins over its variable.

    Parameters
    ----------
    model : Recommender or path, optional
        A fitted or loaded model, or the directory of a saved one (default:
        ``$FUNNEL_MODEL_DIR``), with integer or string ids; requests must send ids of the
        same type (anything else is a 422 saying which type the model's ids are).
    api_keys : APIKeys, optional
        With keys, every endpoint but ``/health`` (and the API description, ``/docs`` and
        ``/openapi.json``) answers 401 unless the request carries one of them, as
        ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. None: the keys of the
        ``api_key_file`` setting, else no access control.
    **overrides
        Settings of :class:`ServiceSettings` (``max_n``, ``max_history``, ``max_batch``,
        ``max_cost``, ``threads``, ``queue``, ``time_budget``, ``cors_origins``,
        ``max_body_bytes``); None, or left out, takes the variable, else the default.
        ``max_n`` is capped at the catalogue size. Past ``time_budget`` a request answers 503
        with ``Retry-After`` at once; the abandoned computation ends on its thread and keeps
        its request's admission slot until then. Beyond ``threads + queue`` requests a
        scoring request answers 503 before its body is read.

    Returns
    -------
    fastapi.FastAPI
        With ``GET /health``, ``GET /metrics``, ``POST /recommend``, ``POST /recommend/history``,
        ``POST /recommend/batch``, ``GET /artists/{artist_id}/similar`` and
        ``POST /admin/reload``; OpenAPI docs at ``/docs``.

    Raises
    ------
    ConfigError
        No model named, or a setting (argument or variable) is invalid.
    """
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry

    from funnel.serving.deps import Auth, handle_errors
    from funnel.serving.routes import admin, artists, recommend

    settings = ServiceSettings.from_env(**overrides).resolved()
    model = model if model is not None else settings.model_dir
    if model is None:
        raise ConfigError(f"no model to serve: pass create_app(model) or set {env_name('model_dir')} to a saved "
                          "model's directory")
    directory: str | None = None
    if not isinstance(model, Recommender):
        directory = os.fspath(model_directory(model))
        model = load(directory)
    if api_keys is None and settings.api_key_file is not None:
        api_keys = APIKeys.from_file(settings.api_key_file)
    model.check_fitted()
    settings = settings.model_copy(update={"max_n": min(settings.max_n, len(model.artist_ids_) - 1)})
    registry = CollectorRegistry()
    service = Service(model, directory, settings, registry)
    admission = Admission(settings.threads, settings.queue, settings.time_budget)
    auth = Auth(api_keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        admission.executor.shutdown(wait=False, cancel_futures=True)  # work under way ends on its own

    # no ReDoc and no OAuth2 redirect page: /docs and /openapi.json are the documents, API keys the only scheme
    app = FastAPI(title="funnel", version=__version__, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  lifespan=lifespan,
                  description="Two-stage music-artist recommendations from a saved funnel model. "
                              f"User ids are {KIND_WORDS[service.user_kind]}, artist ids "
                              f"{KIND_WORDS[service.artist_kind]}.")
    app.state.service = service  # the served model, swapped on reload (also by SIGHUP: server.py)
    handle_errors(app)
    app.add_middleware(CatchErrors)  # innermost of these: the metrics count its 500s
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_seconds=settings.time_budget)
    # before the body is read (a refused request costs nothing), within CORS (a browser reads the 503)
    app.add_middleware(Admit, admission=admission, router=app.router, scoring=SCORING_ROUTES,
                       authorized=auth.authorized if api_keys is not None else None)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(Metrics, registry=registry)  # outermost: it counts the 413s of BodyLimit too
    # on the app's own router, not included ones: Admit and Metrics read its routes as they stand
    admin.add_routes(app.router, service, auth, registry)
    recommend.add_routes(app.router, service, auth, admission)
    artists.add_routes(app.router, service, auth, admission)
    return app
