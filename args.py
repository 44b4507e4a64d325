"""Command-line flags of main.py, mapped onto funnel's configuration."""

from __future__ import annotations

import argparse
from typing import Sequence

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
                        help="candidates per stage-one source, tag and ALS (default: %d)"
                             % FunnelConfig().tag_candidates)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--evaluate", type=boolean, default=False, metavar="True/False",
                        help="also fit on a per-user 20%% holdout and print metrics for the funnel and "
                             "the ALS-only baseline (default: False)")
    parser.add_argument("--progress", type=boolean, default=True, metavar="True/False",
                        help="show progress bars (default: True)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``)."""
    return build_parser().parse_args(argv)


def to_config(args: argparse.Namespace) -> FunnelConfig:
    """Map parsed flags onto a :class:`FunnelConfig` (the only place flags meet settings)."""
    changes = {"seed": args.seed, "show_progress": args.progress, "cache_dir": args.artifacts,
               "reuse_svd": not args.runsvd, "reuse_ranker": not args.judge}
    if args.candidates is not None:
        changes.update(tag_candidates=args.candidates, als_candidates=args.candidates)
    return FunnelConfig().replace(**changes)
