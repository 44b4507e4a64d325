"""``train`` (the default subcommand): fit on Last.fm or an event log, save the model, write the top artists."""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from funnel.cli.data import add_data_flags, check_data_flags, load_dataset, read_artist_tags, tag_columns
from funnel.cli.flags import add_spreadsheet_flag, boolean, check_spreadsheet_flag
from funnel.cli.paths import check_not_input, check_writable
from funnel.config import FunnelConfig
from funnel.errors import ConfigError

if TYPE_CHECKING:
    from funnel.data import Dataset

logger = logging.getLogger("funnel")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "train", help="fit, save the model and write the top artists (the default command)",
        description="Two-stage artist recommender on Last.fm or an event log: writes the top artists of "
                    "every user to a file and, with --evaluate True, compares the funnel with the ALS-only baseline.",
    )
    add_data_flags(parser)
    parser.add_argument("--artifacts", default="artifacts/",
                        help="directory for the saved model and cached trained parts (default: artifacts/)")
    parser.add_argument("--output", default=None,
                        help="file to write, by extension: .csv, .parquet, or a DuckDB database (.duckdb, .db) "
                             "with --output-table (default: artifacts/recommendations.csv; none with --engine spark)")
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
    parser.add_argument("--fit-users", type=listeners, default=None, dest="fit_users", metavar="N|SHARE",
                        help="learn from a random sample of this many listeners (an integer) or this share "
                             "(0 < SHARE <= 1); every listener is still recommended to (default: all)")
    parser.add_argument("--parallel-fit", choices=("auto", "process", "thread"), default=None, dest="parallel_fit",
                        help="where the serving side of the fit runs beside the ranker's: a worker process "
                             "(faster; holds a copy of the data) or a thread of this process (default: --config's, "
                             "else auto: the process unless --fit-users or --engine spark is given)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: --config's, else 0)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON settings to train with, as written by 'tune --output' or FunnelConfig.to_file "
                             "(default: the defaults; the flags above override it)")
    parser.add_argument("--evaluate", type=boolean, default=False, metavar="True/False",
                        help="also fit on a per-user 20%% holdout and print metrics for the funnel and "
                             "the ALS-only baseline (default: False)")
    parser.add_argument("--explain", type=boolean, default=False, metavar="True/False",
                        help="add a short 'reason' column to the output (default: False)")
    parser.add_argument("--progress", type=boolean, default=True, metavar="True/False",
                        help="show progress bars (default: True)")
    parser.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="where the play log is aggregated and the listeners sampled: in this process "
                             "(DuckDB), or on Spark, which sends only --fit-users' sample to this process and "
                             "saves an artist-side model for 'score --engine spark' (default: local)")
    spark = parser.add_argument_group("spark (with --engine spark)")
    spark.add_argument("--master", default=None,
                       help="Spark master URL, e.g. local[2] (default: spark-submit's, else local[*])")
    spark.add_argument("--histories-output", default=None, dest="histories_output", metavar="DIR.parquet",
                       help="also write every listener's aggregated plays (user_id, artist_id, weight, ...) as a "
                            "Parquet directory, the --histories of 'score --engine spark'")
    parser.set_defaults(func=run, check=partial(check_flags, parser))
    return parser


def listeners(text: str) -> int | float:
    """``--fit-users``: a count (``100000``) or a share (``0.2``); FunnelConfig checks the range."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a count of listeners nor a share") from None


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flags that would be ignored, then fill in the column defaults.

    Flags that do not fit together are malformed flags: ``parser.error`` prints the usage
    and exits with code 2, as for flags argparse checks itself.
    """
    check_data_flags(parser, args)
    check_spreadsheet_flag(parser, args)
    if args.engine == "local":
        given = [flag for flag, value in (("--master", args.master), ("--histories-output", args.histories_output))
                 if value is not None]
        if given:
            parser.error(f"{', '.join(given)} apply to --engine spark only")
        args.output = args.output or "artifacts/recommendations.csv"
        return
    if args.events is None:
        parser.error("--engine spark reads an event log: give --events PATH_OR_GLOB (Parquet, or CSV with a header)")
    given = [flag for flag, value in (("--output", args.output), ("--output-table", args.output_table),
                                      ("--evaluate", args.evaluate or None), ("--explain", args.explain or None))
             if value is not None]
    if given:
        parser.error(f"{', '.join(given)} apply to --engine local only: --engine spark saves an artist-side model; "
                     "score every listener with 'score --engine spark --histories DIR' (--histories-output writes it)")


def to_config(args: argparse.Namespace) -> FunnelConfig:
    """Map parsed flags onto a :class:`FunnelConfig` (the only place flags meet settings): ``--config``'s or the
    defaults, with the flags on top."""
    base = FunnelConfig.from_file(args.config) if args.config is not None else FunnelConfig()
    changes = {"show_progress": args.progress, "cache_dir": args.artifacts,
               "reuse_svd": not args.runsvd, "reuse_ranker": not args.judge}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.fit_users is not None:
        changes["fit_users"] = args.fit_users
    if args.parallel_fit is not None:
        changes["parallel_fit"] = args.parallel_fit
    if args.candidates is not None:
        candidates = dict(base.candidates)
        for name in ("tags", "als"):
            if name in candidates:
                entry = candidates[name]
                candidates[name] = {**entry, "n": args.candidates} if isinstance(entry, dict) else args.candidates
        changes["candidates"] = candidates
    return base.replace(**changes)


