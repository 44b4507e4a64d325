"""Judge funnel settings on validation splits cut from the training data (never the test part).

For each seed, the public split gives the training part; 20% of each listener's training
artists (seed + 100) become the validation set. The defaults, the variant (``--set``) and the
tuned ALS-only baseline are fitted on the rest and scored on validation NDCG@10. The verdict
is the rule of docs/experiments.md: the mean paired difference (variant - defaults) with its
standard error over the seeds; a quality gain counts when the mean exceeds two standard errors.

    python benchmarks/tune.py --set '{"ranker": {"part": "logistic", "C": 0.3}}' --seeds 0 1 2 3 4
    python benchmarks/tune.py --seeds 0 1 2 3 4          # the defaults against ALS-only
    python benchmarks/tune.py --baseline '{"factors": 64}' --seeds 0 1 2 3 4
    python benchmarks/tune.py --protocol temporal --set '{"features": [...]}'   # synthetic event logs

The temporal protocol runs on the synthetic event log of ``benchmarks/eventlog.py``, a new
log per seed: the artists each listener started last are the test part, and those the
listener started last in the rest are the validation part.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from eventlog import event_log_dataset

from funnel import Recommender, load_lastfm, split
from funnel.baselines import ALSRecommender
from funnel.evaluation import candidate_recall, evaluate


def paired(differences: list[float]) -> tuple[float, float]:
    """Mean and standard error of paired differences (0 standard error for one pair)."""
    values = np.asarray(differences, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--set", type=json.loads, default={}, help="JSON object of FunnelConfig overrides")
    parser.add_argument("--baseline", type=json.loads, default={},
                        help="JSON object of ALSRecommender keyword arguments for the baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--protocol", choices=["per_user", "global", "temporal"], default="per_user")
    args = parser.parse_args()
    data = load_lastfm(args.data) if args.protocol != "temporal" else None
    rows = []
    for seed in args.seeds:
        if data is None:
            train = split.temporal(event_log_dataset(seed)).train
            fit_part, validation = split.temporal(train)
        else:
            train = (split.per_user(data, seed=seed) if args.protocol == "per_user"
                     else split.global_random(data, seed=seed)).train
            fit_part, validation = split.per_user(train, seed=seed + 100)
        row = {"seed": seed}
        variants = {"defaults": {}, "variant": args.set} if args.set else {"defaults": {}}
        for name, settings in variants.items():
            started = time.perf_counter()
            model = Recommender(seed=seed, **settings).fit(fit_part)
            row[f"{name}_fit_seconds"] = time.perf_counter() - started
            row[name] = evaluate(model, fit_part, validation)["ndcg@10"]
            row[f"{name}_candidate_recall"] = candidate_recall(model, fit_part, validation)
        row["als"] = evaluate(ALSRecommender(**{"seed": seed, **args.baseline}).fit(fit_part), fit_part,
                              validation)["ndcg@10"]
        rows.append(row)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    summary: dict[str, object] = {"settings": args.set, "baseline": args.baseline, "seeds": args.seeds,
                                  "protocol": args.protocol,
                                  "defaults_ndcg@10": round(float(np.mean([r["defaults"] for r in rows])), 4),
                                  "als_ndcg@10": round(float(np.mean([r["als"] for r in rows])), 4)}
    mean, se = paired([r["defaults"] - r["als"] for r in rows])
    summary["defaults_minus_als"] = {"mean": round(mean, 4), "se": round(se, 4)}
    if args.set:
        mean, se = paired([r["variant"] - r["defaults"] for r in rows])
        summary["variant_ndcg@10"] = round(float(np.mean([r["variant"] for r in rows])), 4)
        summary["variant_minus_defaults"] = {"mean": round(mean, 5), "se": round(se, 5)}
        summary["verdict"] = ("gain (mean > 2 SE)" if mean > 2 * se and len(rows) > 1 else
                              "within one SE (keep only as a speed gain)" if abs(mean) <= se else
                              "no gain by the rule")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
