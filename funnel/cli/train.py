"""``train`` (the default subcommand): fit on Last.fm or an event log, save the model, write the top artists."""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from funnel.cli.flags import add_spreadsheet_flag, boolean, check_spreadsheet_flag
from funnel.cli.paths import check_not_input, check_writable
from funnel.config import FunnelConfig
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from funnel.data import Dataset

logger = logging.getLogger("funnel")

USER_COLUMN, ARTIST_COLUMN, TAG_COLUMN = "user_id", "artist_id", "tag"
_EVENT_FLAGS = {"duckdb": "--duckdb", "user_col": "--user-col", "artist_col": "--artist-col", "time_col": "--time-col",
                "weight_col": "--weight-col", "duration_col": "--duration-col", "min_duration": "--min-duration",
                "artist_tags": "--artist-tags", "tag_col": "--tag-col"}
_COLUMN_FLAGS = {"user": "--user-col", "artist": "--artist-col", "timestamp": "--time-col", "weight": "--weight-col",
                 "duration": "--duration-col"}


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "train", help="fit, save the model and write the top artists (the default command)",
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
    parser.add_argument("--runsvd", "--retrain-svd", type=boolean, default=False, dest="runsvd", metavar="True/False",
                        help="retrain the BiasedSVD embeddings; False reuses saved ones that match the "
                             "data and settings (default: False)")
    parser.add_argument("--judge", "--retrain-ranker", type=boolean, default=False, dest="judge",
                        metavar="True/False",
                        help="retrain the ranker; False reuses saved weights that match the "
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
    parser.set_defaults(func=run, check=partial(check_flags, parser))
    return parser


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flags that would be ignored, then fill in the column defaults.

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
    check_spreadsheet_flag(parser, args)


def to_config(args: argparse.Namespace) -> FunnelConfig:
    """Map parsed flags onto a :class:`FunnelConfig` (the only place flags meet settings)."""
    changes = {"seed": args.seed, "show_progress": args.progress, "cache_dir": args.artifacts,
               "reuse_svd": not args.runsvd, "reuse_ranker": not args.judge}
    if args.candidates is not None:
        candidates = dict(FunnelConfig().candidates)
        candidates.update({name: args.candidates for name in ("tags", "als")})
        changes["candidates"] = candidates
    return FunnelConfig().replace(**changes)


def check_inputs(args: argparse.Namespace, output: Path) -> None:
    """Fail before any work when an input is the output, or the artist-tags file is not readable as flagged."""
    check_not_input(output, {"--events": args.events, "--artist-tags": args.artist_tags})
    if args.artist_tags is not None:
        tag_columns(Path(args.artist_tags), args.artist_col, args.tag_col)


def tag_columns(path: Path, artist: str, tag: str) -> tuple[str, str]:
    """How to read an artist-tags file (``"csv"`` or ``"parquet"``, and its separator), after checking its header."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.data.duckdb_source import CSV_SUFFIXES, PARQUET_SUFFIXES

    if not path.is_file():
        raise DataError(f"--artist-tags {path} is {'a directory' if path.is_dir() else 'missing'}; "
                        "give a CSV or Parquet file")
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        kind, sep = "parquet", ""
    elif name.endswith(CSV_SUFFIXES):
        kind, sep = "csv", "\t" if ".tsv" in name else ","
    else:
        raise ConfigError(f"--artist-tags {path}: unknown file type; use a Parquet ({', '.join(PARQUET_SUFFIXES)}) "
                          f"or CSV ({', '.join(CSV_SUFFIXES)}) file")
    if artist == tag:
        raise ConfigError(f"--artist-col and --tag-col both name column {artist!r}; name the label column "
                          "with --tag-col")
    try:
        columns = pq.read_schema(path).names if kind == "parquet" else list(pd.read_csv(path, sep=sep, nrows=0))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read --artist-tags {path}: {' '.join(str(exc).split())}; give a CSV file with "
                        "a header row or a Parquet file") from exc
    missing = [column for column in (artist, tag) if column not in columns]
    if missing:
        flags = " and ".join({artist: "--artist-col", tag: "--tag-col"}[column] for column in missing)
        raise DataError(f"--artist-tags {path} has no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, columns))}: name the right one{'s' if len(missing) > 1 else ''} "
                        f"with {flags}")
    return kind, sep


def read_artist_tags(path: Path, artist: str, tag: str) -> pd.DataFrame:
    """The ``artist_id, tag`` frame of an artist-tags file, read from its ``artist`` and ``tag`` columns."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind, sep = tag_columns(path, artist, tag)
    try:
        if kind == "parquet":
            frame = pq.read_table(path, columns=[artist, tag]).to_pandas()
        else:
            # labels stay text ("1990s", "80"); empty fields become "" and are dropped by from_frames
            frame = pd.read_csv(path, sep=sep, usecols=[artist, tag], dtype={tag: str}, keep_default_na=False,
                                na_values={artist: [""]})
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read --artist-tags {path}: {' '.join(str(exc).split())}; give a CSV file with "
                        "a header row or a Parquet file") from exc
    return pd.DataFrame({"artist_id": frame[artist], "tag": frame[tag]})


