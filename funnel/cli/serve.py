"""``serve``: the HTTP service of a saved model (the serve extra); it never retrains."""

from __future__ import annotations

import argparse
from pathlib import Path

from funnel.errors import ConfigError
from funnel.persistence.model import model_directory
from funnel.serving.settings import DEFAULTS  # one place for the service's defaults (no FastAPI needed)


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "serve", help="serve a saved model over HTTP",
        description="Serve a saved model over HTTP (needs the serve extra: pip install -e \".[serve]\"); "
                    "it never retrains. OpenAPI docs at /docs.",
    )
    parser.add_argument("--artifacts", default="artifacts/",
                        help="the model directory, or the --artifacts directory of a train run "
                             "(its model/ subdirectory is used) (default: artifacts/)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-n", type=int, default=DEFAULTS.max_n, dest="max_n",
                        help=f"largest n a request may ask for (default: {DEFAULTS.max_n})")
    parser.add_argument("--max-history", type=int, default=DEFAULTS.max_history, dest="max_history",
                        help=f"most artists a history request may hold (default: {DEFAULTS.max_history})")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes; they share the memory-mapped model (default: 1)")
    parser.add_argument("--time-budget", type=float, default=DEFAULTS.time_budget, dest="time_budget",
                        metavar="SECONDS",
                        help=f"a request taking longer answers 503 (default: {DEFAULTS.time_budget:g})")
    parser.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch, dest="max_batch",
                        help=f"most users and histories in one POST /recommend/batch (default: {DEFAULTS.max_batch})")
    parser.add_argument("--max-cost", type=int, default=None, dest="max_cost", metavar="ENTRIES",
                        help="most artist entries one request may make the model read: its histories' artists "
                             "and its users' training histories (default: 4 x --max-history)")
    parser.add_argument("--threads", type=int, default=None,
                        help="requests scored at once, each on a thread (default: the cores each worker may use)")
    parser.add_argument("--queue", type=int, default=None,
                        help="requests admitted to wait for a scoring thread; beyond them 503 (default: 4 x --threads)")
    parser.add_argument("--api-key-file", default=None, dest="api_key_file", metavar="FILE",
                        help="require an API key: a file of SHA-256 hex digests of the keys, one a line, 'admin' "
                             "after an admin key's (default: $FUNNEL_API_KEY_FILE, else no keys)")
    parser.add_argument("--cors-origin", action="append", default=[], dest="cors_origins", metavar="ORIGIN",
                        help="an origin browsers may call the service from, e.g. https://app.example.com "
                             "(repeatable; default: none)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Serve the saved model over HTTP until interrupted."""
    try:
        from funnel.serving import serve as serve_model
        from funnel.serving.auth import key_file_setting
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extra ({exc.name} is missing): "
                          'pip install -e ".[serve]"') from exc
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be between 1 and 65535")
    if args.max_n < 1:
        raise ConfigError(f"--max-n {args.max_n} must be at least 1")
    for flag, value in (("--max-history", args.max_history), ("--max-batch", args.max_batch),
                        ("--workers", args.workers), ("--max-cost", args.max_cost), ("--threads", args.threads),
                        ("--queue", args.queue)):
        if value is not None and value < (0 if flag == "--queue" else 1):
            raise ConfigError(f"{flag} {value} must be at least {0 if flag == '--queue' else 1}")
    if not 0 < args.time_budget < float("inf"):
        raise ConfigError(f"--time-budget {args.time_budget} must be a number of seconds above 0")
    key_file = key_file_setting(args.api_key_file)  # an empty --api-key-file or variable: an error, not open routes
    serve_model(str(model_directory(Path(args.artifacts))), args.host, args.port, args.max_n,
                api_key_file=key_file, cors_origins=args.cors_origins, max_history=args.max_history,
                max_batch=args.max_batch, workers=args.workers, time_budget=args.time_budget, max_cost=args.max_cost,
                threads=args.threads, queue=args.queue)