def check_inputs(args: argparse.Namespace, output: Path) -> None:
    """Fail before any work when an input is the output, or the artist-tags file is not readable as flagged."""
    check_not_input(output, {"--events": args.events, "--artist-tags": args.artist_tags})
    if args.artist_tags is not None:
        tag_columns(Path(args.artist_tags), args.artist_col, args.tag_col)


def evaluate_holdout(dataset: Dataset, config: FunnelConfig, topn: int) -> None:
    """Fit the funnel and the ALS-only baseline on a per-user holdout and print the table."""
    from funnel import Recommender, split
    from funnel.baselines import ALSRecommender
    from funnel.evaluation import candidate_recall, evaluate
    from funnel.tuning import components

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
    floor = components((train, test), config.seed)
    print("Each component alone (NDCG@10): " + ", ".join(f"{m} {v:.4f}" for m, v in floor.itertuples(index=False)))
    best = floor.loc[floor["ndcg@10"].idxmax()]
    if funnel_metrics["ndcg@10"] < best["ndcg@10"]:
        logger.warning("the funnel (%.4f NDCG@10) is below %s alone (%.4f) on this holdout",
                       funnel_metrics["ndcg@10"], best["method"], best["ndcg@10"])
    print()


def run_spark(args: argparse.Namespace, config: FunnelConfig) -> None:
    """Aggregate the log and sample listeners on Spark, fit the sample here, save an artist-side model."""
    from funnel import Recommender
    from funnel.cli.score import spark_session
    from funnel.persistence.model import check_model_directory
    from funnel.spark import aggregate_events, write_parquet
    from funnel.spark.fit import sample_dataset

    model_path = Path(args.artifacts) / "model"
    check_writable(model_path / "manifest.json")
    check_model_directory(model_path)
    if args.histories_output is not None:
        check_not_input(Path(args.histories_output), {"--events": args.events, "--artist-tags": args.artist_tags})
    check_inputs(args, model_path)
    tags = read_artist_tags(Path(args.artist_tags), args.artist_col, args.tag_col) if args.artist_tags else None
    started = time.perf_counter()
    session = spark_session(args.master, "train")
    reader = session.read.option("header", True).option("inferSchema", True).csv \
        if args.events.lower().endswith(".csv") else session.read.parquet
    pairs = aggregate_events(reader(args.events), user=args.user_col, artist=args.artist_col,
                             timestamp=args.time_col, weight=args.weight_col, duration=args.duration_col,
                             min_duration=args.min_duration)
    if args.histories_output is not None:  # written once, then read back: the plays are aggregated once
        write_parquet(pairs, args.histories_output)
        pairs = session.read.parquet(args.histories_output)
        logger.info("aggregated the plays to %s in %.1fs", args.histories_output, time.perf_counter() - started)
    else:
        pairs = pairs.persist()
    step = time.perf_counter()
    dataset, n_users = sample_dataset(pairs, config.fit_users, config.seed, tags)
    logger.info("sampled and collected the listeners in %.1fs", time.perf_counter() - step)
    step = time.perf_counter()
    # the sample is what this driver holds; "auto" keeps one copy of it, as it does for a fit_users fit
    parallel = "thread" if config.parallel_fit == "auto" else config.parallel_fit
    model = Recommender(config.replace(fit_users=None, parallel_fit=parallel)).fit(dataset)
    model.save(model_path, artist_side_only=True)
    logger.info("fitted and saved in %.1fs", time.perf_counter() - step)
    logger.info("saved an artist-side model learned from %d of %d listeners to %s in %.1fs; score every listener "
                "with: python main.py score --engine spark --artifacts %s --histories %s", dataset.n_users, n_users,
                model_path, time.perf_counter() - started, args.artifacts, args.histories_output or "PLAYS.parquet")


def run(args: argparse.Namespace) -> None:
    """Fit (reusing saved parts), save the model under ``--artifacts`` and write the top artists to ``--output``."""
    from funnel import Recommender
    from funnel.outputs import check_output, write_recommendations
    from funnel.persistence.model import check_model_directory

    config = to_config(args)
    if args.engine == "spark":
        run_spark(args, config)
        return
    output = Path(args.output)
    check_output(output, args.output_table)
    check_writable(output)
    check_writable(Path(args.artifacts) / "model" / "manifest.json")
    check_model_directory(Path(args.artifacts) / "model")  # a folder of other files: refused before training
    if args.topn < 1:
        raise ConfigError(f"--topn {args.topn} must be at least 1")
    check_inputs(args, output)
    started = time.perf_counter()
    dataset = load_dataset(args)
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
