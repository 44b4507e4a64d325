"""Fitting work beside the caller: a forked child process that answers like a function call."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

from funnel.beside import beside, can_fork
from funnel.errors import DataError, FunnelError

pytestmark = pytest.mark.skipif(not can_fork(), reason="jobs run in a forked child only on Linux")


def test_result_and_log_records_come_back_from_the_child(caplog):
    def job():
        logging.getLogger("funnel").info("working in process %d", os.getpid())
        return os.getpid(), np.arange(3)

    with caplog.at_level(logging.INFO, logger="funnel"):
        with beside(job, "a test job") as future:
            child, values = future.result(timeout=60)
    assert child != os.getpid()
    np.testing.assert_array_equal(values, np.arange(3))
    assert caplog.text.count(f"working in process {child}") == 1


def test_an_error_in_the_child_is_raised_in_the_caller_with_its_traceback():
    def job():
        raise DataError("interactions.dat line 7: bad weight")

    with beside(job, "a test job") as future:
        with pytest.raises(DataError, match="line 7: bad weight") as raised:
            future.result(timeout=60)
    assert "raised in the child process of a test job" in "".join(raised.value.__notes__)


class TwoPartError(Exception):
    def __init__(self, what, where):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{what} at {where}")


def test_an_answer_that_cannot_be_read_is_an_error_not_a_hang():
    def raises():
        raise TwoPartError("bad", "here")

    with beside(raises, "a test job") as future:
        with pytest.raises(FunnelError, match="answer of a test job from its child process could not be read"):
            future.result(timeout=60)
    with beside(lambda: threading.Lock(), "a test job") as future:  # a result that does not pickle
        with pytest.raises(FunnelError, match="a test job failed in its child process"):
            future.result(timeout=60)


def test_a_child_that_dies_is_reported_with_its_exit_signal():
    def job():
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would

    with beside(job, "a test job") as future:
        with pytest.raises(FunnelError, match=r"a test job ended in its child process without an answer "
                                              r"\(exit code -9"):
            future.result(timeout=60)


def test_leaving_early_stops_the_child_even_when_the_parent_ignores_sigterm():
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # as a server with its own handler might
    try:
        started = time.perf_counter()
        with beside(lambda: time.sleep(60), "a test job"):
            assert [p.name for p in multiprocessing.active_children()] == ["funnel: a test job"]
        assert time.perf_counter() - started < 30
        assert multiprocessing.active_children() == []
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_child_searches_on_one_openmp_thread_after_the_parent_used_several():
    # GNU OpenMP keeps the parent's thread pool in its state: a multi-threaded region in a forked
    # child waits for threads that do not exist. The child must search on one thread.
    import faiss

    from funnel.candidates.index import build_index, search

    vectors = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    index = build_index(vectors)
    search(index, vectors[:500], 10)  # FAISS's OpenMP threads start in this (the forking) thread
    threads_before = faiss.omp_get_max_threads()

    def job():
        return faiss.omp_get_max_threads(), search(index, vectors[:500], 10)[0]

    with beside(job, "a test job") as future:
        child_threads, found = future.result(timeout=60)  # a hang fails here instead of stalling
    assert child_threads == 1
    np.testing.assert_array_equal(found, search(index, vectors[:500], 10)[0])
    assert faiss.omp_get_max_threads() == threads_before


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for a multi-threaded parent")
def test_the_child_fits_als_on_one_thread_whatever_the_parent_set():
    import scipy.sparse as sp

    from funnel.factors.als import ALSFactors

    plays = sp.random(300, 200, density=0.05, format="csr", random_state=0)
    ALSFactors(factors=8, iterations=2, n_threads=2).fit(plays)  # implicit's OpenMP threads start here

    def job():
        model = ALSFactors(factors=8, iterations=2, n_threads=2).fit(plays)
        folded = model.user_vectors(np.full(20, -1), plays[:20])  # a fold-in, too
        return [m.num_threads for m in model._implicit], folded.shape

    with beside(job, "a test job") as future:
        assert future.result(timeout=60) == ([1], (20, 8))


def test_on_a_thread_when_asked():
    with beside(lambda: os.getpid(), "a test job", fork=False) as future:
        assert future.result(timeout=60) == os.getpid()


def test_a_refused_fork_runs_the_job_on_a_thread(monkeypatch, caplog):
    import funnel.beside as beside_module

    def refuse(*_):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(beside_module, "_Child", refuse)
    with caplog.at_level(logging.WARNING, logger="funnel"):
        with beside(lambda: os.getpid(), "a test job") as future:
            assert future.result(timeout=60) == os.getpid()
    assert "could not start a process for a test job" in caplog.text
