"""The command line: ``funnel`` (or ``python main.py``) with the subcommands train (the default), serve and score.

    funnel --runsvd True                       # train: the same as funnel train --runsvd True
    funnel train --retrain-svd True --retrain-ranker True --evaluate True
    funnel train --events "logs/*.parquet" --user-col user --time-col ts --output recs.parquet
    funnel serve --artifacts artifacts/ --port 8000
    funnel score --engine spark --artifacts artifacts/ --histories plays.parquet --output recs.parquet

Each subcommand is one module (its flags, their checks and its ``run``); errors end the
process with a one-line message and exit code 1.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence

from funnel.cli.parser import build_parser, parse_args
from funnel.cli.train import to_config
from funnel.errors import FunnelError

__all__ = ["build_parser", "main", "parse_args", "run", "to_config"]


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run its subcommand and return the process exit code.

    Malformed flags exit with code 2 (``SystemExit``, from argparse); a failed run prints
    one line to standard error and returns 1, an interrupted one 130.
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs multi-line INFO
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="implicit")
    try:
        args.func(args)
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI turns every error into one line
        kind = "error" if isinstance(exc, (FunnelError, OSError)) else f"unexpected error ({type(exc).__name__})"
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{kind}: {message}", file=sys.stderr)
        return 1


def main() -> None:
    """Console-script entry point (``funnel ...``): exits with :func:`run`'s code."""
    sys.exit(run())
