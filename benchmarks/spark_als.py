"""implicit's ALS and Spark MLlib's ALS side by side: the same data, settings and ranking code.

Both are the ALS-only baseline (:class:`funnel.baselines.ALSRecommender` and
:class:`funnel.baselines.MLlibALSRecommender`, 32 factors, 30 iterations, binary
confidence, alpha 10) on per-user splits of Last.fm (seeds 0-4), and once more with MLlib's
regularisation chosen on a validation split cut from the first training split (MLlib's
ALS-WR scales the penalty by each row's plays, so the same number is another penalty).
NDCG@10 is paired per split (mean difference and its standard error); fit seconds are on a
local[2] Spark session.

    python benchmarks/spark_als.py

Writes benchmarks/results/spark_als.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
REGULARIZATION = (0.001, 0.01, 0.03, 0.1, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Last.fm directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from funnel import load_lastfm, split
    from funnel.baselines import ALSRecommender, MLlibALSRecommender
    from funnel.evaluation import evaluate

    session = (SparkSession.builder.master("local[2]").appName("funnel ALS comparison")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    data = load_lastfm(args.data)
    train, _ = split.per_user(data, seed=args.seeds[0])
    fit_part, validation = split.per_user(train, seed=100)
    tuning = {reg: evaluate(MLlibALSRecommender(regularization=reg).fit(fit_part), fit_part, validation)["ndcg@10"]
              for reg in REGULARIZATION}
    best = max(tuning, key=tuning.get)
    print(f"MLlib regularisation on validation: {tuning} -> {best}", flush=True)
    methods = {"implicit": lambda: ALSRecommender(), "MLlib": lambda: MLlibALSRecommender(),
               f"MLlib, regularization {best}": lambda: MLlibALSRecommender(regularization=best)}
    runs: dict[str, dict[str, list[float]]] = {name: {"ndcg@10": [], "fit_seconds": []} for name in methods}
    for seed in args.seeds:
        train, test = split.per_user(data, seed=seed)
        for name, make in methods.items():
            started = time.perf_counter()
            model = make().fit(train)
            runs[name]["fit_seconds"].append(time.perf_counter() - started)
            runs[name]["ndcg@10"].append(evaluate(model, train, test)["ndcg@10"])
        print(seed, {name: round(run["ndcg@10"][-1], 4) for name, run in runs.items()}, flush=True)
    reference = np.array(runs["implicit"]["ndcg@10"])
    out = {"command": "python benchmarks/spark_als.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "mllib_regularization_on_validation": {str(k): v for k, v in tuning.items()}, "methods": {}}
    for name, run in runs.items():
        ndcg = np.array(run["ndcg@10"])
        diff = ndcg - reference
        out["methods"][name] = {"ndcg@10": ndcg.tolist(), "mean_ndcg@10": float(ndcg.mean()),
                                "minus_implicit": float(diff.mean()),
                                "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
                                "median_fit_seconds": float(np.median(run["fit_seconds"]))}
    print(json.dumps(out["methods"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spark_als.json").write_text(json.dumps(out, indent=2) + "\n")
    session.stop()


if __name__ == "__main__":
    main()
