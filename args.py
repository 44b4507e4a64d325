"""Command-line flags of main.py, mapped onto funnel's configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from funnel import FunnelConfig
from funnel.serving.settings import DEFAULTS

USER_COLUMN, ARTIST_COLUMN, TAG_COLUMN = "user_id", "artist_id", "tag"
_EVENT_FLAGS = {"duckdb": "--duckdb", "user_col": "--user-col", "artist_col": "--artist-col", "time_col": "--time-col",
                "weight_col": "--weight-col", "duration_col": "--duration-col", "min_duration": "--min-duration",
                "artist_tags": "--artist-tags", "tag_col": "--tag-col"}
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python main.py``."""
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Two-stage artist recommender on Last.fm or an event log: writes the top artists of "
                    "every user to a file and, with --evaluate True, compares the funnel with the ALS-only baseline.",
    )
    source = parser.add_argument_group("input (one of)").add_mutually_exclusive_group()
    source.add_argument("--data", default=None,
                        help="Last.fm hetrec2011-lastfm-2k directory, the default input (default: $FUNNEL_DATA, "
                             "then ../shared/data/hetrec2011-lastfm-2k)")
    source.add_argument("--events", default=None, metavar="PATH_OR_GLOB",
                        help="event log, one row per play: a Parquet or CSV file, a directory of them, or a glob")
    source.add_argument("--events-sql", default=None, dest="events_sql", metavar="QUERY",
                        help="DuckDB query whose rows are the plays, over files or over the tables of --duckdb")
    log = parser.add_argument_group("event logs (with --events or --events-sql)")
    log.add_argument("--duckdb", default=None, metavar="FILE",
                     help="DuckDB database file --events-sql reads (opened read-only)")
    log.add_argument("--user-col", default=None, dest="user_col", metavar="COLUMN",
                     help=f"column of user ids (default: {USER_COLUMN})")
    log.add_argument("--artist-col", default=None, dest="artist_col", metavar="COLUMN",
                     help=f"column of artist ids, in the log and in --artist-tags (default: {ARTIST_COLUMN})")
    log.add_argument("--time-col", default=None, dest="time_col", metavar="COLUMN",
                     help="column of play times; adds first and last listen times (default: none)")
    log.add_argument("--weight-col", default=None, dest="weight_col", metavar="COLUMN",
                     help="column of weights to sum (default: none, every row is one play)")
    log.add_argument("--duration-col", default=None, dest="duration_col", metavar="COLUMN",
                     help="column of play lengths; with --min-duration, shorter plays are skips and dropped")
    log.add_argument("--min-duration", type=float, default=None, dest="min_duration", metavar="X",
                     help="shortest play kept, in --duration-col's unit (e.g. 30000 for milliseconds)")
    log.add_argument("--artist-tags", default=None, dest="artist_tags", metavar="PATH",
                     help="CSV or Parquet of artist-level labels (genres): columns --artist-col and --tag-col")
    log.add_argument("--tag-col", default=None, dest="tag_col", metavar="COLUMN",
                     help=f"column of labels in --artist-tags (default: {TAG_COLUMN})")
    parser.add_argument("--artifacts", default="artifacts/",
                        help="directory for the saved model and cached trained parts (default: artifacts/)")
    parser.add_argument("--output", default="artifacts/recommendations.csv",
                        help="file to write, by extension: .csv, .parquet, or a DuckDB database (.duckdb, .db) "
                             "with --output-table (default: artifacts/recommendations.csv)")
    parser.add_argument("--output-table", default=None, dest="output_table", metavar="NAME",
                        help="table of a DuckDB --output to create or replace")
    add_spreadsheet_flag(parser)
    parser.add_argument("--runsvd", type=boolean, default=False, metavar="True/False",
                        help="retrain the BiasedSVD embeddings; False reuses saved ones that match the "
                             "data and settings (default: False)")
    parser.add_argument("--judge", type=boolean, default=False, metavar="True/False",
                        help="retrain the logistic ranker; False reuses saved weights that match the "
                             "data and settings (default: False)")
    parser.add_argument("--topn", type=int, default=20, help="artists per user in the output (default: 20)")
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates of the tag and ALS sources per user "
                             f"(default: {FunnelConfig().candidates['tags']})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--evaluate", type=boolean, default=False, metavar="True/False",
                        help="also fit on a per-user 20%% holdout and print metrics for the funnel and "
                             "the ALS-only baseline (default: False)")
    parser.add_argument("--explain", type=boolean, default=False, metavar="True/False",
                        help="add a short 'reason' column to the output (default: False)")
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
    return parser


