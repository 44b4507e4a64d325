"""Run the funnel on Last.fm: fit (reusing saved parts), write the CSV, optionally evaluate.

    python main.py --runsvd True
    python main.py --runsvd True --judge True --evaluate True
    python main.py serve --artifacts artifacts/ --port 8000
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from args import parse_args, to_config

logger = logging.getLogger("funnel")


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
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extra ({exc.name} is missing): "
                          'pip install -e ".[serve]"') from exc
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be between 1 and 65535")
    if args.max_n < 1:
        raise ConfigError(f"--max-n {args.max_n} must be at least 1")
    serve_model(str(model_dir(Path(args.artifacts))), args.host, args.port, args.max_n)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs multi-line INFO
    try:
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module="implicit")
        from funnel import FunnelError, Recommender, load_lastfm
        from funnel.persistence import atomic_write

        if args.command == "serve":
            serve(args)
            return 0
        config = to_config(args)
        output = Path(args.output)
        check_writable(output)
        check_writable(Path(args.artifacts) / "model" / "manifest.json")
        if args.topn < 1:
            raise FunnelError(f"--topn {args.topn} must be at least 1")
        started = time.perf_counter()
        dataset = load_lastfm(args.data)
        logger.info("loaded %s (fingerprint %s)", dataset, dataset.fingerprint())
        if args.evaluate:
            evaluate_holdout(dataset, config, args.topn)
        model = Recommender(config).fit(dataset)
        model.save(Path(args.artifacts) / "model")
        recommendations = model.recommend_all(n=args.topn, explain=args.explain)
        if args.explain:
            recommendations = recommendations.drop(columns=["sources", "because_ids", "because", "contributions"])
        atomic_write(output, lambda handle: recommendations.to_csv(handle, index=False, lineterminator="\n"),
                     mode="w")
        logger.info("wrote %d recommendations for %d users to %s in %.1fs total", len(recommendations),
                    recommendations["user_id"].nunique(), output, time.perf_counter() - started)
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
