"""Fitting work beside the caller: a forked child process that answers like a function call."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
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
    assert f"working in process {child}" in caplog.text


def test_an_error_in_the_child_is_raised_in_the_caller_with_its_traceback():
    def job():
        raise DataError("interactions.dat line 7: bad weight")

    with beside(job, "a test job") as future:
        with pytest.raises(DataError, match="line 7: bad weight") as raised:
            future.result(timeout=60)
    assert "raised in the child process of a test job" in "".join(raised.value.__notes__)


def test_a_child_that_dies_is_reported_with_its_exit_signal():
    def job():
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would

    with beside(job, "a test job") as future:
        with pytest.raises(FunnelError, match=r"a test job ended in its child process without an answer "
                                              r"\(exit code -9"):
            future.result(timeout=60)


def test_leaving_early_stops_the_child():
    with beside(lambda: time.sleep(60), "a test job"):
        assert [p.name for p in multiprocessing.active_children()] == ["funnel: a test job"]
    assert multiprocessing.active_children() == []


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


def test_on_a_thread_when_asked():
    with beside(lambda: os.getpid(), "a test job", fork=False) as future:
        assert future.result(timeout=60) == os.getpid()
