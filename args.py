"""The flags of main.py: the parser of :mod:`funnel.cli`, one subparser a subcommand (train, serve, score)."""

from funnel.cli import build_parser, parse_args, to_config

__all__ = ["build_parser", "parse_args", "to_config"]
