"""How far the ranker's features shift between training and serving (the train/serve gap).

The ranker learns on features from stages fitted on each listener's history part (80%) and
is served by stages fitted on all of it. For the same listeners, this computes every
candidate's features both ways and prints, per feature, the standardised mean difference
(serving mean - training mean) / training standard deviation, and the ratio of the means.

    python benchmarks/train_serve_gap.py --seed 0

Writes ``benchmarks/results/train_serve_gap.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from funnel import FunnelConfig, load_lastfm
from funnel.batch import Batch
from funnel.ranking.training import history_split
from funnel.stages import Stages

RESULTS = Path(__file__).resolve().parent / "results"


def candidate_features(stages: Stages, dataset, users: np.ndarray, config: FunnelConfig) -> np.ndarray:
    """Every candidate pair's features for ``users``, from ``stages`` over ``dataset``'s histories."""
    known = dataset.known_matrix(config.tagged_known)
    parts = []
    for start in range(0, len(users), 512):
        rows = dataset.user_index(users[start:start + 512])
        batch = Batch(rows, dataset.matrix[rows], known=known[rows])
        parts.append(stages.features(batch, stages.candidates(batch)))
    return np.vstack(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "train_serve_gap.json")
    args = parser.parse_args()
    data = load_lastfm(args.data)
    config = FunnelConfig(seed=args.seed, show_progress=False)
    history, _ = history_split(data, config)
    training = Stages(config).fit(history)
    serving = Stages(config).fit(data)
    users = history.user_ids
    before = candidate_features(training, history, users, config)
    after = candidate_features(serving, data, users, config)
    rows = {}
    for j, name in enumerate(training.feature_names_):
        mean_b, mean_a, std_b = before[:, j].mean(), after[:, j].mean(), before[:, j].std()
        rows[name] = {"training_mean": float(mean_b), "serving_mean": float(mean_a),
                      "standardised_difference": float((mean_a - mean_b) / std_b) if std_b > 0 else 0.0,
                      "mean_ratio": float(mean_a / mean_b) if mean_b != 0 else None}
    report = {"command": f"python benchmarks/train_serve_gap.py --seed {args.seed}", "seed": args.seed,
              "pairs_training": len(before), "pairs_serving": len(after), "features": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    width = max(map(len, rows))
    print(f"{'feature':{width}}  training mean  serving mean  std. difference")
    for name, row in sorted(rows.items(), key=lambda item: -abs(item[1]["standardised_difference"])):
        print(f"{name:{width}}  {row['training_mean']:13.4f}  {row['serving_mean']:12.4f}  "
              f"{row['standardised_difference']:+15.3f}")


if __name__ == "__main__":
    main()
