"""The argument parser: one subparser a subcommand, each dispatching to its module's ``run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from funnel.cli import score, serve, train, tune, update

COMMANDS = {"train": train, "tune": tune, "update": update, "serve": serve, "score": score}
DEFAULT_COMMAND = "train"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line, with a subparser for each of :data:`COMMANDS`.

    Each subparser sets ``func`` (the subcommand's ``run(args)``) and, where flags must be
    checked together, ``check`` (``check(args)``, which may call the subparser's ``error``).
    """
    parser = argparse.ArgumentParser(
        description="Two-stage artist recommender: train on Last.fm or an event log (tune its settings for the "
                    "data first), serve a saved model over HTTP, or score listeners' histories with it. Flags "
                    "without a command are train's: '--runsvd True' alone is 'train --runsvd True'.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}",
                                     help=f"what to do (default: {DEFAULT_COMMAND}); COMMAND --help lists its flags")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into the flags of one subcommand, checked together.

    Flags with no command before them are ``train``'s, so ``--runsvd True`` alone trains;
    ``--help`` alone lists the commands.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_COMMAND)
    args = build_parser().parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    return args
