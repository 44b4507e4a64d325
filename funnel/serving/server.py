"""Running the service: the listening socket, SIGHUP reloads, and uvicorn with one or several workers."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from funnel.errors import ConfigError, FunnelError
from funnel.serving.app import create_app
from funnel.serving.auth import ADMIN, KEY_FILE_ENV, APIKeys, is_loopback, key_file_setting
from funnel.serving.settings import DEFAULTS, THREAD_VARIABLES, ServiceSettings, env_name, usable_cores

logger = logging.getLogger("funnel")


def listening_socket(host: str, port: int) -> socket.socket:
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


def reload_on_sighup(app: Any) -> None:
    """SIGHUP reloads the served directory, on a thread of its own (a signal handler must return quickly)."""
    import signal

    if not hasattr(signal, "SIGHUP"):  # Windows
        return

    def reload() -> None:
        try:
            app.state.service.reload(None)
        except (FunnelError, OSError) as exc:
            logger.warning("reload on SIGHUP failed, the old model still serves: %s", exc)

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(target=reload, daemon=True).start())


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, max_n: int = DEFAULTS.max_n,
          log_level: str = "info", api_key_file: str | None = None, cors_origins: Sequence[str] = (),
          max_history: int = DEFAULTS.max_history, max_batch: int = DEFAULTS.max_batch, workers: int = 1,
          time_budget: float = DEFAULTS.time_budget, max_cost: int | None = None, threads: int | None = None,
          queue: int | None = None) -> None:
    """Serve the model saved in ``model_dir`` with uvicorn until interrupted.

    ``api_key_file`` (default: the ``FUNNEL_API_KEY_FILE`` environment variable) turns on
    access control (:class:`APIKeys`); serving beyond loopback without it logs a warning.
    With ``workers`` > 1, uvicorn's supervisor starts that many worker processes on one
    socket, each building its app with :func:`create_app` from the environment, which this
    function sets; each worker's ``threads`` default to its share of the cores. The other
    settings are :class:`ServiceSettings`'s; ``max_cost``, ``threads`` and ``queue`` default
    to their variables, else to their defaults there.

    Raises
    ------
    ConfigError
        The address cannot be bound (the port is in use, or the host is not this machine's),
        or a setting is invalid.
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
    settings = ServiceSettings.from_env(model_dir=os.fspath(model_dir), max_n=max_n, max_history=max_history,
                                        max_batch=max_batch, time_budget=float(time_budget), max_cost=max_cost,
                                        threads=threads, queue=queue, cors_origins=tuple(cors_origins),
                                        api_key_file=key_file)
    sock = listening_socket(host, port)
    logger.info("starting %d worker(s) on http://%s:%d (docs at /docs)", workers, host, port)
    if workers == 1:
        app = create_app(settings.model_dir, api_keys=api_keys, **settings.model_dump(exclude={"model_dir"}))
        reload_on_sighup(app)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run(sockets=[sock])
        return
    os.environ.update(settings.to_env())
    # the workers share the cores: each one's BLAS and OpenMP (read when a worker imports them) get its share
    share = str(max(1, usable_cores() // workers))
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, share)
    os.environ.setdefault(env_name("threads"), str(max(2, int(share))))
    config = uvicorn.Config("funnel.serving:create_app", factory=True, host=host, port=port, log_level=log_level,
                            workers=workers)
    Multiprocess(config, sockets=[sock]).run()
