"""What bursts of costly requests do to the HTTP service: its memory, its idle CPU, its threads, /health.

Two kinds of burst, each sent to a server started for it (``python main.py serve
--time-budget 1`` on 127.0.0.1, one worker) on a Last.fm model with string ids:

* long ids: one request with an artist id of 30,000 (then 100,000) characters, in the path
  of ``GET /artists/{id}/similar``, in ``exclude`` of ``POST /recommend/history``, and among a
  history's artists;
* time-budgeted work: four ~1 MiB ``POST /recommend/batch`` requests of the longest histories
  the service accepts, at most two in flight, each 503 sent again after its ``Retry-After``
  (up to ``--retries`` times); then ``--parallel`` concurrent ``POST /recommend/history``
  requests of the longest accepted history each, 503s sent again alike: clients that honour
  ``Retry-After``.

A thread samples the server's resident set size (RSS, its child processes included), CPU
time and thread count every 50 ms. For each phase: the RSS when ready and at its peak, the
RSS and the CPU seconds the server used in the ``--idle`` seconds after the phase's last
answer (no request open then), the latency of ``/health`` probes sent during the phase, the
thread count after, and the status of every answer. Any status is a result: an answer the
service refuses quickly (422, 503) is what a bounded service should give.

    python benchmarks/serve_burst.py                   # trains the model in a temporary folder
    python benchmarks/serve_burst.py --model DIR       # a saved model with string artist ids
    python benchmarks/serve_burst.py --phases batch parallel --output /tmp/burst.json

The served code is that of the ``funnel`` package this script imports (its ``main.py``),
so ``PYTHONPATH=/path/to/checkout`` measures another checkout. Writes
``benchmarks/results/serve_burst.json``. The server is killed if its RSS passes
``--max-rss-mb``, which the results then say.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from memory import descendants
from serve_load import cpu_seconds, free_port

import funnel
from funnel import Dataset, FunnelConfig, Recommender, load_lastfm

RESULTS = Path(__file__).resolve().parent / "results"
SERVED_ROOT = Path(funnel.__file__).resolve().parents[1]  # the checkout whose main.py is served
BODY_LIMIT = 1 << 20  # the service's documented request body limit
LONG_IDS = (30_000, 100_000)
PHASES = ("long_ids", "batch", "parallel")


# the model --------------------------------------------------------------------------------


def with_string_ids(dataset: Dataset) -> Dataset:
    """``dataset`` with users ``u<id>`` and artists ``a<id>``: a model whose ids are strings."""
    user, artist = "u{}".format, "a{}".format

    def renamed(frame, **columns):
        return frame.assign(**{column: frame[column].map(to) for column, to in columns.items()})

    return Dataset.from_frames(renamed(dataset.interactions, user_id=user, artist_id=artist),
                               renamed(dataset.artists, artist_id=artist), dataset.tags,
                               renamed(dataset.tag_assignments, user_id=user, artist_id=artist),
                               renamed(dataset.friends, user_id=user, friend_id=user))


def train(data: str | None, directory: Path) -> Path:
    """Fit the funnel on Last.fm with string ids and save it to ``directory``/model."""
    started = time.perf_counter()
    model = Recommender(FunnelConfig(seed=0)).fit(with_string_ids(load_lastfm(data)))
    path = model.save(directory / "model")
    print(f"trained and saved a string-id Last.fm model in {time.perf_counter() - started:.0f} s", flush=True)
    return Path(path)


# the server and what it uses ----------------------------------------------------------------


def proc_status(pid: int) -> tuple[float, int]:
    """RSS (MB) and thread count of a process (Linux ``/proc``)."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


