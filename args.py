"""Command-line flags of main.py, mapped onto funnel's configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from funnel import FunnelConfig

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def boolean(text: str) -> bool:
    """Parse ``True``/``False`` (also yes/no, 1/0, on/off; any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python main.py``."""
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Two-stage artist recommender on Last.fm: writes the top artists of every user "
                    "to a CSV and, with --evaluate True, compares the funnel with the ALS-only baseline.",
    )
    parser.add_argument("--data", default=None,
                        help="Last.fm hetrec2011-lastfm-2k directory (default: $FUNNEL_DATA, then "
                             "../shared/data/hetrec2011-lastfm-2k)")
    parser.add_argument("--artifacts", default="artifacts/",
                        help="directory for the saved model and cached trained parts (default: artifacts/)")
    parser.add_argument("--output", default="artifacts/recommendations.csv",
                        help="CSV to write (default: artifacts/recommendations.csv)")
    parser.add_argument("--runsvd", type=boolean, default=False, metavar="True/False",
                        help="retrain the BiasedSVD embeddings; False reuses saved ones that match the "
                             "data and settings (default: False)")
    parser.add_argument("--judge", type=boolean, default=False, metavar="True/False",
                        help="retrain the logistic ranker; False reuses saved weights that match the "
                             "data and settings (default: False)")
    parser.add_argument("--topn", type=int, default=20, help="artists per user in the CSV (default: 20)")
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates of the tag and ALS sources per user "
                             f"(default: {FunnelConfig().candidates['tags']})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--evaluate", type=boolean, default=False, metavar="True/False",
                        help="also fit on a per-user 20%% holdout and print metrics for the funnel and "
                             "the ALS-only baseline (default: False)")
    parser.add_argument("--explain", type=boolean, default=False, metavar="True/False",
                        help="add a short 'reason' column to the CSV (default: False)")
    parser.add_argument("--progress", type=boolean, default=True, metavar="True/False",
                        help="show progress bars (default: True)")
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python main.py serve``."""
    parser = argparse.ArgumentParser(
        prog="main.py serve",
        description="Serve a saved model over HTTP (needs the serve extra: pip install -e \".[serve]\"); "
                    "it never retrains. OpenAPI docs at /docs.",
    )
    parser.add_argument("--artifacts", default="artifacts/",
                        help="the model directory, or the --artifacts directory of a main.py run "
                             "(its model/ subdirectory is used) (default: artifacts/)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-n", type=int, default=100, dest="max_n",
                        help="largest n a request may ask for (default: 100)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``); ``serve ...`` selects the service."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        args = build_serve_parser().parse_args(argv[1:])
        args.command = "serve"
    else:
        args = build_parser().parse_args(argv)
        args.command = "run"
    return args


def to_config(args: argparse.Namespace) -> FunnelConfig:
    """Map parsed flags onto a :class:`FunnelConfig` (the only place flags meet settings)."""
    changes = {"seed": args.seed, "show_progress": args.progress, "cache_dir": args.artifacts,
               "reuse_svd": not args.runsvd, "reuse_ranker": not args.judge}
    if args.candidates is not None:
        candidates = dict(FunnelConfig().candidates)
        candidates.update({name: args.candidates for name in ("tags", "als")})
        changes["candidates"] = candidates
    return FunnelConfig().replace(**changes)
