"""Dependencies of the routes: API keys and roles, refused query parameters, and the error handlers."""

# no ``from __future__ import annotations`` here: FastAPI reads the dependencies' annotations
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from funnel.errors import ConfigError, DataError, FunnelError, UnknownUserError
from funnel.serving.auth import ADMIN, APIKeys
from funnel.serving.schemas import ErrorMessage, error_responses

BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")
UNPARSABLE = "The body is not JSON that FastAPI can parse (not UTF-8, or a number too long to convert)"


class Auth:
    """Access control by API keys (:class:`APIKeys`; None: none) as route dependencies.

    ``guard`` is the dependency list of every route but ``/health`` (empty without keys),
    ``admin`` that of the admin routes, which are closed without keys.
    """

    def __init__(self, api_keys: APIKeys | None) -> None:
        self.api_keys = api_keys
        self.guard: list[Any] = [Depends(self.role_of)] if api_keys is not None else []

        def require_admin(role: Annotated[str, Depends(self.role_of)]) -> None:
            """403 unless the request's key is an admin key."""
            if role != ADMIN:
                raise HTTPException(status_code=403, detail="this endpoint needs an admin key")

        self.admin: list[Any] = [Depends(self.no_keys), Depends(require_admin)]

    def role_of(self, request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
                key: Annotated[str | None, Depends(HEADER)]) -> str:
        """The role of the request's key; 401 without one of the service's keys.

        Every header sent is read (:meth:`APIKeys.request_role`); ``credentials`` and ``key``
        (the first of each header) are there for the OpenAPI document.
        """
        role = self.api_keys.request_role(request.headers.getlist("x-api-key"),
                                          request.headers.getlist("authorization")) if self.api_keys else None
        if role is None:
            raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                detail="missing or unknown API key: send Authorization: Bearer KEY or X-API-Key: KEY")
        return role

    def no_keys(self) -> None:
        """403 for a service without keys: checked before the key, so an admin endpoint is closed, not open."""
        if self.api_keys is None:
            raise HTTPException(status_code=403, detail="admin endpoints need API keys: start the service with "
                                                        "--api-key-file FILE holding an admin key")

    def authorized(self, scope: dict) -> bool:
        """Whether an ASGI request carries valid credentials (for :class:`Admit`, before routing)."""
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        return self.api_keys is not None and self.api_keys.request_role(
            headers.getlist("x-api-key"), headers.getlist("authorization")) is not None

    def errors(self, descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
        """``responses=`` of a guarded route: ``descriptions``, the 401 with keys, and the common errors."""
        keys = {401: "No API key, or not one of the service's keys"} if self.api_keys is not None else {}
        return error_responses({**descriptions, **keys})

    @staticmethod
    def admin_errors() -> dict[int | str, dict[str, Any]]:
        """``responses=`` of an admin route."""
        return dict(sorted({**error_responses({400: UNPARSABLE}),
                            401: {"model": ErrorMessage, "description": "No API key, or an unknown one"},
                            403: {"model": ErrorMessage, "description": "Not an admin key, or the service "
                                                                        "has no API keys"},
                            409: {"model": ErrorMessage, "description": "The model could not be loaded or "
                                                                        "checked; the old one still serves"}
                            }.items()))


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


def invalid_input(loc: tuple, message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 at ``loc`` (raise it), shaped like FastAPI's own."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": kind}])


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 saying where and what only: FastAPI's default echoes the whole input back."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()[:20]]
    if any(e["loc"] == ["body"] for e in errors):
        errors.append({"loc": ["body"], "type": "hint",
                       "msg": "send a JSON object with the header Content-Type: application/json"})
    return JSONResponse(status_code=422, content={"detail": errors})


async def unknown_user(request: Request, exc: Exception) -> JSONResponse:
    """404 for a user not in the training data."""
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def bad_input(request: Request, exc: Exception) -> JSONResponse:
    """A 422 shaped like FastAPI's for input the model refuses (e.g. an allow-list of no catalogue artist)."""
    if isinstance(exc, (DataError, ConfigError)):
        loc = ["body"] if request.method == "POST" else ["query"]
        return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]})
    return JSONResponse(status_code=500, content={"detail": str(exc)})


def handle_errors(app: FastAPI) -> None:
    """Install the service's handlers of validation errors and funnel errors on ``app``."""
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownUserError, unknown_user)
    app.add_exception_handler(FunnelError, bad_input)