def load_events(args: argparse.Namespace) -> Dataset:
    """The dataset of an event log (``--events`` or ``--events-sql``), with ``--artist-tags`` as artist labels."""
    from funnel.data import Dataset
    from funnel.data.events import read_events

    try:
        interactions = read_events(args.events, sql=args.events_sql, database=args.duckdb, user=args.user_col,
                                   artist=args.artist_col, timestamp=args.time_col, weight=args.weight_col,
                                   duration=args.duration_col, min_duration=args.min_duration)
    except DataError as exc:
        # read_events names its keywords ("pass the right name as user=..."); here they are flags
        message = str(exc)
        for keyword, flag in _COLUMN_FLAGS.items():
            message = message.replace(f" as {keyword}=...", f" with {flag}")
        if message == str(exc):
            raise
        raise DataError(message) from exc
    tags = None
    if args.artist_tags is not None:
        tags = read_artist_tags(Path(args.artist_tags), args.artist_col, args.tag_col)
    # no source for the interactions: read_events has aggregated them, so row numbers name no line of a file
    return Dataset.from_frames(interactions, artist_tags=tags,
                               sources={"artist_tags": str(args.artist_tags)} if tags is not None else None)


def evaluate_holdout(dataset: Dataset, config: FunnelConfig, topn: int) -> None:
    """Fit the funnel and the ALS-only baseline on a per-user holdout and print the table."""
    from funnel import Recommender, split
    from funnel.baselines import ALSRecommender
    from funnel.evaluation import candidate_recall, evaluate

    train, test = split.per_user(dataset, seed=config.seed)
    ks = (10, 20)
    eval_config = config.replace(cache_dir=str(Path(config.cache_dir) / "holdout")) if config.cache_dir else config
    started = time.perf_counter()
    funnel_model = Recommender(eval_config).fit(train)
    funnel_fit = time.perf_counter() - started
    funnel_metrics = evaluate(funnel_model, train, test, ks)
    recall = candidate_recall(funnel_model, train, test)
    started = time.perf_counter()
    baseline = ALSRecommender(seed=config.seed).fit(train)
    baseline_fit = time.perf_counter() - started
    baseline_metrics = evaluate(baseline, train, test, ks)
    names = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "ndcg", "map")]
    print(f"\nPer-user holdout (20% of each user's artists, seed {config.seed}; "
          f"{test['user_id'].nunique()} users, {len(test)} held-out pairs)")
    print(f"{'metric':<14}{'funnel':>10}{'ALS-only':>10}{'ratio':>8}")
    for name in names + ["coverage"]:
        f, b = funnel_metrics[name], baseline_metrics[name]
        print(f"{name:<14}{f:>10.4f}{b:>10.4f}{(f / b if b else float('nan')):>8.2f}")
    per_user = sum(s.n_candidates for s in funnel_model.stages_.sources_)
    print(f"{'cand. recall':<14}{recall:>10.4f}{'':>10}   ({per_user} candidates/user before merging)")
    print(f"{'fit seconds':<14}{funnel_fit:>10.1f}{baseline_fit:>10.1f}\n")


def run(args: argparse.Namespace) -> None:
    """Fit (reusing saved parts), save the model under ``--artifacts`` and write the top artists to ``--output``."""
    from funnel import Recommender, load_lastfm
    from funnel.outputs import check_output, write_recommendations
    from funnel.persistence.model import check_model_directory

    config = to_config(args)
    output = Path(args.output)
    check_output(output, args.output_table)
    check_writable(output)
    check_writable(Path(args.artifacts) / "model" / "manifest.json")
    check_model_directory(Path(args.artifacts) / "model")  # a folder of other files: refused before training
    if args.topn < 1:
        raise ConfigError(f"--topn {args.topn} must be at least 1")
    check_inputs(args, output)
    started = time.perf_counter()
    from_log = args.events is not None or args.events_sql is not None
    dataset = load_events(args) if from_log else load_lastfm(args.data)
    logger.info("loaded %s (fingerprint %s)", dataset, dataset.fingerprint())
    if args.evaluate:
        evaluate_holdout(dataset, config, args.topn)
    model = Recommender(config).fit(dataset)
    model.save(Path(args.artifacts) / "model")
    recommendations = model.recommend_all(n=args.topn, explain=args.explain)
    if args.explain:
        recommendations = recommendations.drop(columns=["sources", "because_ids", "because", "contributions"])
    write_recommendations(recommendations, output, args.output_table, spreadsheet_safe=args.csv_spreadsheet_safe)
    logger.info("wrote %d recommendations for %d users to %s%s in %.1fs total", len(recommendations),
                recommendations["user_id"].nunique(), output,
                f" (table {args.output_table})" if args.output_table else "", time.perf_counter() - started)
