"""Flag types and flags more than one subcommand takes."""

from __future__ import annotations

import argparse

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


def add_spreadsheet_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--csv-spreadsheet-safe``, the CSV output's opt-in guard against spreadsheet formulas."""
    parser.add_argument("--csv-spreadsheet-safe", type=boolean, default=False, dest="csv_spreadsheet_safe",
                        metavar="True/False",
                        help="a .csv --output for spreadsheets: put ' before every text cell starting with =, +, -, "
                             "@, a tab or a carriage return, so it is not run as a formula; such ids and names then "
                             "no longer read back as they were (default: False: the CSV holds them exactly)")


def check_spreadsheet_flag(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--csv-spreadsheet-safe True`` for an output that is not CSV (it would be ignored)."""
    if args.csv_spreadsheet_safe and not args.output.lower().endswith(".csv"):
        parser.error(f"--csv-spreadsheet-safe applies to a .csv --output only, not {args.output}: Parquet and "
                     "DuckDB cells are typed, never formulas; drop the flag or write a .csv file")
