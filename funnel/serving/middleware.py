"""ASGI middleware of the HTTP service: body limits, the last error handler, metrics, and admission.

A request passes them outside in: :class:`Metrics` (counting every answer), CORS when
configured, :class:`Admit` (a scoring request takes a slot of the :class:`Admission` or
answers 503 before its body is read), :class:`BodyLimit` (413, 408) and :class:`CatchErrors`
(500). :meth:`Admission.budgeted` runs a route's work on the scoring threads within the time
budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from funnel.threadpool import one_openmp_thread

logger = logging.getLogger("funnel")

DRAIN_BYTES = 64 << 20


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
            await send_json(send, 408, b'{"detail":"the request body was not received within %g s; send it '
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
        await send_json(send, 413, b'{"detail":"request body too large: the limit is %d bytes"}' % self.max_bytes)


async def send_json(send: Any, status: int, payload: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
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
            await send_json(send, 500, b'{"detail":"internal error; see the server log"}')


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

    def __init__(self, threads: int, queue: int, time_budget: float) -> None:
        self.time_budget = time_budget
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="funnel-score")
        self.slots = threading.BoundedSemaphore(threads + queue)
        self.openmp_one_thread = one_openmp_thread()  # made once the model, and FAISS's OpenMP, are loaded
        self.exceeded = (f"The service is at capacity ({threads} requests scored at once, {queue} waiting), or the "
                         f"request took longer than its time budget ({time_budget:g} s); retry after Retry-After "
                         "seconds")

    def run(self, work: Any) -> asyncio.Future:
        """``work()`` on the scoring pool, keeping the calling request's slot until it ends."""
        future = self.executor.submit(work)
        ticket = _TICKET.get()
        if ticket is not None:
            ticket.hold()
            future.add_done_callback(lambda _: ticket.release())
        return asyncio.wrap_future(future)

    def one_thread(self, handler: Any, *args: Any, **kwargs: Any) -> Any:
        """``handler(*args, **kwargs)`` with OpenMP limited to the calling thread."""
        with self.openmp_one_thread():
            return handler(*args, **kwargs)

    def budgeted(self, handler: Any) -> Any:
        """``handler`` run on a thread of the scoring pool, answering 503 once past the time budget."""
        import anyio
        from fastapi import HTTPException

        @functools.wraps(handler)
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                with anyio.fail_after(self.time_budget):
                    # cancelled past the budget: work not yet started never starts, work under way
                    # ends on its thread and keeps the request's admission slot until it does
                    return await self.run(functools.partial(self.one_thread, handler, *args, **kwargs))
            except TimeoutError:
                raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                    detail=f"the request took longer than the service's {self.time_budget:g} s "
                                           "budget; send a shorter history or a smaller batch, or retry later"
                                    ) from None
        return run


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
            await send_json(send, 503, b'{"detail":"the service is at capacity: every scoring slot is taken; '
                                        b'retry later"}', [(b"retry-after", b"1")])
            return
        ticket = _Ticket(self.slots)
        token = _TICKET.set(ticket)
        try:
            await self.app(scope, receive, send)
        finally:
            _TICKET.reset(token)
            ticket.release()

