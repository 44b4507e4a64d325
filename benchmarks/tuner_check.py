"""The funnel against each of its components, with defaults and after ``funnel.tune``, on a real protocol.

    python benchmarks/tuner_check.py --protocol tag_dates            # defaults and each component
    python benchmarks/tuner_check.py --protocol tag_dates --tune 600 # also funnel.tune, a 600 s budget
    python benchmarks/tuner_check.py --protocol per_user --tune 600  # Last.fm's per-user 20% holdout, seed 0

``tag_dates``, which artists a listener will tag next: ``user_taggedartists.dat`` dates
every (listener, artist, tag) assignment, real timestamps of listeners engaging with
artists. Each (listener, artist) pair tagged becomes an interaction
whose weight is its number of tag assignments and whose first and last listen are its first
and last tagging dates. The test part is each listener's last-started 20% (``split.temporal``,
listeners with 5 or more tagged artists); the tag assignments of held-out pairs are removed
from training. Validation splits are cut from the training part the way ``funnel.tune`` cuts
them (temporal, each over a seeded 80% of the listeners); they give the paired differences.
``per_user``: Last.fm's play counts (no listen times), 20% of each listener's artists held
out (seed 0), validation splits per user. Every method counts tagged artists as known, as the
funnel does.

Writes benchmarks/results/tuner_PROTOCOL.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from funnel import Dataset, Recommender, load_lastfm, split, tune
from funnel.baselines import (
    ALSRecommender,
    BiasedSVDRecommender,
    EASERecommender,
    PopularityRecommender,
    TagIndexRecommender,
)
from funnel.evaluation import evaluate
from funnel.tuning import EASE_PENALTIES, validation_splits

RESULTS = Path(__file__).parent / "results"


def tagging_dataset(path: str | None = None) -> Dataset:
    """Last.fm with the tagged (listener, artist) pairs as interactions, dated by their tags."""
    lastfm = load_lastfm(path)
    assign = lastfm.tag_assignments
    pairs = (assign.groupby(["user_id", "artist_id"])["timestamp"].agg(["min", "max", "size"]).reset_index()
             .rename(columns={"min": "first_listen", "max": "last_listen", "size": "weight"}))
    pairs["weight"] = pairs["weight"].astype(np.float64)
    return Dataset.from_frames(pairs, lastfm.artists, lastfm.tags, assign, lastfm.friends)


def ndcg(model, train: Dataset, held: pd.DataFrame) -> float:
    return evaluate(model.fit(train), train, held, ks=(10,))["ndcg@10"]


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean paired difference ``a - b``, its standard error and the ratio of the means."""
    diff = np.asarray(a) - np.asarray(b)
    return {"mean": float(diff.mean()), "standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "ratio": float(np.mean(a) / np.mean(b))}


def methods(seed: int, l2: float) -> dict:
    return {"EASE": lambda: EASERecommender(l2=l2), "ALS": lambda: ALSRecommender(seed=seed),
            "BiasedSVD": lambda: BiasedSVDRecommender(seed=seed), "tag index": lambda: TagIndexRecommender(seed=seed),
            "popularity": lambda: PopularityRecommender()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--protocol", choices=["tag_dates", "per_user"], default="tag_dates")
    parser.add_argument("--splits", type=int, default=5, help="validation splits (default: 5)")
    parser.add_argument("--tune", type=float, default=0.0, metavar="SECONDS",
                        help="also run funnel.tune with this budget on the training part")
    args = parser.parse_args()
    if args.protocol == "tag_dates":
        data = tagging_dataset(args.data)
        train, test = split.temporal(data)
    else:
        data = load_lastfm(args.data)
        train, test = split.per_user(data, seed=0)
    print(f"{data}; test: {len(test)} pairs of {test['user_id'].nunique()} listeners", flush=True)
    command = f"python benchmarks/tuner_check.py --protocol {args.protocol}" + (f" --tune {args.tune:g}" if args.tune
                                                                               else "")
    result: dict = {"command": command,
                    "dataset": str(data), "test_pairs": len(test)}
    # EASE's penalty is chosen on the first validation split, as a user would
    splits = validation_splits(train, args.splits, seed=0)
    l2 = max(EASE_PENALTIES, key=lambda value: ndcg(EASERecommender(l2=value), *splits[0]))
    timed = data.has_listen_times  # the ranker's labels are temporal: compare with random ones
    validation: dict[str, list[float]] = {"funnel": [], **({"funnel, random ranker labels": []} if timed else {})}
    for i, part in enumerate(splits):
        validation["funnel"].append(ndcg(Recommender(seed=0), *part))
        if timed:
            validation["funnel, random ranker labels"].append(ndcg(Recommender(seed=0, ranker_labels="random"),
                                                                   *part))
        for name, make in methods(0, l2).items():
            validation.setdefault(name, []).append(ndcg(make(), *part))
        print(f"validation split {i + 1}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in validation.items()),
              flush=True)
    best = max((name for name in validation if not name.startswith("funnel")),
               key=lambda name: np.mean(validation[name]))
    result["validation"] = {"ndcg@10": validation, "ease_l2": l2, "best_component": best,
                            "funnel_minus_best_component": paired(validation["funnel"], validation[best])}
    if timed:
        result["validation"]["temporal_minus_random_labels"] = paired(validation["funnel"],
                                                                      validation["funnel, random ranker labels"])
    print("validation:", {k: v for k, v in result["validation"].items() if k != "ndcg@10"}, flush=True)
    test_scores = {"funnel (defaults)": ndcg(Recommender(seed=0), train, test)}
    for name, make in methods(0, l2).items():
        test_scores[name] = ndcg(make(), train, test)
    if args.tune:
        started = time.perf_counter()
        tuned = tune(train, time_budget=args.tune, seed=0, show_progress=False)
        result["tune"] = {"seconds": time.perf_counter() - started, "verdict": tuned.verdict,
                          "adopted": tuned.adopted, "config": tuned.config.to_dict(),
                          "trials": int(len(tuned.table) - 1),
                          "components_on_validation": tuned.components.to_dict(orient="records")}
        test_scores["funnel (tuned)"] = ndcg(Recommender(tuned.config.replace(show_progress=False)), train, test)
        print(tuned.verdict, flush=True)
    result["test"] = {"ndcg@10": test_scores,
                      "ratio_to_best_component": test_scores["funnel (defaults)"] /
                      max(v for k, v in test_scores.items() if not k.startswith("funnel"))}
    for name, value in test_scores.items():
        print(f"test {name}: ndcg@10 {value:.4f}", flush=True)
    (RESULTS / f"tuner_{args.protocol}.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
