"""Peak memory of a benchmark step, child processes included (Linux: /proc)."""

from __future__ import annotations

import os
import threading


def pss_bytes(pid: int | str) -> int:
    """Proportional set size of a process (its private pages plus its share of shared ones)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    """Ids of the live child processes of ``pid``, theirs, and so on.

    Spark's JVM and Python workers, for example, run as children of the command.
    """
    parent_of = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parent_of[int(entry.name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # it ended while we looked
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parent_of.items() if parent in frontier]
        found += frontier
    return found


class PeakMemory:
    """Peak memory of a process and its descendants: ``peak_mb``, and ``mb`` above the entry.

    Sampled every ``interval`` seconds as the summed proportional set size, so that pages a
    forked child shares with its parent count once. Unlike tracemalloc it sees memory held
    by native code (FAISS, implicit) and by child processes, and it does not slow Python
    down. ``pid``: the process to watch (default: this one), e.g. a command started with
    ``subprocess.Popen``. Linux only.
    """

    def __init__(self, interval: float = 0.05, pid: int | None = None) -> None:
        self.interval = interval
        self.pid = pid

    def _total(self) -> int:
        root = os.getpid() if self.pid is None else self.pid
        total = 0
        for process in [root, *descendants(root)]:
            try:
                total += pss_bytes(process)
            except OSError:
                pass  # it ended between the two reads
        return total

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self._peak = max(self._peak, self._total())

    def __enter__(self) -> PeakMemory:
        self._start = self._peak = self._total()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self._peak = max(self._peak, self._total())
        self.mb = (self._peak - self._start) / 2**20
        self.peak_mb = self._peak / 2**20
