"""The ranker's labels: each listener's artists started last vs random ones, on validation splits.

    python benchmarks/temporal_labels.py                       # all protocols, seeds 0-4
    python benchmarks/temporal_labels.py --protocols temporal --seeds 0 1 --merge

For each seed the synthetic event log of ``benchmarks/eventlog.py`` is split as the protocol
says into training and test parts; the test part is never used. A validation split is cut
from the training part the same way, each variant is fitted on its inner training part and
scored (NDCG@10, training artists never recommended) on its validation part, and variants
are compared by the mean paired difference over seeds and its standard error:

- ``temporal``: each listener's last-started 20% held out (the data has listen times).
  Random labels without the recent-starts columns (the funnel before ``ranker_labels``),
  temporal labels, temporal labels with the recent-starts columns of the ``recency`` group
  (the defaults), and the defaults with the ranker's history part cut at each listener's
  first label (``funnel.data.split.as_of_cutoff``: no play or listen time after it);
- ``per_user, no times``: a random 20% of each listener's artists, listen times dropped,
  where ``ranker_labels="auto"`` must score exactly as random labels;
- ``per_user, with times``: a random 20%, listen times kept, temporal labels forced.

Writes benchmarks/results/temporal_labels.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from eventlog import event_log_dataset

from funnel import Dataset, Recommender, fitting, split
from funnel.data.dataset import LISTEN_COLUMNS
from funnel.evaluation import evaluate

RESULTS = Path(__file__).parent / "results"
OUTPUT = RESULTS / "temporal_labels.json"
# pseudo-settings of a variant, beside the FunnelConfig ones
CUTOFF = "history_as_of_cutoff"  # the ranker's history part as of each listener's first label
NO_STARTS = {"models": {"listen_times": {"recent_starts": 0}}}  # the recency group without recent starts


@contextmanager
def variant(settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Within the block, the pseudo-settings of ``settings`` hold; yields the FunnelConfig ones."""
    split_ = fitting.history_split
    if settings.get(CUTOFF):
        fitting.history_split = partial(split_, cutoff=True)
    try:
        yield {k: v for k, v in settings.items() if k != CUTOFF}
    finally:
        fitting.history_split = split_


def without_times(dataset: Dataset) -> Dataset:
    """``dataset`` as a user without play times would give it."""
    return dataset.with_interactions(dataset.interactions.drop(columns=list(LISTEN_COLUMNS)),
                                     dataset.tag_assignments)


Protocol = tuple[Callable[[int], tuple[Dataset, Any]], dict[str, dict[str, Any]], list[tuple[str, str]]]


def protocols() -> dict[str, Protocol]:
    """Per protocol: the (inner training, validation) parts of a seed, the variants, the pairs compared."""

    def temporal(seed: int):
        train, _ = split.temporal(event_log_dataset(seed))
        return split.temporal(train)

    def per_user(seed: int, times: bool):
        data = event_log_dataset(seed)
        train, _ = split.per_user(data if times else without_times(data), seed=seed)
        return split.per_user(train, seed=seed + 100)

    before, labels, defaults = "random labels (before)", "temporal labels", "temporal labels + recent starts (defaults)"
    cutoff = "defaults, history as of cutoff"
    return {
        "temporal": (temporal, {before: {"ranker_labels": "random", **NO_STARTS}, labels: NO_STARTS,
                                defaults: {}, cutoff: {CUTOFF: True}},
                     [(labels, before), (defaults, labels), (defaults, before), (cutoff, defaults)]),
        "per_user, no times": (lambda s: per_user(s, False), {"random labels": {"ranker_labels": "random"},
                                                              "auto": {}}, [("auto", "random labels")]),
        "per_user, with times": (lambda s: per_user(s, True),
                                 {"random labels": {"ranker_labels": "random"},
                                  "temporal labels": {"ranker_labels": "temporal"}},
                                 [("temporal labels", "random labels")]),
    }


def paired(base: list[float], other: list[float]) -> dict[str, float]:
    """Mean paired difference, its standard error and the mean ratio."""
    diff = np.asarray(other) - np.asarray(base)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"mean_difference": float(diff.mean()), "standard_error": se,
            "ratio": float(np.mean(other) / np.mean(base)), "wins": int((diff > 0).sum()), "n": len(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    table = protocols()
    parser.add_argument("--protocols", nargs="+", choices=list(table), default=list(table))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--merge", action="store_true", help="keep other protocols' results in the output file")
    args = parser.parse_args()
    results = json.loads(OUTPUT.read_text()) if args.merge and OUTPUT.exists() else {"protocols": {}}
    for name in args.protocols:
        cut, variants, pairs = table[name]
        scores: dict[str, list[float]] = {v: [] for v in variants}
        for seed in args.seeds:
            inner, validation = cut(seed)
            for label, settings in variants.items():
                started = time.perf_counter()
                with variant(settings) as config:
                    model = Recommender(seed=seed, **config).fit(inner)
                ndcg = evaluate(model, inner, validation, ks=(10,))["ndcg@10"]
                scores[label].append(ndcg)
                print(f"{name} seed {seed} {label}: ndcg@10 {ndcg:.4f} ({time.perf_counter() - started:.0f}s)",
                      flush=True)
        compared = {f"{a} - {b}": paired(scores[b], scores[a]) for a, b in pairs}
        results["protocols"][name] = {"seeds": args.seeds, "variants": variants, "ndcg@10": scores,
                                      "paired": compared}
        for what, p in compared.items():
            print(f"{name}: {what}: {p['mean_difference']:+.4f} ± {p['standard_error']:.4f} "
                  f"({p['ratio']:.3f}x, {p['wins']}/{p['n']} wins)", flush=True)
    results["command"] = "python benchmarks/temporal_labels.py"
    RESULTS.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