class Sampler:
    """RSS (MB), CPU seconds and threads of a process and its descendants, every ``interval`` seconds.

    Kills the process when its RSS passes ``limit_mb``: the machine is shared.
    """

    def __init__(self, pid: int, interval: float = 0.05, limit_mb: float = float("inf")) -> None:
        self.pid, self.interval, self.limit_mb = pid, interval, limit_mb
        self.samples: list[tuple[float, float, float, int]] = []  # monotonic time, RSS, CPU, threads
        self.killed_at_mb: float | None = None
        self._done = threading.Event()
        self._pids = [pid]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[float, float, float, int] | None:
        """One sample: (time, RSS MB, CPU s, threads) summed over the processes; None once it has ended."""
        rss, cpu, threads = 0.0, 0.0, 0
        for pid in self._pids:
            try:
                r, t = proc_status(pid)
                rss, cpu, threads = rss + r, cpu + cpu_seconds(pid), threads + t
            except (OSError, IndexError, ValueError):
                if pid == self.pid:
                    return None  # the server ended
        return time.monotonic(), rss, cpu, threads

    def _run(self) -> None:
        count = 0
        while not self._done.is_set():
            if count % 20 == 0:  # children come and go rarely; scanning /proc every 50 ms would cost a core share
                self._pids = [self.pid, *descendants(self.pid)]
            count += 1
            sample = self.read()
            if sample is None:
                return
            self.samples.append(sample)
            if sample[1] > self.limit_mb and self.killed_at_mb is None:
                self.killed_at_mb = sample[1]
                os.kill(self.pid, signal.SIGKILL)
            self._done.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def peak(self, since: float) -> tuple[float, int]:
        """Largest RSS (MB) and thread count sampled since ``since``."""
        window = [s for s in self.samples if s[0] >= since] or self.samples[-1:]
        return max(s[1] for s in window), max(s[3] for s in window)