def build_score_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python main.py score``."""
    parser = argparse.ArgumentParser(
        prog="main.py score",
        description="Score listeners' histories with a saved model, in process or on Spark (the spark extra: "
                    "pip install -e \".[spark]\"); it never retrains. Every listener is scored from its history "
                    "(user vectors folded in), so both engines write the same recommendations.",
    )
    parser.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: in this process; spark: a Spark job (default: local)")
    parser.add_argument("--artifacts", default="artifacts/",
                        help="the model directory, or the --artifacts directory of a main.py run "
                             "(its model/ subdirectory is used) (default: artifacts/)")
    parser.add_argument("--histories", default=None, metavar="PATH",
                        help="a Parquet file or directory of user_id, artist_id[, weight] rows (the caller's ids; "
                             "no weight: one play per row); default: the training histories saved with a full model")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="where to write: .csv, .parquet or a DuckDB file (.duckdb, .db) with --output-table "
                             "for --engine local; a Parquet directory (.parquet) for --engine spark")
    parser.add_argument("--output-table", default=None, dest="output_table", metavar="NAME",
                        help="the table to create or replace in a DuckDB --output (--engine local)")
    add_spreadsheet_flag(parser)
    parser.add_argument("--topn", type=int, default=20, help="artists per user in the output (default: 20)")
    parser.add_argument("--exclude", default=None, metavar="PATH",
                        help="a Parquet file of artist_id rows never to recommend, or of user_id, artist_id rows "
                             "never to recommend to that listener")
    parser.add_argument("--allow", default=None, metavar="PATH",
                        help="a Parquet file of the artist_id rows that alone may be recommended")
    parser.add_argument("--explain", type=boolean, default=False, metavar="True/False",
                        help="add a short 'reason' column to the output (default: False)")
    parser.add_argument("--progress", type=boolean, default=True, metavar="True/False",
                        help="show a progress bar (--engine local) (default: True)")
    spark = parser.add_argument_group("spark (with --engine spark)")
    spark.add_argument("--master", default=None,
                       help="Spark master URL, e.g. local[2] (default: spark-submit's, else local[*])")
    spark.add_argument("--partitions", type=int, default=None, metavar="N",
                       help="partitions to group the listeners into (default: Spark's adaptive shuffle partitions)")
    spark.add_argument("--ship", type=boolean, default=False, metavar="True/False",
                       help="copy the model to every executor (SparkContext.addFile) instead of reading it from a "
                            "path they share (default: False)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``); ``serve ...`` selects the service, ``score ...`` scoring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        args = build_serve_parser().parse_args(argv[1:])
        args.command = "serve"
    elif argv[:1] == ["score"]:
        parser = build_score_parser()
        args = parser.parse_args(argv[1:])
        if args.engine == "local":
            given = [flag for flag, value in (("--master", args.master), ("--partitions", args.partitions),
                                              ("--ship", args.ship or None)) if value is not None]
            if given:
                parser.error(f"{', '.join(given)} apply to --engine spark only")
        elif args.output_table is not None:
            parser.error("--output-table is for a DuckDB --output of --engine local; --engine spark writes a "
                         "Parquet directory")
        check_spreadsheet_flag(parser, args)
        args.command = "score"
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        check_event_flags(parser, args)
        check_spreadsheet_flag(parser, args)
        args.command = "run"
    return args


def check_event_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse event-log flags that would be ignored, then fill in the column defaults.

    Flags that do not fit together are malformed flags: ``parser.error`` prints the usage
    and exits with code 2, as for flags argparse checks itself.
    """
    events = args.events is not None or args.events_sql is not None
    given = [flag for name, flag in _EVENT_FLAGS.items() if getattr(args, name) is not None]
    if given and not events:
        parser.error(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to event logs only: "
                     "add --events PATH or --events-sql QUERY")
    if args.duckdb is not None and args.events_sql is None:
        parser.error("--duckdb is the database --events-sql reads: add --events-sql QUERY, or drop --duckdb")
    if (args.duration_col is None) != (args.min_duration is None):
        parser.error("--duration-col and --min-duration go together: the column of play lengths and the "
                     "shortest play kept, in its unit (e.g. --duration-col duration_ms --min-duration 30000)")
    if args.tag_col is not None and args.artist_tags is None:
        parser.error("--tag-col names a column of --artist-tags: add --artist-tags PATH, or drop --tag-col")
    args.user_col = args.user_col or USER_COLUMN
    args.artist_col = args.artist_col or ARTIST_COLUMN
    args.tag_col = args.tag_col or TAG_COLUMN


def to_config(args: argparse.Namespace) -> FunnelConfig:
    """Map parsed flags onto a :class:`FunnelConfig` (the only place flags meet settings)."""
    changes = {"seed": args.seed, "show_progress": args.progress, "cache_dir": args.artifacts,
               "reuse_svd": not args.runsvd, "reuse_ranker": not args.judge}
    if args.candidates is not None:
        candidates = dict(FunnelConfig().candidates)
        candidates.update({name: args.candidates for name in ("tags", "als")})
        changes["candidates"] = candidates
    return FunnelConfig().replace(**changes)
