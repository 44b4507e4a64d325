"""The Last.fm speed targets as ratios against the ALS-only baseline, measured in one run.

1. End to end: ``python main.py --runsvd True --judge True`` (load, fit everything, save,
   write the CSV) against the same job done by the ALS-only baseline (load, fit, recommend
   every user, write the CSV), each in a fresh process, wall-clock.
2. ``recommend_all`` for every user, on the model main.py saved, against the ALS-only
   baseline's batch recommend (best of three each).
3. Single-user ``recommend`` latency after load (p50 and p99 of many calls), beside the
   ALS-only baseline's single-user recommend.
4. In one process: ``fit`` + ``recommend_all`` of the funnel against ALS-only's, alternating
   ``--repeats`` times (medians and the median of the per-pair ratios).
5. In one process: the funnel's ``fit`` with the serving side in the worker process
   (``parallel_fit="process"``, the default) against on a thread (``"thread"``), alternating
   ``--repeats`` times after one fit of each (the worker started): medians and the mean
   paired difference with its standard error; and the peak memory (process and worker,
   ``benchmarks/memory.py``) of one fit in a fresh process in each mode.

    python benchmarks/lastfm_speed.py
    python benchmarks/lastfm_speed.py --calls 500 --data PATH

Writes benchmarks/results/lastfm_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def als_only_job(data: str | None, output: str) -> None:
    """What main.py does, with the ALS-only baseline: load, fit, recommend everyone, write CSV."""
    from funnel import load_lastfm
    from funnel.baselines import ALSRecommender

    dataset = load_lastfm(data)
    model = ALSRecommender().fit(dataset)
    model.recommend_all(n=20).to_csv(output, index=False)


def memory_job(data: str | None, mode: str) -> None:
    """Print the peak memory in MB of loading Last.fm and one fit with ``parallel_fit=mode`` (a fresh process)."""
    from memory import PeakMemory

    from funnel import Recommender, load_lastfm

    with PeakMemory() as memory:
        Recommender(show_progress=False, parallel_fit=mode).fit(load_lastfm(data))
    print(f"{memory.peak_mb:.1f}")


def timed_process(command: list[str]) -> float:
    """Wall-clock seconds of a fresh process; raises if it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def best_of(repeats: int, call) -> float:
    """Fastest of ``repeats`` timed calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def latencies_ms(call, users: np.ndarray) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``call(user)`` over ``users``."""
    times = []
    for user in users:
        started = time.perf_counter()
        call(int(user))
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="hetrec2011-lastfm-2k directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--calls", type=int, default=500, help="single-user calls timed per method")
    parser.add_argument("--repeats", type=int, default=5, help="alternating in-process fit pairs")
    parser.add_argument("--als-only-job", metavar="CSV", help=argparse.SUPPRESS)
    parser.add_argument("--memory-job", choices=["process", "thread"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.als_only_job:
        als_only_job(args.data, args.als_only_job)
        return
    if args.memory_job:
        memory_job(args.data, args.memory_job)
        return

    from funnel import Recommender, load_lastfm
    from funnel.baselines import ALSRecommender

    data_args = ["--data", args.data] if args.data else []
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory() as work:
        funnel_seconds = timed_process([sys.executable, "main.py", "--runsvd", "True", "--judge", "True",
                                        "--progress", "False", "--artifacts", work,
                                        "--output", f"{work}/funnel.csv", *data_args])
        als_seconds = timed_process([sys.executable, __file__, "--als-only-job", f"{work}/als.csv", *data_args])
        out["end_to_end_seconds"] = {"funnel main.py": funnel_seconds, "ALS-only": als_seconds}
        out["end_to_end_ratio"] = funnel_seconds / als_seconds
        print(f"end to end: funnel main.py {funnel_seconds:.1f}s, ALS-only {als_seconds:.1f}s, "
              f"ratio {out['end_to_end_ratio']:.2f} (target <= 3)", flush=True)

        model = Recommender.load(Path(work) / "model")
    dataset = load_lastfm(args.data)
    baseline = ALSRecommender().fit(dataset)
    funnel_batch = best_of(3, lambda: model.recommend_all(n=20))
    als_batch = best_of(3, lambda: baseline.recommend_all(n=20))
    out["batch_seconds"] = {"funnel": funnel_batch, "ALS-only": als_batch}
    out["batch_ratio"] = funnel_batch / als_batch
    print(f"recommend_all ({dataset.n_users} users): funnel {funnel_batch:.2f}s, ALS-only {als_batch:.2f}s, "
          f"ratio {out['batch_ratio']:.2f} (target <= 2)", flush=True)

    users = np.random.default_rng(0).choice(dataset.user_ids, args.calls)
    model.recommend(int(users[0]))  # first call pays one-off start-up
    funnel_p50, funnel_p99 = latencies_ms(lambda user: model.recommend(user, n=20), users)
    als_p50, als_p99 = latencies_ms(lambda user: baseline.recommend_all(n=20, users=[user]), users)
    out["single_user_ms"] = {"funnel": {"p50": funnel_p50, "p99": funnel_p99},
                             "ALS-only": {"p50": als_p50, "p99": als_p99}}
    print(f"single user ({args.calls} calls): funnel p50 {funnel_p50:.1f} ms, p99 {funnel_p99:.1f} ms "
          f"(target p99 < 10); ALS-only p50 {als_p50:.1f} ms, p99 {als_p99:.1f} ms")

    funnel_fit, als_fit = [], []
    for _ in range(args.repeats):
        for times, make in ((funnel_fit, lambda: Recommender(show_progress=False)),
                            (als_fit, ALSRecommender)):
            started = time.perf_counter()
            make().fit(dataset).recommend_all(n=20)
            times.append(time.perf_counter() - started)
    ratios = [f / a for f, a in zip(funnel_fit, als_fit)]
    out["in_process_fit_and_recommend_all_seconds"] = {"funnel": funnel_fit, "ALS-only": als_fit}
    out["in_process_ratio"] = float(np.median(ratios))
    print(f"in process, fit + recommend_all ({args.repeats} alternating pairs): funnel median "
          f"{np.median(funnel_fit):.2f}s, ALS-only {np.median(als_fit):.2f}s, median ratio "
          f"{out['in_process_ratio']:.2f} (target <= 3)")
    Recommender(show_progress=False, parallel_fit="process").fit(dataset)
    Recommender(show_progress=False, parallel_fit="thread").fit(dataset)
    fits: dict[str, list[float]] = {"process": [], "thread": []}
    for _ in range(args.repeats):
        for mode, times in fits.items():
            started = time.perf_counter()
            Recommender(show_progress=False, parallel_fit=mode).fit(dataset)
            times.append(time.perf_counter() - started)
    gained = np.subtract(fits["thread"], fits["process"])
    out["fit_seconds_by_parallel_fit"] = fits
    out["thread_minus_process_seconds"] = {"mean": float(gained.mean()),
                                           "se": float(gained.std(ddof=1) / np.sqrt(len(gained)))}
    print(f"fit alone ({args.repeats} alternating pairs): serving side in the worker process median "
          f"{np.median(fits['process']):.2f}s, on a thread {np.median(fits['thread']):.2f}s, paired difference "
          f"{gained.mean():.2f} +- {out['thread_minus_process_seconds']['se']:.2f}s")
    peaks = {}
    for mode in fits:
        job = subprocess.run([sys.executable, __file__, "--memory-job", mode, *data_args], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        peaks[mode] = float(job.stdout.split()[-1])
    out["fit_peak_memory_mb"] = peaks
    print(f"peak memory of a fit in a fresh process: worker process {peaks['process']:.0f} MB (with the worker), "
          f"thread {peaks['thread']:.0f} MB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lastfm_speed.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
