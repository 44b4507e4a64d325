"""Run the funnel on Last.fm or an event log: fit (reusing saved parts), write the top artists, optionally evaluate.

    python main.py --runsvd True
    python main.py --runsvd True --judge True --evaluate True
    python main.py --events "logs/*.parquet" --user-col user --time-col ts --output recs.parquet
    python main.py --events-sql "SELECT * FROM plays" --duckdb warehouse.duckdb --output warehouse.duckdb \\
        --output-table recommendations
    python main.py serve --artifacts artifacts/ --port 8000
    python main.py score --engine spark --artifacts artifacts/ --histories plays.parquet --output recs.parquet
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from args import parse_args, to_config

logger = logging.getLogger("funnel")
_COLUMN_FLAGS = {"user": "--user-col", "artist": "--artist-col", "timestamp": "--time-col", "weight": "--weight-col",
                 "duration": "--duration-col"}


def check_writable(path: Path) -> None:
    """Fail before training when ``path`` (a file to write) cannot be written."""
    from funnel.errors import ArtifactError

    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create directory {directory} for {path}: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise ArtifactError(f"output {path} is a directory; give a file path")
    if not os.access(directory, os.W_OK):
        raise ArtifactError(f"cannot write {path}: directory {directory} is not writable; "
                            "choose another --output/--artifacts")


def local_path(value: str | os.PathLike) -> Path | None:
    """The local path a flag names (``file://`` stripped), or None for a remote URI (``s3a://``, ``hdfs://``)."""
    text = os.fspath(value)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text.removeprefix("file://"))


