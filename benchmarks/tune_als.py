"""Tune the ALS-only baseline on a validation split cut from the training data.

The public per-user split (20% of each user's artists, seed ``--seed``) gives the training
part; 20% of each user's training artists (seed ``--seed + 100``) become the validation set.
The test part is never touched. Prints the best settings by validation NDCG@10.

    python benchmarks/tune_als.py --trials 40
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from funnel import load_lastfm, split
from funnel.baselines import ALSRecommender
from funnel.evaluation import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Last.fm directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--trials", type=int, default=40, help="random configurations to try")
    parser.add_argument("--seed", type=int, default=0, help="seed of the public split")
    parser.add_argument("--grid", type=json.loads, default=None,
                        help='JSON object overriding grid values, e.g. \'{"confidence": ["binary"]}\'')
    args = parser.parse_args()

    train = split.per_user(load_lastfm(args.data), seed=args.seed).train
    fit_part, validation = split.per_user(train, seed=args.seed + 100)
    grid = {
        "confidence": ["binary", "log", "raw"],
        "factors": [32, 64, 100, 128, 192],
        "alpha": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0],
        "regularization": [0.01, 0.05, 0.1, 0.168, 0.5, 1.0],
        "iterations": [15, 30],
    }
    grid.update(args.grid or {})
    combos = list(itertools.product(*grid.values()))
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(combos), size=min(args.trials, len(combos)), replace=False)
    results = []
    for i, pick in enumerate(picks):
        params = dict(zip(grid, combos[pick]))
        started = time.perf_counter()
        model = ALSRecommender(**params, seed=args.seed).fit(fit_part)
        score = evaluate(model, fit_part, validation)["ndcg@10"]
        results.append((score, params))
        print(f"[{i + 1}/{len(picks)}] ndcg@10={score:.4f} {params} ({time.perf_counter() - started:.1f}s)",
              flush=True)
    results.sort(key=lambda r: -r[0])
    print("best:", json.dumps({"validation_ndcg@10": round(results[0][0], 4), **results[0][1]}))


if __name__ == "__main__":
    main()
