"""``score``: score listeners' histories with a saved model, in process or on Spark; it never retrains."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.cli.flags import add_spreadsheet_flag, boolean, check_spreadsheet_flag
from funnel.cli.paths import check_not_input, check_writable
from funnel.errors import ConfigError, DataError, UnknownUserError
from funnel.persistence.model import model_directory

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.dataset as ds
    from pyspark.sql import SparkSession

logger = logging.getLogger("funnel")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``score`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "score", help="score listeners' histories with a saved model, in process or on Spark",
        description="Score listeners' histories with a saved model, in process or on Spark (the spark extra: "
                    "pip install -e \".[spark]\"); it never retrains. Every listener is scored from its history "
                    "(user vectors folded in), so both engines write the same recommendations.",
    )
    parser.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: in this process; spark: a Spark job (default: local)")
    parser.add_argument("--artifacts", default="artifacts/",
                        help="the model directory, or the --artifacts directory of a train run "
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
    parser.set_defaults(func=run, check=partial(check_flags, parser))
    return parser


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flags of the other engine (they would be ignored); ``parser.error`` exits with code 2."""
    if args.engine == "local":
        given = [flag for flag, value in (("--master", args.master), ("--partitions", args.partitions),
                                          ("--ship", args.ship or None)) if value is not None]
        if given:
            parser.error(f"{', '.join(given)} apply to --engine spark only")
    elif args.output_table is not None:
        parser.error("--output-table is for a DuckDB --output of --engine local; --engine spark writes a "
                     "Parquet directory")
    check_spreadsheet_flag(parser, args)


def parquet_dataset(path: str, flag: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> ds.Dataset:
    """The Parquet file or directory at ``path`` (a pyarrow dataset), after checking its ``columns`` (schema only)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not Path(path).exists():
        raise DataError(f"{flag} {path} does not exist; give a Parquet file or directory")
    try:
        dataset = ds.dataset(path, format="parquet")
        names = dataset.schema.names
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {flag} {path}: {' '.join(str(exc).split())}; give a Parquet file or "
                        "directory") from exc
    missing = [column for column in columns if column not in names]
    if missing:
        raise DataError(f"{flag} {path} has no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, names))}: it needs {', '.join(columns + optional)}")
    return dataset


def read_parquet_ids(path: str, flag: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """The ``columns`` (and those of ``optional`` present) of a Parquet file or directory, as pandas."""
    dataset = parquet_dataset(path, flag, columns, optional)
    return dataset.to_table(columns=[c for c in columns + optional if c in dataset.schema.names]).to_pandas()


def read_rules(args: argparse.Namespace, spark: SparkSession | None = None) -> tuple[Any, list | None]:
    """``--exclude`` and ``--allow`` as the rules of a scoring call (a Spark DataFrame for a per-user exclude)."""
    exclude: Any = None
    allow = None
    if args.exclude is not None:
        rows = read_parquet_ids(args.exclude, "--exclude", ("artist_id",), ("user_id",))
        if "user_id" not in rows.columns:
            exclude = rows["artist_id"].tolist()
        else:
            exclude = spark.createDataFrame(rows) if spark is not None else rows
    if args.allow is not None:
        allow = read_parquet_ids(args.allow, "--allow", ("artist_id",))["artist_id"].tolist()
    return exclude, allow


def spark_session(master: str | None, command: str = "score") -> SparkSession:
    """A Spark session for ``COMMAND --engine spark`` (spark-submit's settings, or ``master``)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(f"{command} --engine spark needs the spark extra ({exc.name} is missing): "
                          'pip install -e ".[spark]"') from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers run this environment's Python
    builder = SparkSession.builder.appName(f"funnel {command}").config("spark.sql.session.timeZone", "UTC")
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    session = (builder.master(master) if master else builder).getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def run(args: argparse.Namespace) -> None:
    """Score histories with a saved model, in process or on Spark, and write the recommendations."""
    from funnel import Recommender
    from funnel.outputs import check_output, write_recommendations

    if args.topn < 1:
        raise ConfigError(f"--topn {args.topn} must be at least 1")
    if args.partitions is not None and args.partitions < 1:
        raise ConfigError(f"--partitions {args.partitions} must be at least 1")
    output = Path(args.output)
    path = model_directory(Path(args.artifacts))
    # the model directory too: a Spark output directory written over it would replace the model
    check_not_input(args.output, {"--histories": args.histories, "--exclude": args.exclude, "--allow": args.allow,
                                  "--artifacts": path})
    if args.engine == "local":
        check_output(output, args.output_table)
        check_writable(output)
    elif output.suffix.lower() != ".parquet":
        raise ConfigError(f"--engine spark writes a Parquet directory: give an --output ending in .parquet, "
                          f"not {output}")
    started = time.perf_counter()
    model = Recommender.load(path, show_progress=args.progress)
    if not args.histories and model.artist_side_only_:
        raise UnknownUserError("the model was saved artist-side only and holds no histories: pass --histories PATH")
    if args.engine == "local":
        histories = (read_parquet_ids(args.histories, "--histories", ("user_id", "artist_id"), ("weight",))
                     if args.histories else model.training_histories())
        exclude, allow = read_rules(args)
        recommendations = model.recommend_for_histories(histories, n=args.topn, explain=args.explain,
                                                        exclude=exclude, allow=allow)
        if args.explain:
            recommendations = recommendations.drop(columns=["sources", "because_ids", "because", "contributions"])
        write_recommendations(recommendations, output, args.output_table, spreadsheet_safe=args.csv_spreadsheet_safe)
        users = recommendations["user_id"].nunique()
    else:
        from funnel import spark as funnel_spark

        session = spark_session(args.master)
        if args.histories:
            parquet_dataset(args.histories, "--histories", ("user_id", "artist_id"), ("weight",))
            frame = session.read.parquet(args.histories)
        else:
            frame = session.createDataFrame(model.training_histories())
        exclude, allow = read_rules(args, session)
        scored = funnel_spark.recommend(
            frame, path, n=args.topn, explain=args.explain, exclude=exclude, allow=allow,
            weight="weight" if "weight" in frame.columns else None, partitions=args.partitions, ship=args.ship)
        funnel_spark.write_parquet(scored, output)
        users = None
    logger.info("scored %s with %s on %s and wrote %s in %.1fs", "the listeners" if users is None else
                f"{users} listeners", path, args.engine, output, time.perf_counter() - started)
