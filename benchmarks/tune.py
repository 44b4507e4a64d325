"""Score funnel settings on validation splits cut from the training data (never the test part).

For each seed, the public per-user split gives the training part; 20% of each user's
training artists (seed + 100) become the validation set. The funnel with the given settings
and the tuned ALS-only baseline are fitted on the rest and scored on validation NDCG@10.

    python benchmarks/tune.py --set '{"ranker_C": 0.3}' --seeds 0 1
    python benchmarks/tune.py --baseline '{"n_models": 3}' --seeds 0 1 2   # another baseline
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from funnel import Recommender, load_lastfm, split
from funnel.baselines import ALSRecommender
from funnel.evaluation import candidate_recall, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--set", type=json.loads, default={}, help="JSON object of FunnelConfig overrides")
    parser.add_argument("--baseline", type=json.loads, default={},
                        help="JSON object of ALSRecommender keyword arguments for the baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--protocol", choices=["per_user", "global"], default="per_user")
    args = parser.parse_args()
    data = load_lastfm(args.data)
    ratios, scores, bases = [], [], []
    for seed in args.seeds:
        if args.protocol == "per_user":
            train = split.per_user(data, seed=seed).train
        else:
            train = split.global_random(data, seed=seed).train
        fit_part, validation = split.per_user(train, seed=seed + 100)
        started = time.perf_counter()
        model = Recommender(seed=seed, **args.set).fit(fit_part)
        fit_time = time.perf_counter() - started
        ours = evaluate(model, fit_part, validation)["ndcg@10"]
        base = evaluate(ALSRecommender(**{"seed": seed, **args.baseline}).fit(fit_part), fit_part,
                        validation)["ndcg@10"]
        recall = candidate_recall(model, fit_part, validation)
        ratios.append(ours / base)
        scores.append(ours)
        bases.append(base)
        print(f"seed {seed}: funnel {ours:.4f} ALS {base:.4f} ratio {ours / base:.3f} "
              f"candidate recall {recall:.3f} fit {fit_time:.1f}s", flush=True)
    print(json.dumps({"settings": args.set, "baseline": args.baseline,
                      "validation_ndcg@10": round(float(np.mean(scores)), 4),
                      "baseline_validation_ndcg@10": round(float(np.mean(bases)), 4),
                      "ratio": round(float(np.mean(ratios)), 4)}))


if __name__ == "__main__":
    main()