class Server:
    """``main.py serve`` of the served checkout on a free port, its stderr in a log file."""

    def __init__(self, model_dir: Path, time_budget: float, log: Path, limit_mb: float,
                 flags: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVED_ROOT / "main.py"), "serve", "--artifacts", str(model_dir),
                 "--port", str(self.port), "--time-budget", str(time_budget), *flags],
                cwd=SERVED_ROOT, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                if request(self.base, "GET", "/health", timeout=5)[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not answer /health within 180 s: {self.log_tail()}")
            time.sleep(0.3)
        self.health = json.loads(request(self.base, "GET", "/health", timeout=10)[2])
        self.sampler = Sampler(self.process.pid, limit_mb=limit_mb).start()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if hasattr(self, "sampler"):
            self.sampler.stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# requests ---------------------------------------------------------------------------------


def request(base: str, method: str, path: str, body: bytes | None = None,
            timeout: float = 600) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers, body (``http.client``: no client-side URL limit)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def send(base: str, method: str, path: str, body: bytes | None = None, retries: int = 0) -> dict:
    """One request, sent again after ``Retry-After`` on each 503 (up to ``retries`` times); any answer is a result."""
    record: dict = {"method": method, "path": path if len(path) <= 80 else f"{path[:60]}... ({len(path):,} chars)",
                    "body_bytes": len(body or b""), "attempts": []}
    started = time.perf_counter()
    for attempt in range(retries + 1):
        sent = time.perf_counter()
        headers: dict[str, str] = {}
        try:
            status, headers, payload = request(base, method, path, body)
            outcome: int | str = status
            detail = payload[:300].decode(errors="replace") if status != 200 else ""
        except (OSError, http.client.HTTPException) as exc:
            outcome, detail = f"no answer ({type(exc).__name__})", str(exc)[:300]
        record["attempts"].append({"status": outcome, "seconds": round(time.perf_counter() - sent, 3),
                                   **({"detail": detail} if detail else {})})
        if outcome != 503 or attempt == retries:
            break
        try:
            time.sleep(float(headers.get("Retry-After", "1")))
        except ValueError:
            time.sleep(1.0)
    record["status"] = record["attempts"][-1]["status"]
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


class HealthProbe:
    """``GET /health`` every ``every`` seconds on a thread until stopped (one probe at least), timing each."""

    def __init__(self, base: str, every: float = 0.2, first_after: float = 0.1) -> None:
        self.base, self.every, self.first_after = base, every, first_after
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._done.wait(self.first_after)
        while True:
            started = time.perf_counter()
            try:
                status = request(self.base, "GET", "/health", timeout=120)[0]
                if status == 200:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.failures.append(str(status))
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(type(exc).__name__)
            if self._done.wait(self.every):
                return

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> dict:
        millis = np.array(self.latencies) * 1000
        return {"probes": len(self.latencies) + len(self.failures), "failures": self.failures,
                **({"p50_ms": round(float(np.median(millis)), 1), "max_ms": round(float(millis.max()), 1)}
                   if len(millis) else {})}


def in_parallel(jobs: list[Callable[[], dict]], at_most: int) -> list[dict]:
    """Run ``jobs`` on ``at_most`` threads, released together; results in the order of ``jobs``."""
    results: list[dict | None] = [None] * len(jobs)
    start = threading.Barrier(min(at_most, len(jobs)))
    lanes = [list(range(i, len(jobs), at_most)) for i in range(min(at_most, len(jobs)))]

    def lane(indices: list[int]) -> None:
        start.wait()
        for i in indices:
            results[i] = jobs[i]()

    threads = [threading.Thread(target=lane, args=(indices,)) for indices in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def as_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# phases -----------------------------------------------------------------------------------


def long_id_phases(artists: list[str], rng: random.Random) -> list[tuple[str, str, Callable[[str], list[dict]]]]:
    """Item 9: one request per place a long id can go, 30,000 then 100,000 characters."""
    known = rng.sample(artists, 20)
    phases = []
    for length in LONG_IDS:
        long_id = "z" * length  # past every catalogue id, so unknown; one byte a character in UTF-8 and JSON
        phases += [
            (f"similar_path_{length // 1000}k", f"GET /artists/{{{length:,}-char id}}/similar",
             lambda base, i=long_id: [send(base, "GET", f"/artists/{quote(i, safe='')}/similar?n=10")]),
            (f"exclude_{length // 1000}k", f"POST /recommend/history, a {length:,}-char id in exclude",
             lambda base, i=long_id: [send(base, "POST", "/recommend/history",
                                           as_json({"artists": known, "exclude": [i], "n": 10}))]),
            (f"history_{length // 1000}k", f"POST /recommend/history, a {length:,}-char id among 21 artists",
             lambda base, i=long_id: [send(base, "POST", "/recommend/history",
                                           as_json({"artists": [*known, i], "n": 10}))]),
        ]
    return phases


def batch_bodies(artists: list[str], history: int, max_batch: int, count: int, rng: random.Random) -> list[bytes]:
    """``count`` batch bodies, each of as many ``history``-artist histories as fit under the body limit."""
    bodies = []
    for _ in range(count):
        histories: list[dict] = []
        while len(histories) < max_batch:
            item = {"id": len(histories), "artists": rng.sample(artists, history)}
            if len(as_json({"histories": [*histories, item], "n": 10})) > BODY_LIMIT - 1024:
                break
            histories.append(item)
        bodies.append(as_json({"histories": histories, "n": 10}))
    return bodies


def settle(sampler: Sampler, last_answer: tuple, started: float, limit: float) -> dict:
    """Watch until the server uses under 5% of a core over a second, or ``limit`` s after the last answer."""
    previous = sampler.read()
    while previous is not None:
        time.sleep(1.0)
        now = sampler.read()
        if now is None:
            break
        idle = (now[2] - previous[2]) / (now[0] - previous[0]) < 0.05
        if idle or now[0] - last_answer[0] > limit:
            peak_rss, peak_threads = sampler.peak(started)
            return {"idle": idle, "seconds_after_last_answer": round(now[0] - last_answer[0], 1),
                    "cpu_seconds_after_last_answer": round(now[2] - last_answer[2], 2), "rss_mb": round(now[1], 1),
                    "peak_rss_mb": round(peak_rss, 1), "threads": now[3]}
        previous = now
    return {"idle": None, "server": "ended"}


def run_phase(name: str, what: str, requests: Callable[[str], list[dict]], model_dir: Path, args: argparse.Namespace,
              log: Path) -> dict:
    """Start a server, send the phase's requests with /health probes beside them, watch it, stop it.

    Watched ``--idle`` s after the last answer, then on until it is idle (at most ``--settle`` s).
    """
    server = Server(model_dir, args.time_budget, log, args.max_rss_mb, shlex.split(args.server_flags))
    try:
        time.sleep(1.0)  # a few samples of the server at rest
        ready = server.sampler.read()
        assert ready is not None
        started = time.monotonic()
        with HealthProbe(server.base) as probe:
            answers = requests(server.base)
        last_answer = server.sampler.read()
        time.sleep(args.idle)
        after = server.sampler.read()
        peak_rss, peak_threads = server.sampler.peak(started)
        settled = settle(server.sampler, last_answer, started, args.settle) if after and last_answer else {}
        alive = server.alive()
    finally:
        server.stop()
    statuses = Counter(str(a["status"]) for a in answers)
    attempts = Counter(str(t["status"]) for a in answers for t in a["attempts"])
    result = {
        "phase": name, "what": what, "requests": len(answers), "statuses": dict(statuses),
        "statuses_of_every_attempt": dict(attempts),
        "seconds_to_last_answer": round(last_answer[0] - started, 2) if last_answer else None,
        "rss_ready_mb": round(ready[1], 1), "peak_rss_mb": round(peak_rss, 1),
        "rss_after_mb": round(after[1], 1) if after else None,
        "cpu_seconds_during": round(last_answer[2] - ready[2], 2) if last_answer else None,
        "cpu_seconds_after": round(after[2] - last_answer[2], 2) if after and last_answer else None,
        "idle_seconds": args.idle,
        "threads_ready": ready[3], "peak_threads": peak_threads, "threads_after": after[3] if after else None,
        "health": probe.summary(), "until_idle": settled, "server_alive_after": alive,
        **({"killed_at_rss_mb": round(server.sampler.killed_at_mb, 1)} if server.sampler.killed_at_mb else {}),
        **({"server_log_tail": server.log_tail(1500)} if not alive else {}),
        "answers": answers,
    }
    print(row(result), flush=True)
    return result


HEADER = (f"{'phase':<22}{'statuses':<28}{'ready MB':>9}{'peak MB':>9}{'after MB':>9}{'CPU s after':>12}"
          f"{'health max ms':>14}{'threads':>9}")


def row(r: dict) -> str:
    statuses = " ".join(f"{s}x{n}" for s, n in sorted(r["statuses"].items()))
    health = r["health"].get("max_ms", "-")
    after = "killed" if "killed_at_rss_mb" in r else r["rss_after_mb"]
    return (f"{r['phase']:<22}{statuses:<28}{r['rss_ready_mb']:>9}{r['peak_rss_mb']:>9}{after!s:>9}"
            f"{r['cpu_seconds_after']!s:>12}{health!s:>14}{r['threads_after']!s:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved model with string artist ids (default: train one on Last.fm in a temp folder)")
    parser.add_argument("--data", default=None,
                        help="hetrec2011-lastfm-2k directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--time-budget", type=float, default=1.0, dest="time_budget",
                        help="the server's --time-budget, seconds (default: 1)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds watched after a phase's last answer (default: 5)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="then watch until the server is idle, at most this many seconds (default: 60)")
    parser.add_argument("--batches", type=int, default=4, help="batch requests (default: 4)")
    parser.add_argument("--in-flight", type=int, default=2, dest="in_flight",
                        help="batch requests in flight at most (default: 2)")
    parser.add_argument("--retries", type=int, default=3,
                        help="times a request's 503 is sent again, in the batch and parallel phases (default: 3)")
    parser.add_argument("--parallel", type=int, default=50, help="concurrent history requests (default: 50)")
    parser.add_argument("--max-rss-mb", type=float, default=16_000, dest="max_rss_mb",
                        help="kill the server past this RSS (default: 16000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-flags", default="", dest="server_flags",
                        help="more flags of main.py serve, e.g. '--max-cost 1000000' (default: none)")
    parser.add_argument("--output", type=Path, default=RESULTS / "serve_burst.json")
    args = parser.parse_args()
    if not (args.time_budget > 0 and args.idle >= 0 and args.batches >= 1 and args.in_flight >= 1
            and args.retries >= 0 and args.parallel >= 1 and args.settle >= 0):
        raise SystemExit("need --time-budget > 0, --idle >= 0, --batches, --in-flight and --parallel >= 1, "
                         "--retries and --settle >= 0")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="serve_burst_") as scratch:
        model_dir = args.model or train(args.data, Path(scratch))
        if not (model_dir / "manifest.json").is_file() and (model_dir / "model" / "manifest.json").is_file():
            model_dir = model_dir / "model"  # a main.py --artifacts directory
        model = Recommender.load(model_dir, mmap=True)
        if model.artist_ids_.dtype.kind not in "UO":
            raise SystemExit(f"the model in {model_dir} has integer artist ids; the long-id phases need string ids")
        artists = model.artist_ids_.tolist()
        del model
        log = Path(scratch) / "server.log"
        plan: list[tuple[str, str, Callable[[str], list[dict]]]] = []
        if "long_ids" in args.phases:
            plan += long_id_phases(artists, rng)
        limits = Server(model_dir, args.time_budget, log, args.max_rss_mb, shlex.split(args.server_flags))
        history = min(limits.health.get("max_history", 5_000), len(artists))
        max_batch = limits.health.get("max_batch", 100)
        limits.stop()
        if "batch" in args.phases:
            bodies = batch_bodies(artists, history, max_batch, args.batches, rng)
            sizes = sorted({len(json.loads(b)["histories"]) for b in bodies})
            plan.append(("batch", f"{args.batches} POST /recommend/batch of {sizes} {history:,}-artist histories "
                                  f"(~{len(bodies[0]) / 2**20:.2f} MiB), {args.in_flight} in flight, 503 sent again "
                                  f"after Retry-After up to {args.retries} times",
                         lambda base: in_parallel([lambda b=b: send(base, "POST", "/recommend/batch", b, args.retries)
                                                   for b in bodies], args.in_flight)))
        if "parallel" in args.phases:
            singles = [as_json({"artists": rng.sample(artists, history), "n": 10}) for _ in range(args.parallel)]
            plan.append(("parallel", f"{args.parallel} concurrent POST /recommend/history of {history:,} artists, "
                                     f"503 sent again after Retry-After up to {args.retries} times",
                         lambda base: in_parallel([lambda b=b: send(base, "POST", "/recommend/history", b,
                                                                    args.retries)
                                                   for b in singles], args.parallel)))
        print(HEADER, flush=True)
        phases = [run_phase(name, what, requests, model_dir, args, log) for name, what, requests in plan]
    try:
        commit = subprocess.run(["git", "-C", str(SERVED_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(SERVED_ROOT), "status", "--porcelain", "--", "funnel", "main.py"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", False
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": " ".join(["python", "benchmarks/serve_burst.py", *sys.argv[1:]]),
        "served_code": {"checkout": str(SERVED_ROOT), "commit": commit, "uncommitted_changes": dirty},
        "model": "trained by this run: Last.fm with ids u<id> and a<id>" if args.model is None else str(args.model),
        "server": f"main.py serve --time-budget {args.time_budget:g} {args.server_flags}".rstrip()
                  + ", one worker, a fresh server per phase",
        "limits": {"max_history": history, "max_batch": max_batch, "body_bytes": BODY_LIMIT},
        "notes": ["RSS: resident set size of the server and its child processes, sampled every 50 ms",
                  f"cpu_seconds_after: CPU the server used in the {args.idle:g} s after the phase's last answer, "
                  "with no request open",
                  "health: GET /health probes sent every 0.2 s while the phase's requests were open"],
        "phases": phases,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