def check_not_input(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Fail before any work when writing ``output`` would overwrite an input, or write into or over one.

    ``inputs`` maps each flag to its value: a file, a directory, or a glob (checked with
    the paths it matches now). Paths are compared resolved (symlinks, ``./``, ``..``) and,
    where both exist, as files (hard links too). The output may not be an input, lie
    inside an input directory, or be a directory holding an input.
    """
    from funnel.errors import ConfigError

    target = local_path(output)
    if target is None:
        return
    written = target.resolve()
    for flag, value in inputs.items():
        path = local_path(value) if value is not None else None
        if path is None:
            continue
        # a glob's matches first, to name the file; then the pattern itself, which may match nothing yet
        matches = glob.glob(str(path), recursive=True) if any(char in str(path) for char in "*?[") else []
        paths = [*map(Path, matches), path]
        for match in paths:
            read = match.resolve()
            shown = value if match is path else f"{match} (matched by {value})"
            kind = "file" if read.is_file() else "directory" if read.is_dir() else "path"
            if read == written or (read.exists() and written.exists() and os.path.samefile(read, written)):
                raise ConfigError(f"--output {output} is the {flag} {kind} {shown}: writing it would overwrite the "
                                  "input; choose another --output")
            if read in written.parents:
                raise ConfigError(f"--output {output} is inside the {flag} directory {shown}: writing it would add "
                                  "to the input; choose an --output outside it")
            if written in read.parents:
                raise ConfigError(f"--output {output} holds the {flag} {kind} {shown}: writing it would replace "
                                  "the input; choose another --output")


def check_inputs(args, output: Path) -> None:
    """Fail before any work when an input is the output, or the artist-tags file is not readable as flagged."""
    check_not_input(output, {"--events": args.events, "--artist-tags": args.artist_tags})
    if args.artist_tags is not None:
        tag_columns(Path(args.artist_tags), args.artist_col, args.tag_col)


def tag_columns(path: Path, artist: str, tag: str) -> tuple[str, str]:
    """How to read an artist-tags file (``"csv"`` or ``"parquet"``, and its separator), after checking its header."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.errors import ConfigError, DataError
    from funnel.events import CSV_SUFFIXES, PARQUET_SUFFIXES

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


def read_artist_tags(path: Path, artist: str, tag: str):
    """The ``artist_id, tag`` frame of an artist-tags file, read from its ``artist`` and ``tag`` columns."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.errors import DataError

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


def load_events(args):
    """The dataset of an event log (``--events`` or ``--events-sql``), with ``--artist-tags`` as artist labels."""
    from funnel import Dataset
    from funnel.errors import DataError
    from funnel.events import read_events

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


def evaluate_holdout(dataset, config, topn: int) -> None:
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


def model_dir(artifacts: Path) -> Path:
    """The saved model in ``artifacts``: the directory itself, or its ``model/`` from a main.py run."""
    return artifacts if (artifacts / "manifest.json").is_file() else artifacts / "model"


def serve(args) -> None:
    """Serve the saved model over HTTP until interrupted."""
    from funnel.errors import ConfigError

    try:
        from funnel.serving import serve as serve_model
        from funnel.serving.auth import key_file_setting
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extra ({exc.name} is missing): "
                          'pip install -e ".[serve]"') from exc
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be between 1 and 65535")
    if args.max_n < 1:
        raise ConfigError(f"--max-n {args.max_n} must be at least 1")
    for flag, value in (("--max-history", args.max_history), ("--max-batch", args.max_batch),
                        ("--workers", args.workers), ("--max-cost", args.max_cost), ("--threads", args.threads),
                        ("--queue", args.queue)):
        if value is not None and value < (0 if flag == "--queue" else 1):
            raise ConfigError(f"{flag} {value} must be at least {0 if flag == '--queue' else 1}")
    if not 0 < args.time_budget < float("inf"):
        raise ConfigError(f"--time-budget {args.time_budget} must be a number of seconds above 0")
    key_file = key_file_setting(args.api_key_file)  # an empty --api-key-file or variable: an error, not open routes
    serve_model(str(model_dir(Path(args.artifacts))), args.host, args.port, args.max_n,
                api_key_file=key_file, cors_origins=args.cors_origins, max_history=args.max_history,
                max_batch=args.max_batch, workers=args.workers, time_budget=args.time_budget, max_cost=args.max_cost,
                threads=args.threads, queue=args.queue)


def parquet_dataset(path: str, flag: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()):
    """The Parquet file or directory at ``path`` (a pyarrow dataset), after checking its ``columns`` (schema only)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from funnel.errors import DataError

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


def read_parquet_ids(path: str, flag: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()):
    """The ``columns`` (and those of ``optional`` present) of a Parquet file or directory, as pandas."""
    dataset = parquet_dataset(path, flag, columns, optional)
    return dataset.to_table(columns=[c for c in columns + optional if c in dataset.schema.names]).to_pandas()


def read_rules(args, spark=None):
    """``--exclude`` and ``--allow`` as the rules of a scoring call (a Spark DataFrame for a per-user exclude)."""
    exclude = allow = None
    if args.exclude is not None:
        rows = read_parquet_ids(args.exclude, "--exclude", ("artist_id",), ("user_id",))
        if "user_id" not in rows.columns:
            exclude = rows["artist_id"].tolist()
        else:
            exclude = spark.createDataFrame(rows) if spark is not None else rows
    if args.allow is not None:
        allow = read_parquet_ids(args.allow, "--allow", ("artist_id",))["artist_id"].tolist()
    return exclude, allow


def training_histories(model):
    """The ``user_id, artist_id, weight`` rows of the training histories a full model holds."""
    import pandas as pd

    from funnel.errors import UnknownUserError

    if model.artist_side_only_:
        raise UnknownUserError("the model was saved artist-side only and holds no histories: pass --histories PATH")
    plays = model.history_.tocoo()
    return pd.DataFrame({"user_id": model.user_ids_[plays.row], "artist_id": model.artist_ids_[plays.col],
                         "weight": plays.data.astype("float64")})


def spark_session(master: str | None):
    """A Spark session for ``score --engine spark`` (spark-submit's settings, or ``master``)."""
    from funnel.errors import ConfigError

    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(f"--engine spark needs the spark extra ({exc.name} is missing): "
                          'pip install -e ".[spark]"') from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers run this environment's Python
    builder = SparkSession.builder.appName("funnel score").config("spark.sql.session.timeZone", "UTC")
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    session = (builder.master(master) if master else builder).getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def score(args) -> None:
    """Score histories with a saved model, in process or on Spark, and write the recommendations."""
    from funnel import Recommender
    from funnel.errors import ConfigError
    from funnel.outputs import check_output, write_recommendations

    if args.topn < 1:
        raise ConfigError(f"--topn {args.topn} must be at least 1")
    if args.partitions is not None and args.partitions < 1:
        raise ConfigError(f"--partitions {args.partitions} must be at least 1")
    output = Path(args.output)
    # the model directory too: a Spark output directory written over it would replace the model
    check_not_input(args.output, {"--histories": args.histories, "--exclude": args.exclude, "--allow": args.allow,
                                  "--artifacts": model_dir(Path(args.artifacts))})
    if args.engine == "local":
        check_output(output, args.output_table)
        check_writable(output)
    elif output.suffix.lower() != ".parquet":
        raise ConfigError(f"--engine spark writes a Parquet directory: give an --output ending in .parquet, "
                          f"not {output}")
    started = time.perf_counter()
    path = model_dir(Path(args.artifacts))
    model = Recommender.load(path, show_progress=args.progress)
    if args.engine == "local":
        histories = (read_parquet_ids(args.histories, "--histories", ("user_id", "artist_id"), ("weight",))
                     if args.histories else training_histories(model))
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
            histories = session.read.parquet(args.histories)
        else:
            histories = session.createDataFrame(training_histories(model))
        exclude, allow = read_rules(args, session)
        recommendations = funnel_spark.recommend(
            histories, path, n=args.topn, explain=args.explain, exclude=exclude, allow=allow,
            weight="weight" if "weight" in histories.columns else None, partitions=args.partitions, ship=args.ship)
        funnel_spark.write_parquet(recommendations, output)
        users = None
    logger.info("scored %s with %s on %s and wrote %s in %.1fs", "the listeners" if users is None else
                f"{users} listeners", path, args.engine, output, time.perf_counter() - started)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs multi-line INFO
    try:
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module="implicit")
        from funnel import FunnelError, Recommender, load_lastfm
        from funnel.outputs import check_output, write_recommendations
        from funnel.persistence.model import check_model_directory

        if args.command == "serve":
            serve(args)
            return 0
        if args.command == "score":
            score(args)
            return 0
        config = to_config(args)
        output = Path(args.output)
        check_output(output, args.output_table)
        check_writable(output)
        check_writable(Path(args.artifacts) / "model" / "manifest.json")
        check_model_directory(Path(args.artifacts) / "model")  # a folder of other files: refused before training
        if args.topn < 1:
            raise FunnelError(f"--topn {args.topn} must be at least 1")
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
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI turns every error into one line
        from funnel.errors import FunnelError

        kind = "error" if isinstance(exc, (FunnelError, OSError)) else f"unexpected error ({type(exc).__name__})"
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{kind}: {message}", file=sys.stderr)
        return 1


def main() -> None:
    """Console-script entry point (``funnel ...``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
